"""The pipeline runner: stages as data, skipped when their fingerprint is committed, rerun exactly where an input
moved, resumed after a failure; its selection flags and its JSON lines. The stages here are small real ones
(Spark writing real Delta tables); the product's own stages run end to end in tests/e2e/test_pipeline.py."""

from __future__ import annotations

import io
import json
from datetime import date

import pytest
from pyspark.sql import functions as F

from customer_value import pipeline as pl
from customer_value.tables import Tables

S = date(2026, 3, 2)


class Shop:
    """Two stages over real Delta tables: `make` writes smoke.customers, `total` sums it into smoke.scores."""

    def __init__(self, spark, cfg) -> None:
        self.spark, self.cfg, self.tables = spark, cfg, Tables(cfg.storage)
        self.runs: list[str] = []
        self.values = [1, 2, 3]
        self.fail_total = False

    def make(self, spark, cfg, run):
        self.runs.append("make")
        df = spark.createDataFrame([(v,) for v in self.values], "v long")
        self.tables.write(df, "smoke.customers")
        return len(self.values)

    def total(self, spark, cfg, run):
        self.runs.append("total")
        if self.fail_total:
            raise ValueError("smoke.customers: column v has a null in row 2")
        total = self.tables.read(spark, "smoke.customers").agg(F.sum("v").alias("total"))
        self.tables.write(total, "smoke.scores")
        return 1

    def stages(self):
        return (pl.Stage("make", (), ("smoke.customers",), ("synthetic",), self.make, "write the rows"),
                pl.Stage("total", ("smoke.customers",), ("smoke.scores",), ("scoring",), self.total, "sum them"))

    def run(self, force: bool = False, snapshot: date = S, stages=None):
        return pl.run_pipeline(self.spark, self.cfg, pl.Run(snapshot), stages or self.stages(), force,
                               pl.Events(False, io.StringIO()))


def statuses(reports):
    return [(r.stage, r.status) for r in reports]


def test_a_second_run_skips_every_stage_and_a_changed_input_reruns_only_what_reads_it(spark, cfg):
    shop = Shop(spark, cfg)
    assert statuses(shop.run()) == [("make", "ran"), ("total", "ran")]
    assert statuses(shop.run()) == [("make", "skipped"), ("total", "skipped")]
    assert shop.runs == ["make", "total"]
    # someone else commits to smoke.customers: only the stage that reads it reruns
    shop.tables.write(spark.createDataFrame([(10,)], "v long"), "smoke.customers", mode="append")
    assert statuses(shop.run()) == [("make", "skipped"), ("total", "ran")]
    assert shop.tables.read(spark, "smoke.scores").collect()[0]["total"] == 16
    # a new snapshot is a new run for every stage
    assert statuses(shop.run(snapshot=date(2026, 3, 3))) == [("make", "ran"), ("total", "ran")]
    runs = shop.tables.read(spark, pl.RUNS_TABLE).where(F.col("status") == "done")
    assert runs.count() == 5


def test_a_changed_setting_reruns_its_stage_and_force_reruns_regardless(spark, cfg):
    shop = Shop(spark, cfg)
    shop.run()
    shop.cfg = cfg.model_copy(update={"scoring": cfg.scoring.model_copy(update={"reason_count": 2})})
    assert statuses(shop.run()) == [("make", "skipped"), ("total", "ran")]
    assert statuses(shop.run(force=True)) == [("make", "ran"), ("total", "ran")]


def test_a_failed_stage_is_named_recorded_and_the_rerun_resumes_there(spark, cfg):
    shop = Shop(spark, cfg)
    shop.fail_total = True
    with pytest.raises(pl.PipelineError) as err:
        shop.run()
    msg = str(err.value)
    assert "stage 'total' failed" in msg and "smoke.customers@" in msg and "outputs: smoke.scores" in msg
    assert "column v has a null in row 2" in msg
    failed = shop.tables.read(spark, pl.RUNS_TABLE).where(F.col("status") == "failed").collect()
    assert [r["stage"] for r in failed] == ["total"] and "null in row 2" in failed[0]["error"]
    shop.fail_total = False
    assert statuses(shop.run()) == [("make", "skipped"), ("total", "ran")]
    assert shop.runs == ["make", "total", "total"]


def test_a_missing_output_reruns_its_stage(spark, cfg):
    """A committed record is not enough: the outputs must still be there (a table dropped by hand)."""
    import shutil

    shop = Shop(spark, cfg)
    shop.run()
    shutil.rmtree(shop.tables.location("smoke.scores"))
    assert statuses(shop.run()) == [("make", "skipped"), ("total", "ran")]


def test_json_lines_wrap_the_stages_output(spark, cfg):
    shop = Shop(spark, cfg)
    out = io.StringIO()

    def chatty(spark_, cfg_, run):
        print("[make] wrote 3 rows")
        return shop.make(spark_, cfg_, run)

    stages = (pl.Stage("make", (), ("smoke.customers",), ("synthetic",), chatty, "write the rows"),)
    pl.run_pipeline(spark, cfg, pl.Run(S), stages, False, pl.Events(True, out))
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [e["event"] for e in events] == ["stage_started", "log", "stage_done"]
    assert events[1] == {**events[1], "stage": "make", "message": "[make] wrote 3 rows"}
    assert events[2]["rows"] == 3


def test_selection_flags():
    names = lambda stages: [s.name for s in stages]  # noqa: E731
    assert names(pl.select(pl.STAGES)) == ["ingest", "clean", "features", "train", "score", "monitor"]
    assert names(pl.select(pl.STAGES, generate=True))[0] == "generate"
    assert names(pl.select(pl.STAGES, start="score")) == ["score", "monitor"]
    assert names(pl.select(pl.STAGES, only="clean")) == ["clean"]
    with pytest.raises(ValueError, match="'scroe': not a stage; stages: generate, ingest"):
        pl.select(pl.STAGES, start="scroe")
    with pytest.raises(ValueError, match="exclude each other"):
        pl.select(pl.STAGES, start="clean", only="score")


def test_training_is_due_once_per_period(cfg):
    """The train stage's fingerprint moves with the retraining period, not with every day's snapshot."""
    train = next(s for s in pl.STAGES if s.name == "train")
    monday, sunday, next_monday = date(2026, 3, 2), date(2026, 3, 8), date(2026, 3, 9)
    fp = {d: pl.fingerprint(train, cfg, pl.Run(d), {}) for d in (monday, sunday, next_monday)}
    assert pl._training_period(cfg, pl.Run(monday)) == pl._training_period(cfg, pl.Run(sunday))
    assert pl._training_period(cfg, pl.Run(next_monday)) == pl._training_period(cfg, pl.Run(monday)) + 1
    assert fp[sunday] == fp[monday] and fp[next_monday] != fp[monday]


def test_every_stage_names_real_settings_and_tables(cfg):
    from customer_value.config import Config
    from customer_value.tables import TABLES

    for stage in pl.STAGES:
        assert set(stage.settings) <= set(Config.model_fields), stage.name
        for name in (*stage.inputs, *stage.outputs):
            assert name in TABLES or name in (pl.LANDING, pl.MODEL), (stage.name, name)
        pl.fingerprint(stage, cfg, pl.Run(S), {})
