"""The features job's writes: a run's snapshots are computed in one plan and written in one commit, and each
snapshot's rows are those of the snapshot computed alone."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import pytest
from chispa import assert_approx_df_equality, assert_df_equality
from pyspark.sql import functions as F

from customer_value.config import load_config
from customer_value.features.build import customer_features
from customer_value.evaluation.backtest import backtest_inputs
from customer_value.features.run import (SILVER, commit_stamp, fresh_snapshots, inputs_key, read_silver, snapshot_in,
                                         write_features, write_labels)
from customer_value.tables import Tables
from tests.conftest import ROOT
from tests.features.tiny import customer, event, frames, item, order

SNAPSHOTS = [date(2024, 3, 1), date(2024, 4, 1)]


@pytest.fixture()
def silver(spark):
    customers, orders, items, events = [], [], [], []
    for i in range(40):
        cid = f"c{i:02d}"
        customers.append(customer(cid, signup=date(2023, 1 + i % 12, 1 + i % 27)))
        for k in range(i % 5):
            oid = f"o{i:02d}-{k}"
            orders.append(order(oid, cid, datetime(2023, 6, 1) + timedelta(days=37 * k + i), 10.0 + i + k))
            items.append(item(oid, ("home", "books", "toys")[k % 3], 1 + k))
        events.append(event(cid, datetime(2024, 2, 1) + timedelta(hours=i), "page_view"))
        if i % 3 == 0:      # between the two snapshots: seen by the later one only
            events.append(event(cid, datetime(2024, 3, 10) + timedelta(hours=i), "cart_add", session=f"s{i}"))
    c, o, it, e, r = frames(spark, customers=customers, orders=orders, items=items, events=events)
    return {"customers": c, "orders": o, "order_items": it, "events": e, "reviews": r}


def test_snapshots_are_written_in_one_commit_each_as_computed_alone(spark, silver, tmp_path):
    tables = Tables(load_config(ROOT / "conf" / "local.yaml", [f"storage.root={tmp_path}"]).storage)
    cfg = load_config(ROOT / "conf" / "local.yaml").features
    written = write_features(spark, tables, silver, SNAPSHOTS, cfg)
    history = tables.delta_table(spark, "gold.customer_features").history().collect()
    assert [h["operation"] for h in history] == ["WRITE"], "one commit for both snapshots"
    assert written.count() == tables.read(spark, "gold.customer_features").where(snapshot_in(SNAPSHOTS)).count()
    for s in SNAPSHOTS:
        alone = customer_features(silver["customers"], silver["orders"], silver["order_items"], silver["events"],
                                  silver["reviews"], s, cfg)
        mine = written.where(F.col("snapshot_date") == F.lit(s))
        assert mine.count() > 30
        assert_approx_df_equality(mine.select(*alone.columns), alone, 1e-9, ignore_nullable=True,
                                  ignore_row_order=True)


def _store(spark, silver, tmp_path):
    """The tiny silver written as the store's silver tables (what `inputs_key` and the backtest read)."""
    cfg = load_config(ROOT / "conf" / "local.yaml", [f"storage.root={tmp_path}"])
    tables = Tables(cfg.storage)
    for short, name in SILVER.items():
        tables.write(silver[short], name)
    return cfg, tables


def _commits(spark, tables, name):
    return tables.delta_table(spark, name).history().count() if tables.exists(spark, name) else 0


def test_the_newest_commit_that_wrote_a_snapshot_decides_whether_it_is_fresh(spark, tmp_path):
    tables = Tables(load_config(ROOT / "conf" / "local.yaml", [f"storage.root={tmp_path}"]).storage)
    a, b = SNAPSHOTS

    def write(snapshots, key, name="gold.customer_features", horizon=None):
        rows = spark.createDataFrame([(s, "c1") for s in snapshots], "snapshot_date date, customer_id string")
        if horizon is not None:
            rows = rows.withColumn("horizon_days", F.lit(horizon))
        tables.write(rows, name, replace_where=snapshot_in(snapshots), options=commit_stamp(key, snapshots, horizon))

    write([a, b], "k1")
    assert fresh_snapshots(spark, tables, "gold.customer_features", "k1") == {a, b}
    write([b], "k2")                                # b rewritten from other inputs
    assert fresh_snapshots(spark, tables, "gold.customer_features", "k1") == {a}
    assert fresh_snapshots(spark, tables, "gold.customer_features", "k2") == {b}
    write([a], None)                                # a writer that does not say what it wrote
    assert fresh_snapshots(spark, tables, "gold.customer_features", "k1") == set()
    assert fresh_snapshots(spark, tables, "gold.customer_features", "k2") == set()
    # labels: fresh for the horizon they were written for only
    write([a], "k1", "gold.customer_labels", 30)
    assert fresh_snapshots(spark, tables, "gold.customer_labels", "k1", 30) == {a}
    assert fresh_snapshots(spark, tables, "gold.customer_labels", "k1", 60) == set()


def test_a_labels_commit_keeps_other_horizons_of_the_snapshots_it_does_not_own(spark, silver, tmp_path):
    cfg, tables = _store(spark, silver, tmp_path)
    a, b = SNAPSHOTS
    write_labels(spark, tables, silver, [a, b], 60)
    write_labels(spark, tables, silver, [a, b], 30, every_horizon=[a])        # a's labels: only the 30-day ones
    have = {(r["snapshot_date"], r["horizon_days"]) for r in
            tables.read(spark, "gold.customer_labels").select("snapshot_date", "horizon_days").distinct().collect()}
    assert have == {(a, 30), (b, 30), (b, 60)}


def test_the_backtest_reads_what_was_written_from_the_same_inputs_and_computes_again_after_silver_moved(
        spark, silver, tmp_path):
    """The labels stand for both tables here (the same key and history walk; features cost a minute to compute
    even on tiny data): the e2e pipeline test shows the train stage reading the features stage's snapshots."""
    cfg, tables = _store(spark, silver, tmp_path)
    a, b = SNAPSHOTS
    key = inputs_key(spark, tables, cfg.features)
    assert key == inputs_key(spark, tables, cfg.features), "a function of the store's state"
    _, labels_for = backtest_inputs(spark, tables, read_silver(spark, tables), cfg, b + timedelta(days=60), 30)
    first = labels_for([a, b])
    assert _commits(spark, tables, "gold.customer_labels") == 1
    again = labels_for([b, a])
    assert _commits(spark, tables, "gold.customer_labels") == 1, "read, not computed again"
    assert_df_equality(again, first, ignore_row_order=True)
    assert fresh_snapshots(spark, tables, "gold.customer_labels", key, 30) == {a, b}
    # silver moves on (a new version of the events): the key changes and the rows are computed again
    tables.write(silver["events"].limit(1), "silver.events", mode="append")
    moved = inputs_key(spark, tables, cfg.features)
    assert moved != key
    _, labels_for = backtest_inputs(spark, tables, read_silver(spark, tables), cfg, b + timedelta(days=60), 30)
    labels_for([a])
    assert _commits(spark, tables, "gold.customer_labels") == 2, "computed again"
    assert fresh_snapshots(spark, tables, "gold.customer_labels", moved, 30) == {a}
    # and a setting of the features moves the key too
    assert inputs_key(spark, tables, cfg.features.model_copy(update={"horizon_days": 31})) != moved
