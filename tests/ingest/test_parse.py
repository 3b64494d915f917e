"""Parsing landing lines: reasons for what cannot be used, typed values for what can (chispa)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from chispa import assert_df_equality

from customer_value.ingest.parse import parse_csv, parse_jsonl, type_columns
from customer_value.schemas import RAW_SOURCES

USERS = RAW_SOURCES["users"]
ITEMS = RAW_SOURCES["order_items"]
REVIEWS = RAW_SOURCES["reviews"]


def _lines(spark, lines):
    return spark.createDataFrame([("f.csv", line, "utf-8") for line in lines], "_source_file string, _line string, _encoding string")


def test_csv_reasons_in_order_malformed_missing_then_type(spark):
    header = ITEMS.names
    lines = [",".join(header), "o1,p1,home,2,9.99", "o1,p2,home,two,9.99", "o1,,home,1,5.00", 'o1,p3,"home', "o2,p4,,1,1.5"]
    rows = type_columns(parse_csv(_lines(spark, lines), ITEMS, header), ITEMS)
    got = rows.select("_raw", "quantity", "unit_price", "_reason", "_issues")
    expected = spark.createDataFrame([
        ("o1,p1,home,2,9.99", 2, Decimal("9.99"), None, []),
        ("o1,p2,home,two,9.99", None, Decimal("9.99"), "type_mismatch:quantity", []),
        ("o1,,home,1,5.00", 1, Decimal("5.00"), "missing_required:product_id", []),
        ('o1,p3,"home', None, None, "malformed_line", []),
        ("o2,p4,,1,1.5", 1, Decimal("1.50"), None, []),
    ], "_raw string, quantity int, unit_price decimal(12,2), _reason string, _issues array<string>")
    assert_df_equality(got, expected, ignore_row_order=True, ignore_nullable=True)


def test_numbers_must_look_like_numbers(spark):
    header = ITEMS.names
    lines = ["o1,p1,home,1.5,1", "o1,p2,home,1,1,5"]
    rows = type_columns(parse_csv(_lines(spark, lines), ITEMS, header), ITEMS)
    assert sorted(r._reason for r in rows.collect()) == ["malformed_line", "type_mismatch:quantity"]


def test_extra_and_missing_columns_are_mapped_by_name_and_noted(spark):
    header = ["user_id", "name", "email", "birth_date", "gender", "city", "signup_date", "acquisition_channel", "tier"]
    lines = [",".join(header), "u1,Zoë Müller,z@x.org,31.02.1990,f,Wien,2024-01-02,email,a"]
    rows = type_columns(parse_csv(_lines(spark, lines), USERS, header), USERS)
    r = rows.collect()[0]
    assert (r.user_id, r.name, r.phone, r.birth_date, r.signup_date, r._reason) == (
        "u1", "Zoë Müller", None, None, date(2024, 1, 2), None)
    # an export from before profiles carried updated_at: noted, the row kept (it is then known from its signup)
    assert sorted(r._issues) == ["extra_column:tier", "missing_column:phone", "missing_column:updated_at",
                                 "type_mismatch:birth_date"]


def test_json_lines_keep_number_text_and_flag_broken_lines(spark):
    lines = ['{"review_id":"r1","user_id":"u1","review_ts":"2024-01-01T10:00:00Z","rating":4,"body":"Génial"}',
             '{"review_id":"r2","user_id":"u1","review_ts":"2024-01-01T10:00:00Z","rating":"five"}',
             '{"review_id":"r3","user_id":"u2","rev',
             '{"review_id":"r4","user_id":null,"review_ts":"2024-01-01T10:00:00Z","rating":3}']
    rows = type_columns(parse_jsonl(_lines(spark, lines), REVIEWS), REVIEWS)
    got = {r._raw[:20]: (r.rating, r._reason) for r in rows.collect()}
    assert sorted(got.values(), key=str) == sorted(
        [(4, None), (None, "type_mismatch:rating"), (None, "malformed_line"), (3, "missing_required:user_id")], key=str)
