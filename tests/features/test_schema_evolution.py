"""A feature added to the catalogue on a store that already holds the gold tables: the next run writes it as a new
column (null in the snapshots written before), instead of failing on the tables' old schema."""

from __future__ import annotations

from datetime import date

from chispa import assert_df_equality

from customer_value.features.run import write_training_set
from customer_value.tables import Tables

A, B = date(2025, 1, 1), date(2025, 4, 1)


def test_a_new_feature_column_reaches_the_training_set_of_an_existing_store(spark, cfg):
    tables = Tables(cfg.storage)
    old = spark.createDataFrame([("c1", 2.0, A), ("c2", 0.0, A)], "customer_id string, spend double, snapshot_date date")
    labels = spark.createDataFrame([("c1", 10.0, 1, False, 90, A), ("c2", 0.0, 0, True, 90, A),
                                    ("c1", 5.0, 1, False, 90, B)],
                                   "customer_id string, future_spend double, future_orders long, churned boolean, "
                                   "horizon_days int, snapshot_date date")
    tables.write(old, "gold.customer_features", replace_where=f"snapshot_date = '{A}'")
    tables.write(labels, "gold.customer_labels")
    write_training_set(spark, tables, [A])
    new = spark.createDataFrame([("c1", 3.0, 0.5, B)], "customer_id string, spend double, season double, snapshot_date date")
    tables.write(new, "gold.customer_features", replace_where=f"snapshot_date = '{B}'", options={"mergeSchema": "true"})
    write_training_set(spark, tables, [B])
    got = tables.read(spark, "gold.training_set").select("customer_id", "snapshot_date", "spend", "season",
                                                         "future_spend")
    expected = spark.createDataFrame([("c1", A, 2.0, None, 10.0), ("c2", A, 0.0, None, 0.0), ("c1", B, 3.0, 0.5, 5.0)],
                                     "customer_id string, snapshot_date date, spend double, season double, "
                                     "future_spend double")
    assert_df_equality(got, expected, ignore_row_order=True, ignore_nullable=True)
