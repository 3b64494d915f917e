"""Every table's schema, in one module: ingest enforces these, tests build inputs from them."""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import types as T

# The published 10-90 % intervals of a model with a distribution (gold.customer_scores,
# gold.backtest_predictions): of the horizon's spend, no purchase counted as 0 (`ziln.spend_quantile`), and of
# the spend given a purchase (`ziln.spend_quantile_if_buying`).
INTERVALS = ("spend_p10", "spend_p90", "spend_if_buying_p10", "spend_if_buying_p90")


@dataclass(frozen=True)
class Column:
    """One column of a raw export: its name, its type once parsed, and whether a row is unusable without it."""

    name: str
    type: T.DataType
    required: bool = False
    personal: bool = False  # personal data: stops at bronze, never reaches silver


@dataclass(frozen=True)
class RawSource:
    """A raw export as it lands: file format and columns, in the order a standard file has them."""

    name: str
    fmt: str  # "csv" or "jsonl"
    columns: tuple[Column, ...]

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def required(self) -> list[str]:
        return [c.name for c in self.columns if c.required]

    def text_schema(self, corrupt_column: str | None = None) -> T.StructType:
        """Every column as a string (how ingest reads files: no inference; typing is a later, checked step)."""
        fields = [T.StructField(c.name, T.StringType(), True) for c in self.columns]
        if corrupt_column:
            fields.append(T.StructField(corrupt_column, T.StringType(), True))
        return T.StructType(fields)

    def typed_schema(self) -> T.StructType:
        return T.StructType([T.StructField(c.name, c.type, not c.required) for c in self.columns])


MONEY = T.DecimalType(12, 2)
RAW_SOURCES: dict[str, RawSource] = {
    s.name: s
    for s in [
        RawSource("users", "csv", (
            Column("user_id", T.StringType(), required=True, personal=True),
            Column("name", T.StringType(), personal=True),
            Column("email", T.StringType(), personal=True),
            Column("phone", T.StringType(), personal=True),
            Column("birth_date", T.DateType(), personal=True),
            Column("gender", T.StringType()),
            Column("city", T.StringType()),
            Column("signup_date", T.DateType(), required=True),
            Column("acquisition_channel", T.StringType()),
            # when this version of the profile was recorded; older exports without it are read as missing
            Column("updated_at", T.TimestampType()),
        )),
        RawSource("orders", "csv", (
            Column("order_id", T.StringType(), required=True),
            Column("user_id", T.StringType(), required=True, personal=True),
            Column("order_ts", T.TimestampType(), required=True),
            Column("updated_at", T.TimestampType()),
            Column("status", T.StringType(), required=True),
            Column("payment_method", T.StringType()),
            Column("discount", MONEY),
            Column("total", MONEY, required=True),
        )),
        RawSource("order_items", "csv", (
            Column("order_id", T.StringType(), required=True),
            Column("product_id", T.StringType(), required=True),
            Column("category", T.StringType()),
            Column("quantity", T.IntegerType(), required=True),
            Column("unit_price", MONEY, required=True),
        )),
        RawSource("events", "jsonl", (
            Column("user_id", T.StringType(), required=True, personal=True),
            Column("event_ts", T.TimestampType(), required=True),
            Column("event_type", T.StringType(), required=True),
            Column("product_id", T.StringType()),
            Column("session_id", T.StringType()),
        )),
        RawSource("reviews", "jsonl", (
            Column("review_id", T.StringType(), required=True),
            Column("user_id", T.StringType(), required=True, personal=True),
            Column("order_id", T.StringType()),
            Column("product_id", T.StringType()),
            Column("review_ts", T.TimestampType(), required=True),
            Column("rating", T.IntegerType(), required=True),
            Column("body", T.StringType()),
            Column("updated_at", T.TimestampType()),
        )),
    ]
}

SMOKE_CUSTOMERS = T.StructType(
    [
        T.StructField("customer_id", T.StringType(), False),
        T.StructField("tier", T.StringType(), True),
        T.StructField("spend", T.DoubleType(), True),
    ]
)
