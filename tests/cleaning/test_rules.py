"""Each cleaning step on tiny hand-written frames (chispa)."""

from __future__ import annotations

import hashlib
import hmac
from datetime import date, datetime

from chispa import assert_df_equality
from pyspark.sql import functions as F

from customer_value.cleaning.pseudonymise import pseudonym
from customer_value.cleaning.rules import (Rule, amount_rules, apply_rules, drop_exact_duplicates, fill_missing,
                                           flag_above, flag_orphans, timestamp_rules, with_flag)


def test_drop_exact_duplicates_ignores_metadata_columns(spark):
    df = spark.createDataFrame([("o1", 10, "f1"), ("o1", 10, "f2"), ("o1", 11, "f1")], "id string, v int, _source_file string")
    out = drop_exact_duplicates(df, ["id", "v"]).select("id", "v")
    assert_df_equality(out, spark.createDataFrame([("o1", 10), ("o1", 11)], "id string, v int"), ignore_row_order=True)


def test_apply_rules_takes_the_first_broken_rule(spark):
    df = spark.createDataFrame([(1, -5.0), (2, 2e6), (3, 10.0)], "id int, total double")
    out = apply_rules(df, [*amount_rules("total", 1e5), Rule("never", F.lit(False))])
    expected = spark.createDataFrame([(1, -5.0, "negative_amount:total"), (2, 2e6, "absurd_amount:total"), (3, 10.0, None)],
                                     "id int, total double, _reject_reason string")
    assert_df_equality(out, expected, ignore_row_order=True)


def test_timestamp_rules_accept_all_of_today_and_the_opening_day(spark):
    df = spark.createDataFrame([
        (1, datetime(2025, 12, 31, 23, 59, 59)), (2, datetime(2026, 1, 1, 0, 0, 0)),
        (3, datetime(2023, 1, 1, 0, 0, 0)), (4, datetime(2022, 12, 31, 23, 59, 59))], "id int, ts timestamp")
    out = apply_rules(df, timestamp_rules("ts", date(2023, 1, 1), date(2025, 12, 31))).select("id", "_reject_reason")
    expected = spark.createDataFrame([(1, None), (2, "future_timestamp:ts"), (3, None), (4, "before_opening:ts")],
                                     "id int, _reject_reason string")
    assert_df_equality(out, expected, ignore_row_order=True)


def test_flag_orphans_keeps_rows_and_flags_unknown_keys(spark):
    orders = spark.createDataFrame([("o1", "u1"), ("o2", "u9"), ("o3", None)], "order_id string, user_id string")
    users = spark.createDataFrame([("u1",), ("u2",)], "user_id string")
    out = flag_orphans(orders.withColumn("dq_flags", F.array().cast("array<string>")), "user_id", users, "user_id")
    expected = spark.createDataFrame([("o1", "u1", []), ("o2", "u9", ["orphan"]), ("o3", None, ["orphan"])],
                                     "order_id string, user_id string, dq_flags array<string>")
    assert_df_equality(out, expected, ignore_row_order=True, ignore_nullable=True)


def test_with_flag_accumulates_distinct_flags(spark):
    df = spark.createDataFrame([(1,), (2,)], "id int")
    out = with_flag(with_flag(with_flag(df, "a", F.col("id") == 1), "b", F.lit(True)), "a", F.col("id") == 1)
    expected = spark.createDataFrame([(1, ["a", "b"]), (2, ["b"])], "id int, dq_flags array<string>")
    assert_df_equality(out, expected, ignore_row_order=True, ignore_nullable=True)


def test_fill_missing_replaces_nulls_and_blanks_only_in_listed_columns(spark):
    df = spark.createDataFrame([("f", None, None), (" ", "Paris", None)], "gender string, city string, other string")
    out = fill_missing(df, {"gender": "unknown", "city": "unknown", "absent": "x"})
    expected = spark.createDataFrame([("f", "unknown", None), ("unknown", "Paris", None)],
                                     "gender string, city string, other string")
    assert_df_equality(out, expected, ignore_nullable=True)


def test_flag_above_keeps_the_value_and_flags_the_row(spark):
    df = spark.createDataFrame([(1, 50.0, []), (2, 500.0, [])], "id int, total double, dq_flags array<string>")
    out = flag_above(df, "total", 100.0, "outlier:total")
    expected = spark.createDataFrame([(1, 50.0, []), (2, 500.0, ["outlier:total"])], "id int, total double, dq_flags array<string>")
    assert_df_equality(out, expected, ignore_row_order=True, ignore_nullable=True)
    assert_df_equality(flag_above(df, "total", None, "outlier:total"), df)


def test_pseudonym_is_hmac_sha256_with_the_key(spark):
    key = b"0123456789abcdef-test"
    df = spark.createDataFrame([("u0000001",), (None,)], "user_id string")
    out = [r.c for r in df.select(pseudonym(F.col("user_id"), key).alias("c")).collect()]
    assert out == [hmac.new(key, b"u0000001", hashlib.sha256).hexdigest(), None]
    other = df.select(pseudonym(F.col("user_id"), b"another-key-0123456").alias("c")).first().c
    assert other != out[0] and len(other) == 64
