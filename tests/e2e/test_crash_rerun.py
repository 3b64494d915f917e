"""A real crash: the ingest process is killed mid-write; the rerun must end exactly like an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from deltalake import DeltaTable

from customer_value.cleaning.run import clean_all
from customer_value.config import load_config
from customer_value.ingest.run import ingest
from customer_value.landing import SOURCES
from customer_value.synthetic.generate import generate
from customer_value.tables import Tables
from tests.conftest import ROOT
from tests.e2e.conftest import shop_config
from tests.e2e.test_ingest_clean import SILVER, _canonical

pytestmark = pytest.mark.slow
PATH_DEPENDENT = ("_source_file", "_batch_id", "_ingested_at", "file", "run_id", "modified_ns")


def _tables(cfg) -> dict[str, pd.DataFrame]:
    names = [f"{layer}.{s}" for layer in ("bronze", "quarantine") for s in SOURCES] + list(SILVER.values()) + [
        "quarantine.rejects", "quarantine.files", "ops.data_quality", "ops.ingest_log", "ops.ingested_files"]
    return {n: _canonical(DeltaTable(Tables(cfg.storage).location(n)).to_pandas(), PATH_DEPENDENT) for n in names}


def test_killed_ingest_reruns_to_the_same_tables_as_a_clean_run(spark, tmp_path):
    crashed = shop_config(tmp_path / "crashed", 1200)
    reference = shop_config(tmp_path / "reference", 1200)
    generate(spark, crashed)
    generate(spark, reference)

    first_commit = Path(Tables(crashed.storage).location("bronze.orders")) / "_delta_log" / "00000000000000000000.json"
    proc = subprocess.Popen(
        [sys.executable, "jobs/ingest.py", "--conf", "conf/local.yaml", "--set", f"storage.root={crashed.storage.root}"],
        cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 180
    while not first_commit.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, f"ingest ended before it could be killed: {proc.stderr.read()[-2000:]}"
    os.killpg(proc.pid, signal.SIGKILL)  # the driver, its JVM and its Python workers
    proc.wait()

    tables = Tables(crashed.storage)
    assert tables.exists(spark, "bronze.users") and tables.exists(spark, "bronze.orders")
    assert not tables.exists(spark, "ops.ingested_files"), "the batch must not look committed"

    ingest(spark, crashed)
    clean_all(spark, crashed)
    ingest(spark, reference)
    clean_all(spark, reference)
    got, want = _tables(crashed), _tables(reference)
    for name in want:
        pd.testing.assert_frame_equal(got[name], want[name], obj=name)
    assert len(got["bronze.orders"]) > 0


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
