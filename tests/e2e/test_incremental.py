"""Daily runs: a shop's daily deliveries cleaned one batch at a time end as the same silver as one full run over
everything, and each day's clean reads only what that day touches; a rerun after a crash before the batch
marker changes nothing; the pipeline's features reuse the history snapshots already written."""

from __future__ import annotations

import shutil
from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import pytest
from delta.tables import DeltaTable
from pyspark.sql import functions as F

from customer_value.cleaning.run import BATCHES, HISTORY, SILVER, clean_all
from customer_value.features.run import grid_snapshots, run_features
from customer_value.ingest.run import ingest
from customer_value.synthetic.generate import delivery_day, generate
from customer_value.tables import Tables
from tests.e2e.conftest import shop_config

pytestmark = pytest.mark.slow
DAYS = 2
EXPORT = date(2025, 12, 31)


def _silver(spark, cfg) -> dict[str, pd.DataFrame]:
    """Every silver table as sorted pandas, the outlier flag left out (a data-quality flag whose cap a daily run
    keeps for orders outside its slice: documented in cleaning.run)."""
    tables = Tables(cfg.storage)
    out = {}
    for name in [*SILVER.values(), *HISTORY.values()]:
        df = tables.read(spark, name)
        if "dq_flags" in df.columns:
            df = df.withColumn("dq_flags", F.concat_ws(",", F.array_sort(F.array_remove("dq_flags", "outlier:total"))))
        pdf = df.toPandas()
        out[name] = pdf.sort_values(list(pdf.columns)).reset_index(drop=True)
    rejects = tables.read(spark, "quarantine.rejects").select("table", "reason", "record").toPandas()
    out["quarantine.rejects"] = rejects.sort_values(list(rejects.columns)).reset_index(drop=True)
    return out


@pytest.fixture(scope="module")
def daily(spark, tmp_path_factory):
    """The same shop twice: `full` ingests and cleans everything at once; `daily` gets its history, then each of
    the last three days' deliveries, with an ingest and an incremental clean per day."""
    root = tmp_path_factory.mktemp("daily")
    # more returns and profile edits than the demo: days whose orders and customers have earlier versions
    extra = [f"synthetic.delivery_days={DAYS}", "synthetic.return_rate=0.3", "synthetic.profile_edit_rate=0.5"]
    full = shop_config(root / "full", 600, *extra)
    days = shop_config(root / "daily", 600, *extra)
    generate(spark, full)
    generate(spark, days)
    ingest(spark, full)
    full_counts = clean_all(spark, full)

    landing = Path(days.storage.root) / "landing"
    held = root / "held"
    per_day = {}
    for f in landing.glob("*/*.*"):
        day = delivery_day(f.name)
        if day is not None:
            target = held / str(day) / f.parent.name
            target.mkdir(parents=True, exist_ok=True)
            per_day.setdefault(day, []).append(shutil.move(str(f), target / f.name))
    assert sorted(per_day) == [EXPORT - timedelta(days=k) for k in reversed(range(DAYS))]
    ingest(spark, days)
    history_counts = clean_all(spark, days)
    day_counts = []
    for day in sorted(per_day):
        for f in per_day[day]:
            f = Path(f)
            shutil.move(str(f), landing / f.parent.name / f.name)
        ingest(spark, days)
        day_counts.append(clean_all(spark, days))
    return full, days, full_counts, history_counts, day_counts


def test_daily_batches_end_as_one_full_run(spark, daily):
    full, days, *_ = daily
    # the days hold new versions of orders whose earlier versions came in earlier batches (returns): the slice
    # must bring those back, or the order's history loses them
    spanning = (Tables(days.storage).read(spark, "bronze.orders").groupBy("order_id")
                .agg(F.countDistinct("_batch_id").alias("batches")).where("batches > 1").count())
    assert spanning > 0
    want, got = _silver(spark, full), _silver(spark, days)
    for name in want:
        assert len(got[name]) == len(want[name]), name
        pd.testing.assert_frame_equal(got[name], want[name], obj=name)
    assert len(want["silver.order_history"]) > len(want["silver.orders"]) > 0


def test_a_day_reads_only_what_it_touches(spark, daily):
    full, days, full_counts, history_counts, day_counts = daily
    tables = Tables(days.storage)
    bronze_events = tables.read(spark, "bronze.events")
    batches = [r["batch_id"] for r in tables.read(spark, BATCHES).where("source = 'events'").orderBy("cleaned_at").collect()]
    assert len(batches) == 1 + DAYS
    for counts, batch in zip(day_counts, batches[1:]):
        # events: exactly the day's rows, never the history again
        assert counts["silver.events"].rows_in == bronze_events.where(F.col("_batch_id") == batch).count() > 0
        # keyed tables: the day's keys with their earlier versions, a small share of the whole
        assert 0 < counts["silver.orders"].rows_in < full_counts["silver.orders"].rows_in / 10
        assert counts["silver.customers"].rows_in < full_counts["silver.customers"].rows_in / 10


def test_a_crash_before_the_batch_marker_reruns_to_the_same_silver(spark, daily):
    _, days, *_ = daily
    before = _silver(spark, days)
    tables = Tables(days.storage)
    last = tables.read(spark, BATCHES).agg(F.max("cleaned_at")).collect()[0][0]
    tables.delta_table(spark, BATCHES).delete(F.col("cleaned_at") == F.lit(last))  # the marker never written
    counts = clean_all(spark, days)
    assert counts, "the unmarked batch is cleaned again"
    after = _silver(spark, days)
    for name in before:
        pd.testing.assert_frame_equal(after[name], before[name], obj=name)
    assert clean_all(spark, days) == {}, "nothing new: nothing to do"


def test_daily_features_reuse_the_history_snapshots(spark, daily):
    _, days, *_ = daily
    tables = Tables(days.storage)
    first, second = EXPORT + timedelta(days=1), EXPORT + timedelta(days=2)
    run_features(spark, days, first, 3, reuse=True)
    version = DeltaTable.forPath(spark, tables.location("gold.customer_features")).history(1).collect()[0]["version"]
    run_features(spark, days, second, 3, reuse=True)
    history = DeltaTable.forPath(spark, tables.location("gold.customer_features")).history().collect()
    assert max(h["version"] for h in history) == version + 1, "the next day writes its own snapshot only"
    written = {r["snapshot_date"] for r in tables.read(spark, "gold.customer_features").select("snapshot_date").distinct().collect()}
    assert written == set(grid_snapshots(first, 3, 30)) | {second}
    assert grid_snapshots(first, 3, 30)[:-1] == grid_snapshots(second, 3, 30)[:-1]
