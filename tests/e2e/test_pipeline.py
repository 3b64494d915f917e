"""The product's own stages through the pipeline runner on a small generated shop: the first run runs each stage,
a second run skips every one, and a changed input reruns exactly the stages it reaches."""

from __future__ import annotations

import io
import os

import pytest
from pyspark.sql import functions as F

from customer_value import pipeline as pl
from customer_value.tables import Tables
from tests.e2e.conftest import shop_config

pytestmark = pytest.mark.slow

# the suite's training settings (six snapshots: each rank's validation shard gets rows), fewer epochs
FAST = ["training.epochs=3", "training.network.towers=1", "training.network.hidden=[16]", "features.history_snapshots=5"]


def statuses(reports):
    return {r.stage: r.status for r in reports}


def test_the_pipeline_runs_then_skips_then_reruns_what_an_input_reaches(spark, tmp_path):
    cfg = shop_config(tmp_path / "tables", 1500, *FAST)
    run = pl.Run(pl.default_snapshot(cfg))
    stages = pl.select(pl.STAGES, generate=True)
    out = io.StringIO()
    first = pl.run_pipeline(spark, cfg, run, stages, events=pl.Events(False, out))
    assert statuses(first) == {s.name: "ran" for s in stages}
    assert all(r.rows > 0 for r in first), [(r.stage, r.rows) for r in first]
    tables = Tables(cfg.storage)
    scores = tables.read(spark, "gold.customer_scores").where(F.col("snapshot_date") == F.lit(run.snapshot))
    assert scores.count() == next(r.rows for r in first if r.stage == "score")

    second = pl.run_pipeline(spark, cfg, pl.Run(run.snapshot), stages, events=pl.Events(False, io.StringIO()))
    assert statuses(second) == {s.name: "skipped" for s in stages}

    # a landing file touched (same name and size, new mtime): ingest looks again, finds nothing new and commits
    # nothing, so clean and everything after it stay skipped
    from customer_value.ingest.files import list_landing
    from customer_value.ingest.run import SOURCES
    from customer_value.landing import landing_uri

    first_file = list_landing(landing_uri(cfg), list(SOURCES))[0].path
    os.utime(first_file, ns=(os.stat(first_file).st_atime_ns, os.stat(first_file).st_mtime_ns + 10**9))
    third = pl.run_pipeline(spark, cfg, pl.Run(run.snapshot), stages, events=pl.Events(False, io.StringIO()))
    assert statuses(third) == {**{s.name: "skipped" for s in stages}, "ingest": "ran"}
    runs = tables.read(spark, pl.RUNS_TABLE).groupBy("stage").count().collect()
    assert {r["stage"]: r["count"] for r in runs} == {**{s.name: 1 for s in stages}, "ingest": 2}
