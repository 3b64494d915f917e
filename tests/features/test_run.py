"""The features job's writes: several snapshots in one commit hold, snapshot by snapshot, the same files' worth of
rows in the same order as each snapshot written alone (the segments and quantile sketches downstream read a
snapshot's rows in file order, so the layout is part of the result)."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import pyarrow.parquet as pq
import pytest
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
    c, o, it, e, r = frames(spark, customers=customers, orders=orders, items=items, events=events)
    return {"customers": c, "orders": o, "order_items": it, "events": e, "reviews": r}


def _files(spark, tables: Tables, s: date) -> list[tuple[str, ...]]:
    """Each live file of snapshot `s` as its customer ids in file order, sorted (file names differ)."""
    paths = tables.read(spark, "gold.customer_features").where(F.col("snapshot_date") == F.lit(s)).inputFiles()
    return sorted(tuple(pq.read_table(p.removeprefix("file:"), columns=["customer_id"]).column(0).to_pylist())
                  for p in paths)


def test_snapshots_written_in_one_commit_keep_the_files_of_each_written_alone(spark, silver, tmp_path):
    together, alone = (Tables(load_config(ROOT / "conf" / "local.yaml", [f"storage.root={tmp_path / n}"]).storage)
                       for n in ("together", "alone"))
    cfg = load_config(ROOT / "conf" / "local.yaml").features
    # sort-merge joins: the snapshot's rows are shuffled and adaptive execution picks its partitions (at least
    # the job's parallelism, 2, however small the data), which a union of the snapshots' plans shares out among
    # its branches (one file per snapshot here instead of two)
    knobs = {"spark.sql.autoBroadcastJoinThreshold": "-1", "spark.sql.adaptive.coalescePartitions.minPartitionSize": "1"}
    for key, value in knobs.items():
        spark.conf.set(key, value)
    try:
        write_features(spark, together, silver, SNAPSHOTS, cfg)
        for s in SNAPSHOTS:
            rows = customer_features(silver["customers"], silver["orders"], silver["order_items"], silver["events"],
                                     silver["reviews"], s, cfg)
            alone.write(rows, "gold.customer_features", replace_where=f"snapshot_date = '{s}'")
    finally:
        for key in knobs:
            spark.conf.unset(key)
    history = together.delta_table(spark, "gold.customer_features").history().collect()
    assert [h["operation"] for h in history] == ["WRITE"], "one commit for both snapshots"
    written = together.read(spark, "gold.customer_features").where(snapshot_in(SNAPSHOTS))
    assert written.count() == alone.read(spark, "gold.customer_features").count() > 0
    for s in SNAPSHOTS:
        files = _files(spark, together, s)
        assert len(files) > 1, "several partitions per snapshot: the case where a union of plans differed"
        assert files == _files(spark, alone, s)
