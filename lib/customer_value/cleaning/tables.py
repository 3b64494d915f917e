"""Per-table cleaning: bronze frame -> the stages of its silver frame (so counts at each stage can be taken).

Each function is a composition of the steps in `rules`; no I/O. `Stages.silver` is what silver gets;
`Stages.ruled` carries `_reject_reason` for the rows that do not make it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from customer_value.cleaning.pseudonymise import pseudonym
from customer_value.cleaning.rules import (FLAGS, REJECT, Rule, accepted, age_band, amount_rules, apply_rules, cap_at,
                                           drop_exact_duplicates, fill_missing, flag_orphans, latest_by_key,
                                           timestamp_rules, with_flag)
from customer_value.config import CleaningConfig
from customer_value.schemas import RAW_SOURCES


@dataclass(frozen=True)
class Context:
    cleaning: CleaningConfig
    key: bytes
    today: date


@dataclass
class Stages:
    bronze: DataFrame
    deduplicated: DataFrame
    latest: DataFrame
    ruled: DataFrame
    silver: DataFrame


def _empty_flags(df: DataFrame) -> DataFrame:
    return df.withColumn(FLAGS, F.array().cast("array<string>"))


def _newest_first() -> list[Column]:
    return [F.col("_ingested_at").desc(), F.col("_source_file").desc()]


def _stages(bronze: DataFrame, source: str, key: list[str] | None, order: list[Column], rules: list[Rule]) -> tuple:
    dedup = drop_exact_duplicates(bronze, RAW_SOURCES[source].names)
    latest = latest_by_key(dedup, key, order) if key else dedup
    ruled = apply_rules(latest, rules)
    return dedup, latest, ruled


def clean_users(users: DataFrame, ctx: Context) -> Stages:
    """One row per customer; an impossible signup date is nulled and flagged (the customer is real)."""
    c = ctx.cleaning
    dedup, latest, ruled = _stages(users, "users", ["user_id"], _newest_first(), [])
    good = _empty_flags(accepted(ruled))
    bad_signup = (F.col("signup_date") > F.lit(ctx.today)) | (F.col("signup_date") < F.lit(c.shop_opened))
    good = with_flag(good, "signup_date_invalid", bad_signup)
    good = with_flag(good, "birth_date_invalid", F.array_contains(F.col("_issues"), "type_mismatch:birth_date"))
    good = good.withColumn("signup_date", F.when(~bad_signup, F.col("signup_date")))
    good = fill_missing(good, c.fill)
    silver = good.select(
        pseudonym(F.col("user_id"), ctx.key).alias("customer_id"),
        "signup_date",
        age_band(F.col("birth_date"), ctx.today, c.age_bands).alias("age_band"),
        "gender", "city", "acquisition_channel", FLAGS,
    )
    return Stages(users, dedup, latest, ruled, silver)


def clean_orders(orders: DataFrame, known_users: DataFrame, ctx: Context) -> Stages:
    """Latest version of each order; impossible amounts, times and statuses rejected; orphans flagged.
    `total_capped` equals `total` until `cap_totals` applies the outlier cap."""
    c = ctx.cleaning
    rules = [
        *amount_rules("total", c.max_amount),
        Rule("negative_amount:discount", F.col("discount") < 0),
        *timestamp_rules("order_ts", c.shop_opened, ctx.today),
        Rule("invalid_value:status", ~F.col("status").isin(c.statuses)),
    ]
    order = [F.col("updated_at").desc_nulls_last(), *_newest_first()]
    dedup, latest, ruled = _stages(orders, "orders", ["order_id"], order, rules)
    good = flag_orphans(_empty_flags(accepted(ruled)), "user_id", known_users, "user_id")
    good = fill_missing(good, c.fill).withColumn("total_capped", F.col("total"))
    silver = good.select(
        "order_id", pseudonym(F.col("user_id"), ctx.key).alias("customer_id"), "order_ts", "updated_at", "status",
        "payment_method", F.coalesce("discount", F.lit(0).cast("decimal(12,2)")).alias("discount"),
        "total", "total_capped", FLAGS,
    )
    return Stages(orders, dedup, latest, ruled, silver)


def clean_order_items(items: DataFrame, known_orders: DataFrame, ctx: Context) -> Stages:
    c = ctx.cleaning
    rules = [
        Rule("invalid_value:quantity", F.col("quantity") <= 0),
        Rule("absurd_amount:quantity", F.col("quantity") > c.max_quantity),
        *amount_rules("unit_price", c.max_amount),
    ]
    dedup, latest, ruled = _stages(items, "order_items", None, [], rules)
    good = flag_orphans(_empty_flags(accepted(ruled)), "order_id", known_orders, "order_id")
    silver = fill_missing(good, c.fill).select("order_id", "product_id", "category", "quantity", "unit_price", FLAGS)
    return Stages(items, dedup, latest, ruled, silver)


def clean_events(events: DataFrame, known_users: DataFrame, ctx: Context) -> Stages:
    c = ctx.cleaning
    rules = [*timestamp_rules("event_ts", c.shop_opened, ctx.today),
             Rule("invalid_value:event_type", ~F.col("event_type").isin(c.event_types))]
    dedup, latest, ruled = _stages(events, "events", None, [], rules)
    good = flag_orphans(_empty_flags(accepted(ruled)), "user_id", known_users, "user_id")
    silver = good.select(pseudonym(F.col("user_id"), ctx.key).alias("customer_id"), "event_ts", "event_type",
                         "product_id", "session_id", FLAGS)
    return Stages(events, dedup, latest, ruled, silver)


def clean_reviews(reviews: DataFrame, known_users: DataFrame, ctx: Context) -> Stages:
    c = ctx.cleaning
    rules = [Rule("invalid_value:rating", ~F.col("rating").between(1, 5)),
             *timestamp_rules("review_ts", c.shop_opened, ctx.today)]
    dedup, latest, ruled = _stages(reviews, "reviews", ["review_id"], [F.col("review_ts").desc(), *_newest_first()], rules)
    good = flag_orphans(_empty_flags(accepted(ruled)), "user_id", known_users, "user_id")
    silver = good.select("review_id", pseudonym(F.col("user_id"), ctx.key).alias("customer_id"), "order_id",
                         "product_id", "review_ts", "rating", "body", FLAGS)
    return Stages(reviews, dedup, latest, ruled, silver)


def cap_totals(orders: DataFrame, cap: float | None) -> DataFrame:
    """Order totals above `cap` (a quantile of valid totals) capped in `total_capped` and flagged."""
    return cap_at(orders, "total", cap, "total_capped", "outlier:total")


def with_item_counts(orders: DataFrame, items: DataFrame) -> DataFrame:
    """silver.orders gains `item_count`, the quantity of its valid item lines (0 without any): every feature
    job needs it, and computing it once here saves each of them a shuffle-join with the item lines."""
    counts = items.groupBy("order_id").agg(F.sum("quantity").cast("int").alias("item_count"))
    joined = orders.join(counts, "order_id", "left").withColumn("item_count", F.coalesce("item_count", F.lit(0)))
    return joined.select(*[c for c in orders.columns if c != FLAGS], "item_count", FLAGS)


def accepted_keys(stages: Stages, key: str) -> DataFrame:
    """The raw keys of rows that passed, for orphan checks of the tables that refer to them."""
    return stages.ruled.where(F.col(REJECT).isNull()).select(key)


def reject_records(stages: Stages, table: str, source: str) -> DataFrame:
    """Rejected rows as they were in bronze (JSON), with table and reason, for quarantine.rejects."""
    bad = stages.ruled.where(F.col(REJECT).isNotNull())
    return bad.select(
        F.lit(table).alias("table"),
        F.col(REJECT).alias("reason"),
        F.to_json(F.struct(*RAW_SOURCES[source].names)).alias("record"),
        "_source_file", "_batch_id",
    )
