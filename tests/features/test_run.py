"""The features job's writes: a run's snapshots are computed in one plan and written in one commit, and each
snapshot's rows are those of the snapshot computed alone."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import pytest
from chispa import assert_approx_df_equality
from pyspark.sql import functions as F

from customer_value.config import load_config
from customer_value.features.build import customer_features
from customer_value.features.run import snapshot_in, write_features
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
