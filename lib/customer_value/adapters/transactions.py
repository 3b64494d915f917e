"""A plain transactions file (customer, date, amount, maybe quantity and order id), as many shops and public
CLV data sets have, mapped onto the landing layout: users derived from customers, one order per transaction
(or per order id), one item line per order, no events or reviews. The rest of the pipeline runs unchanged.

Values that do not parse are passed through as they were, so that ingest quarantines them with a reason:
the adapter drops nothing.
"""

from __future__ import annotations

import re

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from customer_value.config import TransactionsConfig
from customer_value.ingest.parse import number_sized
from customer_value.synthetic.process import ITEM_COLUMNS, ORDER_COLUMNS, USER_COLUMNS

WHITESPACE = "whitespace"


def read_transactions(spark: SparkSession, path: str, tx: TransactionsConfig) -> DataFrame:
    """All columns as strings, named from the header, or c0, c1, ... without one. No schema inference."""
    if tx.separator != WHITESPACE:
        return spark.read.csv(path, sep=tx.separator, header=tx.header, inferSchema=False, mode="PERMISSIVE")
    lines = spark.read.text(path).select(F.trim("value").alias("value")).where(F.col("value") != "")
    first = lines.first()
    if first is None:
        raise ValueError(f"{path}: the transactions file is empty")
    width = len(re.split(r"\s+", first.value))
    names = re.split(r"\s+", first.value) if tx.header else [f"c{i}" for i in range(width)]
    if tx.header:
        lines = lines.where(F.col("value") != first.value)
    parts = F.split("value", r"\s+")
    return lines.select(*[parts.getItem(i).alias(name) for i, name in enumerate(names)])


def _col(df: DataFrame, name: str | None, what: str) -> Column | None:
    if name is None:
        return None
    if name not in df.columns:
        raise ValueError(f"transactions column {name!r} (for {what}) not in the file; columns: {', '.join(df.columns)}")
    return F.col(name)


def standardise(raw: DataFrame, tx: TransactionsConfig) -> DataFrame:
    """customer_id, day (parsed, or null), day_raw, amount_raw, quantity_raw, order_id (given or null)."""
    c = tx.columns
    quantity = _col(raw, c.quantity, "quantity")
    order_id = _col(raw, c.order_id, "order_id")
    return raw.select(
        F.trim(_col(raw, c.customer_id, "customer_id")).alias("customer_id"),
        F.to_date(F.try_to_timestamp(F.trim(_col(raw, c.date, "date")), F.lit(tx.date_format))).alias("day"),
        F.trim(_col(raw, c.date, "date")).alias("day_raw"),
        F.trim(_col(raw, c.amount, "amount")).alias("amount_raw"),
        (F.trim(quantity) if quantity is not None else F.lit("1")).alias("quantity_raw"),
        (F.trim(order_id) if order_id is not None else F.lit(None).cast("string")).alias("order_id"),
    )


def with_order_ids(tx: DataFrame) -> DataFrame:
    """Transactions without an order id get `t<customer>-<yyyymmdd>-<n>`: stable across reruns."""
    seq = F.row_number().over(Window.partitionBy("customer_id", "day_raw").orderBy("amount_raw", "quantity_raw"))
    generated = F.concat_ws("-", F.concat(F.lit("t"), "customer_id"), F.regexp_replace("day_raw", "[^0-9]", ""), seq)
    return tx.withColumn("order_id", F.coalesce("order_id", generated))


def _ts(day: Column, raw: Column) -> Column:
    return F.coalesce(F.date_format(day, "yyyy-MM-dd 00:00:00"), raw)


def parsed_amount() -> Column:
    """The amount as decimal(18, 2); null where it is not one (then passed on as raw text for ingest to
    quarantine), a text too long to be a number included without parsing it (`number_sized`)."""
    return F.when(number_sized(F.col("amount_raw")), F.col("amount_raw").cast("decimal(18,2)"))


