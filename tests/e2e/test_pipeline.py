"""The product's own stages through the pipeline runner, on the shared reference run (tests/reference.py: a small
generated shop taken through every stage by one `customer-value pipeline` process): each stage ran once and
recorded itself, a second run skips every one, and a changed input reruns exactly the stages it reaches."""

from __future__ import annotations

import io
import os
from datetime import date

import pytest
from pyspark.sql import functions as F

from customer_value import pipeline as pl
from customer_value.tables import Tables
from tests import reference as ref

pytestmark = pytest.mark.slow


def statuses(reports):
    return {r.stage: r.status for r in reports}


def test_the_pipeline_ran_each_stage_then_skips_then_reruns_what_an_input_reaches(spark, reference, monkeypatch):
    root = reference / "store"
    cfg = ref.config(root)
    monkeypatch.setenv("CUSTOMER_VALUE_ID_KEY", ref.KEY)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    tables = Tables(cfg.storage)
    snapshot = date.fromisoformat(ref.SNAPSHOT)
    stages = pl.select(pl.STAGES)
    assert [s.name for s in stages] == list(ref.STAGES_RUN)

    # the reference run: every stage ran once, recorded as done with the rows it produced
    runs = tables.read(spark, pl.RUNS_TABLE).where(F.col("snapshot_date") == F.lit(snapshot)).toPandas()
    assert sorted(runs.stage) == sorted(["generate", *ref.STAGES_RUN]) and set(runs.status) == {"done"}, runs
    rows = dict(zip(runs.stage, runs.rows))
    assert all(n > 0 for n in rows.values()), rows
    scores = tables.read(spark, "gold.customer_scores").where(F.col("snapshot_date") == F.lit(snapshot))
    assert scores.count() == rows["score"]

    # run again with the same inputs and settings: nothing to do
    again = pl.run_pipeline(spark, cfg, pl.Run(snapshot), stages, events=pl.Events(False, io.StringIO()))
    assert statuses(again) == {s.name: "skipped" for s in stages}

    # a landing file touched (same name and size, new mtime): ingest looks again, finds nothing new and commits
    # nothing, so clean and everything after it stay skipped (the file's time is put back afterwards: the store
    # is shared)
    from customer_value.ingest.files import list_landing
    from customer_value.ingest.run import SOURCES
    from customer_value.landing import landing_uri

    first_file = list_landing(landing_uri(cfg), list(SOURCES))[0].path
    times = os.stat(first_file)
    os.utime(first_file, ns=(times.st_atime_ns, times.st_mtime_ns + 10**9))
    try:
        third = pl.run_pipeline(spark, cfg, pl.Run(snapshot), stages, events=pl.Events(False, io.StringIO()))
    finally:
        os.utime(first_file, ns=(times.st_atime_ns, times.st_mtime_ns))
    assert statuses(third) == {**{s.name: "skipped" for s in stages}, "ingest": "ran"}
    runs = tables.read(spark, pl.RUNS_TABLE).groupBy("stage").count().collect()
    assert {r["stage"]: r["count"] for r in runs} == {"generate": 1, **{s: 1 for s in ref.STAGES_RUN}, "ingest": 2}


def test_the_features_stage_computed_the_backtests_snapshots_and_the_train_stage_read_them(spark, reference):
    """Training was due in the reference run, so the features stage computed the backtest's snapshots with its own
    (one Spark job, one commit per table) and the train stage computed no features or labels of its own."""
    import json
    import re

    log = (reference / "logs.txt").read_text()
    tables = Tables(ref.config(reference / "store").storage)
    found = re.search(r"\[backtest\] features at (\d+) snapshot\(s\): (\d+) written by an earlier job from the same "
                      r"inputs, none computed", log)
    assert found and found.group(1) == found.group(2), log[-3000:]
    assert re.search(r"\[backtest\] labels at [-0-9, ]+: (\d+) written by an earlier job from the same inputs, none "
                     r"computed", log), log[-3000:]
    assert "for the backtest of the training due" in log
    # the features table's one commit holds S's grid snapshots and the backtest's, stamped with their inputs
    commits = tables.delta_table(spark, "gold.customer_features").history().collect()
    assert len(commits) == 1, [c["operation"] for c in commits]
    stamp = json.loads(commits[0]["userMetadata"])
    assert ref.SNAPSHOT in stamp["snapshots"] and len(stamp["snapshots"]) > int(found.group(1))
