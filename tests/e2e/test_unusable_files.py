"""Files that cannot be read as rows are quarantined whole, and ingest reads only files it has not ingested. (A
killed ingest and its rerun: the kill harness, tests/reliability/test_kill_rerun.py.)"""

from __future__ import annotations

import pytest

from customer_value.config import load_config
from customer_value.ingest.run import ingest
from customer_value.tables import Tables
from tests.conftest import ROOT

pytestmark = pytest.mark.slow


def test_unusable_files_are_quarantined_whole_and_ingest_is_incremental(spark, tmp_path):
    cfg = load_config(ROOT / "conf" / "local.yaml", [f"storage.root={tmp_path}"])
    users = tmp_path / "landing" / "users"
    users.mkdir(parents=True)
    header = "user_id,name,email,phone,birth_date,gender,city,signup_date,acquisition_channel\n"
    (users / "a.csv").write_text(header + "u1,A,a@x.org,1,1990-01-01,f,Wien,2024-01-01,email\n"
                                 "u2,B,b@x.org,2,1991-01-01,m,Graz,2024-02-01,social\n")
    (users / "empty.csv").write_text("")
    (users / "binary.csv").write_bytes(b"\x00\x01\x02PK\x03\x04" * 50)
    (users / "no_id.csv").write_text("name,email,signup_date\nC,c@x.org,2024-01-01\n")
    (users / "_partial.csv").write_text(header)  # an upload in progress: not yet a landing file
    first = ingest(spark, cfg)
    tables = Tables(cfg.storage)
    rejected = {r._source_file.rsplit("/", 1)[1]: r._reason for r in tables.read(spark, "quarantine.files").collect()}
    assert rejected == {"empty.csv": "empty_file", "binary.csv": "binary_file", "no_id.csv": "missing_required_column:user_id"}
    assert sorted(r.user_id for r in tables.read(spark, "bronze.users").collect()) == ["u1", "u2"]
    log = {r.file.rsplit("/", 1)[1]: r.status for r in tables.read(spark, "ops.ingest_log").collect()}
    assert log == {"a.csv": "ingested", "empty.csv": "quarantined", "binary.csv": "quarantined", "no_id.csv": "quarantined"}

    (users / "b.csv").write_text(header + "u3,C,c@x.org,3,1992-01-01,d,Linz,2024-03-01,organic\n")
    second = ingest(spark, cfg)
    assert second.files == 1 and second.batch_id != first.batch_id
    assert sorted(r.user_id for r in tables.read(spark, "bronze.users").collect()) == ["u1", "u2", "u3"]
    assert ingest(spark, cfg).batch_id is None
