"""Two pipeline runs on the same tables: one runs, the other stops at once with a clear error, and the tables end
as after one run. A lock left by a killed run is taken over. Where no lock can be taken (an object store, or a job
that is not the pipeline), two writers of one table meet in Delta's optimistic concurrency: a commit that lost to
another writer's is retried against the new state, or reported naming the table, and the table is never
corrupt. The other writer here is a real one, delta-rs, committing while Spark's transaction is in flight."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from customer_value.ingest.files import list_landing
from customer_value.landing import SOURCES, landing_uri
from customer_value.cleaning.run import replace_keys
from customer_value.config import StorageConfig
from customer_value.pipeline import LOCK_FILE, PipelineLocked, Run, run_lock
from customer_value.synthetic.generate import generate
from customer_value.tables import Tables, WriteConflict
from tests.conftest import ROOT
from tests.e2e.conftest import shop_config


def _lock_path(cfg) -> Path:
    return Path(cfg.storage.root).resolve() / "ops" / LOCK_FILE


def test_a_live_holder_refuses_a_second_run_and_a_dead_ones_lock_is_taken_over(cfg):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        path = _lock_path(cfg)
        path.parent.mkdir(parents=True)
        import socket

        path.write_text(json.dumps({"pid": sleeper.pid, "host": socket.gethostname(), "run_id": "p-other"}))
        with pytest.raises(PipelineLocked, match="p-other"):
            with run_lock(cfg, Run(snapshot=None)):
                pass
        sleeper.kill()
        sleeper.wait()
        with run_lock(cfg, Run(snapshot=None, run_id="p-mine")):      # the holder is gone: taken over
            assert json.loads(path.read_text())["run_id"] == "p-mine"
        assert not path.exists(), "released at the end"
    finally:
        sleeper.kill()


@pytest.mark.slow
def test_two_runs_started_at_once_one_runs_and_the_tables_are_consistent(spark, tmp_path):
    cfg = shop_config(tmp_path / "store", 600)
    generate(spark, cfg)
    cmd = [sys.executable, "-m", "customer_value.cli", "pipeline", "--conf", "conf/local.yaml", "--only", "ingest",
           "--set", f"storage.root={cfg.storage.root}", "--set", "pseudonymisation.demo_mode=true"]
    env = dict(os.environ)
    env.pop("MLFLOW_TRACKING_URI", None)
    procs = [subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 1], outs
    loser = outs[[p.returncode for p in procs].index(1)]
    assert "another pipeline run holds" in loser and "Traceback" not in loser, loser

    tables = Tables(cfg.storage)
    files = list_landing(landing_uri(cfg), list(SOURCES))
    ingested = tables.read(spark, "ops.ingested_files")
    assert ingested.count() == ingested.select("file").distinct().count() == len(files), "each file once"
    assert ingested.select("_batch_id").distinct().count() == 1, "one batch: the run that won"
    log = tables.read(spark, "ops.ingest_log")
    for source in SOURCES:
        logged = log.where(F.col("source") == source).agg(F.sum("rows_bronze")).collect()[0][0]
        assert tables.read(spark, f"bronze.{source}").count() == logged > 0, source
    assert not _lock_path(cfg).exists()
    # the loser's rerun: nothing new to do, the tables stay as they are
    again = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr
    assert tables.read(spark, "ops.ingested_files").count() == len(files)


# --- Delta's concurrent-write conflicts ------------------------------------------------------------------------

TABLE = "gold.segment_summary"          # any registered table partitioned by snapshot_date
SCHEMA = "snapshot_date date, segment string, customers bigint"
A, B = "2025-10-01", "2025-11-01"


def _rows(day: str, *segments: str, customers: int = 1):
    from datetime import date

    return [(date.fromisoformat(day), s, customers) for s in segments]


def _interloper(spark, path: str, flag: Path, rows: list):
    """A DataFrame of `rows` that, the first time Spark computes it (inside the write's transaction, after its
    snapshot was read), has delta-rs append `rows` of its own to the same table: a second writer's commit that
    lands between Spark's read and Spark's commit. Computed again (a retry), it only yields its rows."""
    import pandas as pd

    def compute(batches):
        for pdf in batches:
            try:
                os.close(os.open(flag, os.O_CREAT | os.O_EXCL))       # the first computation only
            except FileExistsError:
                pass
            else:
                import pyarrow as pa
                from deltalake import write_deltalake

                other = pa.table({"snapshot_date": pa.array([r[0] for r in rows], pa.date32()),
                                  "segment": [f"other-{r[1]}" for r in rows], "customers": [99] * len(rows)})
                write_deltalake(path, other, mode="append", partition_by=["snapshot_date"])
            yield pdf

    return spark.createDataFrame(pd.DataFrame(rows, columns=["snapshot_date", "segment", "customers"]), SCHEMA) \
        .coalesce(1).mapInPandas(compute, SCHEMA)


def _store(spark, tmp_path, retries: int) -> Tables:
    tables = Tables(StorageConfig(root=str(tmp_path / "store"), conflict_retries=retries))
    tables.write(spark.createDataFrame(_rows(A, "a1", "a2") + _rows(B, "b1"), SCHEMA), TABLE)
    return tables


def _content(spark, tables) -> list[tuple]:
    from deltalake import DeltaTable

    spark_rows = sorted(tuple(r) for r in tables.read(spark, TABLE).select("snapshot_date", "segment", "customers").collect())
    rs = DeltaTable(tables.location(TABLE)).to_pandas()
    rs_rows = sorted((d, s, int(c)) for d, s, c in zip(rs["snapshot_date"], rs["segment"], rs["customers"]))
    assert [(str(d), s, c) for d, s, c in spark_rows] == [(str(d), s, c) for d, s, c in rs_rows], \
        "Spark and delta-rs read the same table"
    return [(str(d), s, c) for d, s, c in spark_rows]


def test_a_slice_overwrite_that_loses_to_a_concurrent_commit_is_retried(spark, tmp_path, capfd):
    tables = _store(spark, tmp_path, retries=3)
    mine = _interloper(spark, tables.location(TABLE), tmp_path / "once", _rows(A, "new1", "new2", customers=5))
    tables.write(mine, TABLE, replace_where=f"snapshot_date = '{A}'")

    assert "concurrent commit conflicted (ConcurrentAppendException); retrying" in capfd.readouterr().err
    # the slice is this write's, whole (the other writer's rows in it replaced, as a replaceWhere does when it
    # commits last); the other slice untouched
    assert _content(spark, tables) == [(A, "new1", 5), (A, "new2", 5), (B, "b1", 1)]
    ops = [r["operation"] for r in tables.delta_table(spark, TABLE).history().orderBy("version").collect()]
    assert len(ops) == 3 and ops[0] == ops[2] == "WRITE", ops           # ours, delta-rs's append, ours again


def test_a_merge_that_loses_to_a_concurrent_commit_is_retried_against_the_new_state(spark, tmp_path, capfd):
    tables = _store(spark, tmp_path, retries=2)
    rows = _interloper(spark, tables.location(TABLE), tmp_path / "once", _rows(A, "a1", customers=7))
    keys = spark.createDataFrame([("a1",), ("other-a1",)], "segment string")
    replace_keys(spark, tables, TABLE, rows, keys, "segment")           # clean's incremental MERGE

    assert "retrying" in capfd.readouterr().err
    # the retry saw delta-rs's row, whose key it replaces too
    assert _content(spark, tables) == [(A, "a1", 7), (A, "a2", 1), (B, "b1", 1)]


def test_out_of_retries_the_conflict_is_reported_and_the_table_stays_whole(spark, tmp_path):
    tables = _store(spark, tmp_path, retries=0)
    mine = _interloper(spark, tables.location(TABLE), tmp_path / "once", _rows(A, "new1", customers=5))
    with pytest.raises(WriteConflict, match=f"{TABLE}: the commit lost to concurrent writers 1 times") as err:
        tables.write(mine, TABLE, replace_where=f"snapshot_date = '{A}'")
    assert "storage.conflict_retries" in str(err.value)
    # nothing of the refused commit; the other writer's commit whole
    assert _content(spark, tables) == [(A, "a1", 1), (A, "a2", 1), (A, "other-new1", 99), (B, "b1", 1)]
