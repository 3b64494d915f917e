"""Each cleaning step on tiny hand-written frames (chispa)."""

from __future__ import annotations

import hashlib
import hmac
from datetime import date, datetime

from chispa import assert_df_equality
from pyspark.sql import functions as F

from customer_value.cleaning.pseudonymise import pseudonym
from customer_value.cleaning.rules import (Rule, age_band, amount_rules, apply_rules, cap_at, drop_exact_duplicates,
                                           fill_missing, flag_orphans, latest_by_key, timestamp_rules, with_flag)


def test_drop_exact_duplicates_ignores_metadata_columns(spark):
    df = spark.createDataFrame([("o1", 10, "f1"), ("o1", 10, "f2"), ("o1", 11, "f1")], "id string, v int, _source_file string")
    out = drop_exact_duplicates(df, ["id", "v"]).select("id", "v")
    assert_df_equality(out, spark.createDataFrame([("o1", 10), ("o1", 11)], "id string, v int"), ignore_row_order=True)


def test_latest_by_key_keeps_the_newest_version(spark):
    df = spark.createDataFrame(
        [("o1", datetime(2024, 1, 1), 1), ("o1", datetime(2024, 1, 3), 2), ("o2", None, 3), ("o2", datetime(2024, 1, 2), 4)],
        "id string, updated_at timestamp, v int")
    out = latest_by_key(df, ["id"], [F.col("updated_at").desc_nulls_last()])
    expected = spark.createDataFrame([("o1", datetime(2024, 1, 3), 2), ("o2", datetime(2024, 1, 2), 4)],
                                     "id string, updated_at timestamp, v int")
    assert_df_equality(out, expected, ignore_row_order=True)


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


def test_cap_at_keeps_the_original_and_flags_capped_rows(spark):
    df = spark.createDataFrame([(1, 50.0), (2, 500.0)], "id int, total double")
    out = cap_at(df, "total", 100.0, "total_capped", "outlier:total")
    expected = spark.createDataFrame([(1, 50.0, 50.0, []), (2, 500.0, 100.0, ["outlier:total"])],
                                     "id int, total double, total_capped double, dq_flags array<string>")
    assert_df_equality(out, expected, ignore_row_order=True, ignore_nullable=True)


def test_age_band_from_birth_date(spark):
    df = spark.createDataFrame([(date(2000, 6, 1),), (date(2000, 6, 2),), (date(1950, 1, 1),), (date(2015, 1, 1),), (None,)],
                               "birth date")
    out = df.select(age_band(F.col("birth"), date(2025, 6, 1), [18, 25, 35, 45, 55, 65]).alias("band"))
    assert [r.band for r in out.collect()] == ["25-34", "18-24", "65+", "unknown", "unknown"]


def test_pseudonym_is_hmac_sha256_with_the_key(spark):
    key = b"0123456789abcdef-test"
    df = spark.createDataFrame([("u0000001",), (None,)], "user_id string")
    out = [r.c for r in df.select(pseudonym(F.col("user_id"), key).alias("c")).collect()]
    assert out == [hmac.new(key, b"u0000001", hashlib.sha256).hexdigest(), None]
    other = df.select(pseudonym(F.col("user_id"), b"another-key-0123456").alias("c")).first().c
    assert other != out[0] and len(other) == 64