def to_orders(tx: DataFrame) -> DataFrame:
    """One completed order per order id; the total is the sum of its amounts (raw text where one fails to parse)."""
    amount = parsed_amount()
    grouped = tx.groupBy("order_id").agg(
        F.first("customer_id").alias("user_id"),
        F.min("day").alias("day"),
        F.min("day_raw").alias("day_raw"),
        F.sum(amount).alias("amount"),
        F.count(F.when(amount.isNull(), 1)).alias("bad_amounts"),
        F.first(F.when(amount.isNull(), F.col("amount_raw")), ignorenulls=True).alias("bad_amount"),
    )
    total = F.when(F.col("bad_amounts") > 0, F.col("bad_amount")).otherwise(F.col("amount").cast("string"))
    return grouped.select(
        "order_id",
        "user_id",
        _ts(F.col("day"), F.col("day_raw")).alias("order_ts"),
        _ts(F.col("day"), F.col("day_raw")).alias("updated_at"),
        F.lit("completed").alias("status"),
        F.lit(None).cast("string").alias("payment_method"),
        F.lit("0.00").alias("discount"),
        total.alias("total"),
    ).select(*ORDER_COLUMNS)


def to_items(tx: DataFrame) -> DataFrame:
    """One item line per transaction; unit price = amount / quantity."""
    amount = parsed_amount()
    qty = F.col("quantity_raw").cast("int")
    unit = F.when(qty > 0, F.round(amount / qty, 2).cast("string")).otherwise(F.col("amount_raw"))
    return tx.select(
        "order_id",
        F.lit("unknown").alias("product_id"),
        F.lit("unknown").alias("category"),
        F.col("quantity_raw").alias("quantity"),
        F.coalesce(unit, F.col("amount_raw")).alias("unit_price"),
    ).select(*ITEM_COLUMNS)


def to_users(tx: DataFrame) -> DataFrame:
    """One user per customer; signup = first transaction date. No personal data exists in such files."""
    users = tx.groupBy("customer_id").agg(F.min("day").alias("first_day"), F.min("day_raw").alias("first_raw"))
    blank = F.lit(None).cast("string")
    return users.select(
        F.col("customer_id").alias("user_id"),
        blank.alias("name"),
        blank.alias("email"),
        blank.alias("phone"),
        blank.alias("birth_date"),
        blank.alias("gender"),
        blank.alias("city"),
        F.coalesce(F.date_format("first_day", "yyyy-MM-dd"), F.col("first_raw")).alias("signup_date"),
        F.lit("unknown").alias("acquisition_channel"),
        _ts(F.col("first_day"), F.col("first_raw")).alias("updated_at"),
    ).select(*USER_COLUMNS)


class TransactionsFileError(ValueError):
    """The transactions file cannot be read as text at all (empty, binary, corrupt gzip, UTF-16): named, with the
    reason, before anything is written."""


def adapt(spark: SparkSession, path: str, tx: TransactionsConfig) -> dict[str, DataFrame]:
    """The landing sources a transactions file becomes. A file unreadable as a whole is refused with its reason
    (nothing written); bad rows pass through to ingest, which quarantines each with its own."""
    from customer_value.ingest.screen import screen
    from customer_value.landing import Location

    loc = Location.of(path)
    if loc.fs.get_file_info(loc.path).is_file:
        problem = screen(path)
        if problem:
            raise TransactionsFileError(f"{path}: {problem.replace('_', ' ')}; nothing was written")
    std = with_order_ids(standardise(read_transactions(spark, path, tx), tx)).cache()
    return {"users": to_users(std), "orders": to_orders(std), "order_items": to_items(std)}


def write_landing(sources: dict[str, DataFrame], landing: str) -> dict[str, int]:
    """Each source as CSV files with a header under <landing>/<source>/, replacing what was there."""
    counts = {}
    for source, df in sources.items():
        df.write.mode("overwrite").option("header", True).option("emptyValue", "").csv(f"{landing}/{source}")
        counts[source] = df.count()
    return counts
