"""Version histories: one version per change, known from its `updated_at`, valid until the next (chispa)."""

from __future__ import annotations

from datetime import datetime

import pytest
from chispa import assert_df_equality
from pyspark.sql import functions as F

from customer_value.cleaning.history import current, known_from, versions

T = [datetime(2024, 1, d) for d in range(1, 10)]
ROWS = "id string, status string, updated_at timestamp, happened timestamp, _ingested_at timestamp"
OUT = "id string, status string, valid_from timestamp, valid_to timestamp"


def _history(spark, rows):
    df = spark.createDataFrame(rows, ROWS)
    out = versions(df, ["id"], known_from(F.col("updated_at"), F.col("happened")), ["status"],
                   [F.col("_ingested_at").desc()])
    return out.select("id", "status", "valid_from", "valid_to")


def test_each_change_is_a_version_valid_until_the_next(spark):
    out = _history(spark, [("o1", "completed", T[1], T[0], T[8]), ("o1", "returned", T[5], T[0], T[8]),
                           ("o2", "cancelled", T[2], T[2], T[8])])
    expected = spark.createDataFrame([("o1", "completed", T[1], T[5]), ("o1", "returned", T[5], None),
                                      ("o2", "cancelled", T[2], None)], OUT)
    assert_df_equality(out, expected, ignore_row_order=True, ignore_nullable=True)


def test_a_resent_row_is_no_change_and_a_same_instant_correction_replaces(spark):
    out = _history(spark, [
        ("o1", "completed", T[1], T[0], T[6]), ("o1", "completed", T[3], T[0], T[7]),   # re-sent two days later
        ("o1", "returned", T[5], T[0], T[6]),
        ("o2", "completed", T[2], T[2], T[6]), ("o2", "cancelled", T[2], T[2], T[7]),   # corrected, same instant
    ])
    expected = spark.createDataFrame([("o1", "completed", T[1], T[5]), ("o1", "returned", T[5], None),
                                      ("o2", "cancelled", T[2], None)], OUT)
    assert_df_equality(out, expected, ignore_row_order=True, ignore_nullable=True)


def test_known_from_is_never_before_the_event_and_falls_back_to_it(spark):
    out = _history(spark, [("o1", "completed", T[0], T[3], T[8]),     # recorded "before" it happened: known at T3
                           ("o2", "completed", None, T[4], T[8])])    # no updated_at: known when it happened
    expected = spark.createDataFrame([("o1", "completed", T[3], None), ("o2", "completed", T[4], None)], OUT)
    assert_df_equality(out, expected, ignore_row_order=True, ignore_nullable=True)


def test_current_is_the_open_version(spark):
    hist = _history(spark, [("o1", "completed", T[1], T[0], T[8]), ("o1", "returned", T[5], T[0], T[8])])
    assert [tuple(r) for r in current(hist).collect()] == [("o1", "returned")]


def test_history_is_merged_in_one_commit_and_a_rerun_changes_nothing(spark, cfg):
    """First run writes; a later run with a new version closes the old one and adds the new one in one MERGE
    commit; the same input again leaves every row as it was."""
    from customer_value.cleaning.run import merge_history
    from customer_value.tables import Tables

    tables = Tables(cfg.storage)

    def orders(rows):  # the shape of silver.order_history, as far as its key and constraints go
        return _history(spark, rows).withColumnRenamed("id", "order_id").withColumn("total", F.lit(10.0))

    first = orders([("o1", "completed", T[1], T[0], T[8]), ("o2", "cancelled", T[2], T[2], T[8])])
    merge_history(spark, tables, first, "silver.order_history")
    later = orders([("o1", "completed", T[1], T[0], T[8]), ("o2", "cancelled", T[2], T[2], T[8]),
                    ("o1", "returned", T[5], T[0], T[8])])
    merge_history(spark, tables, later, "silver.order_history")
    table = tables.delta_table(spark, "silver.order_history")
    last = table.history(1).collect()[0]
    assert last["operation"] == "MERGE"
    metrics = last["operationMetrics"]
    assert (metrics["numTargetRowsInserted"], metrics["numTargetRowsUpdated"], metrics["numTargetRowsDeleted"]) == ("1", "1", "0")
    assert_df_equality(tables.read(spark, "silver.order_history"), later, ignore_row_order=True, ignore_nullable=True)
    merge_history(spark, tables, later, "silver.order_history")
    again = table.history(1).collect()[0]["operationMetrics"]
    assert (again["numTargetRowsInserted"], again["numTargetRowsUpdated"], again["numTargetRowsDeleted"]) == ("0", "0", "0")


def test_a_table_written_with_its_constraints_refuses_violating_rows_in_that_same_write(spark, cfg):
    """Clean creates silver tables with their CHECK constraints as options of the creating write (no ALTER
    afterwards): a history whose interval is reversed fails that commit and no table is left behind."""
    from deltalake import DeltaTable as ReadTable
    from deltalake.exceptions import TableNotFoundError

    from customer_value.cleaning.run import constraint_options
    from customer_value.tables import Tables

    tables = Tables(cfg.storage)
    bad = spark.createDataFrame([("o1", "completed", T[5], T[1], 10.0)],
                                "order_id string, status string, valid_from timestamp, valid_to timestamp, total double")
    with pytest.raises(Exception, match="valid_interval"):
        tables.write(bad, "silver.order_history", options=constraint_options("silver.order_history"))
    with pytest.raises(TableNotFoundError):
        ReadTable(tables.location("silver.order_history"))
    tables.write(bad.withColumn("valid_to", F.lit(None).cast("timestamp")), "silver.order_history",
                 options=constraint_options("silver.order_history"))
    assert set(ReadTable(tables.location("silver.order_history")).metadata().configuration) >= {
        "delta.constraints.valid_interval", "delta.constraints.total_in_range"}
