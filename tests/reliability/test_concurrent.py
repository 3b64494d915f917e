"""Two pipeline runs on the same tables: one runs, the other stops at once with a clear error, and the tables end
as after one run. A lock left by a killed run is taken over."""

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
from customer_value.pipeline import LOCK_FILE, PipelineLocked, Run, run_lock
from customer_value.synthetic.generate import generate
from customer_value.tables import Tables
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
