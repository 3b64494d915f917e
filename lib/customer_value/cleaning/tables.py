"""Per-table cleaning: bronze frame -> the stages of its silver frame (so counts at each stage can be taken).

Each function is a composition of the steps in `rules` and `history`; no I/O. `Stages.silver` is what the
current-state silver table gets, `Stages.history` (keyed sources) every version; `Stages.ruled` carries
`_reject_reason` for the rows that do not make it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Mapping

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from customer_value.cleaning.history import VALID_FROM, VALID_TO, current, known_from, versions
from customer_value.cleaning.pseudonymise import pseudonym
from customer_value.cleaning.rules import (FLAGS, REJECT, Rule, accepted, amount_rules, apply_rules,
                                           drop_exact_duplicates, fill_missing, flag_above, flag_orphans,
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
    """`silver` is the current state silver gets; `history` (keyed tables) every version with `valid_from` /
    `valid_to`; `ruled` carries `_reject_reason` for the rows that do not make it."""

    bronze: DataFrame
    deduplicated: DataFrame
    ruled: DataFrame
    silver: DataFrame
    history: DataFrame | None = None


def _empty_flags(df: DataFrame) -> DataFrame:
    return df.withColumn(FLAGS, F.array().cast("array<string>"))


def _newest_first() -> list[Column]:
    return [F.col("_ingested_at").desc(), F.col("_source_file").desc()]


def _stages(bronze: DataFrame, source: str, rules: list[Rule]) -> tuple[DataFrame, DataFrame]:
    """Exact duplicates dropped, then every row (every version) checked: a bad correction is rejected on its own
    and the versions before it stay."""
    dedup = drop_exact_duplicates(bronze, RAW_SOURCES[source].names)
    return dedup, apply_rules(dedup, rules)


def _versioned(good: DataFrame, key: str, known_at: Column, content: list[str], columns: list[str]) -> DataFrame:
    """The history of the good rows (`columns` plus `valid_from`, `valid_to`)."""
    history = versions(good.select(*columns, "_ingested_at", "_source_file", known_at.alias("_known")), [key],
                       F.col("_known"), content, _newest_first())
    return history.select(*columns, VALID_FROM, VALID_TO)


def clean_users(users: DataFrame, ctx: Context) -> Stages:
    """One history per customer (a profile edit is a new version); an impossible signup date is nulled and
    flagged (the customer is real). The birth date stops here: silver keeps its month, so ages can be taken at
    any snapshot without holding the date itself."""
    c = ctx.cleaning
    dedup, ruled = _stages(users, "users", [])
    good = _empty_flags(accepted(ruled))
    bad_signup = (F.col("signup_date") > F.lit(ctx.today)) | (F.col("signup_date") < F.lit(c.shop_opened))
    good = with_flag(good, "signup_date_invalid", bad_signup)
    good = with_flag(good, "birth_date_invalid", F.array_contains(F.col("_issues"), "type_mismatch:birth_date"))
    good = good.withColumn("signup_date", F.when(~bad_signup, F.col("signup_date")))
    good = fill_missing(good, c.fill).withColumns({
        "customer_id": pseudonym(F.col("user_id"), ctx.key), "birth_month": F.trunc("birth_date", "month")})
    content = ["signup_date", "birth_month", "gender", "city", "acquisition_channel"]
    known = known_from(F.col("updated_at"), F.col("signup_date").cast("timestamp"), F.lit(c.shop_opened).cast("timestamp"))
    history = _versioned(good, "customer_id", known, content, ["customer_id", *content, "updated_at", FLAGS])
    return Stages(users, dedup, ruled, current(history), history)


def clean_orders(orders: DataFrame, known_customers: DataFrame, ctx: Context) -> Stages:
    """Every version of each order (status changes, corrections), known from its `updated_at`; impossible
    amounts, times and statuses rejected version by version; orphans flagged."""
    c = ctx.cleaning
    rules = [
        *amount_rules("total", c.max_amount),
        Rule("negative_amount:discount", F.col("discount") < 0),
        *timestamp_rules("order_ts", c.shop_opened, ctx.today),
        Rule("invalid_value:status", ~F.col("status").isin(c.statuses)),
    ]
    dedup, ruled = _stages(orders, "orders", rules)
    good = _empty_flags(accepted(ruled)).withColumn("customer_id", pseudonym(F.col("user_id"), ctx.key))
    good = flag_orphans(good, "customer_id", known_customers, "customer_id")
    good = fill_missing(good, c.fill).withColumn("discount", F.coalesce("discount", F.lit(0).cast("decimal(12,2)")))
    content = ["customer_id", "order_ts", "status", "payment_method", "discount", "total"]
    columns = ["order_id", "customer_id", "order_ts", "updated_at", "status", "payment_method", "discount", "total", FLAGS]
    history = _versioned(good, "order_id", known_from(F.col("updated_at"), F.col("order_ts")), content, columns)
    return Stages(orders, dedup, ruled, current(history), history)


def clean_order_items(items: DataFrame, known_orders: DataFrame, ctx: Context) -> Stages:
    c = ctx.cleaning
    rules = [
        Rule("invalid_value:quantity", F.col("quantity") <= 0),
        Rule("absurd_amount:quantity", F.col("quantity") > c.max_quantity),
        *amount_rules("unit_price", c.max_amount),
    ]
    dedup, ruled = _stages(items, "order_items", rules)
    good = flag_orphans(_empty_flags(accepted(ruled)), "order_id", known_orders, "order_id")
    silver = fill_missing(good, c.fill).select("order_id", "product_id", "category", "quantity", "unit_price", FLAGS)
    return Stages(items, dedup, ruled, silver)


def clean_events(events: DataFrame, known_customers: DataFrame, ctx: Context) -> Stages:
    c = ctx.cleaning
    rules = [*timestamp_rules("event_ts", c.shop_opened, ctx.today),
             Rule("invalid_value:event_type", ~F.col("event_type").isin(c.event_types))]
    dedup, ruled = _stages(events, "events", rules)
    good = _empty_flags(accepted(ruled)).withColumn("customer_id", pseudonym(F.col("user_id"), ctx.key))
    good = flag_orphans(good, "customer_id", known_customers, "customer_id")
    silver = good.select("customer_id", "event_ts", "event_type", "product_id", "session_id", FLAGS)
    return Stages(events, dedup, ruled, silver)


def clean_reviews(reviews: DataFrame, known_customers: DataFrame, ctx: Context) -> Stages:
    """Every version of each review (an edited rating is a new version, known from its `updated_at`)."""
    c = ctx.cleaning
    rules = [Rule("invalid_value:rating", ~F.col("rating").between(1, 5)),
             *timestamp_rules("review_ts", c.shop_opened, ctx.today)]
    dedup, ruled = _stages(reviews, "reviews", rules)
    good = _empty_flags(accepted(ruled)).withColumn("customer_id", pseudonym(F.col("user_id"), ctx.key))
    good = flag_orphans(good, "customer_id", known_customers, "customer_id")
    content = ["customer_id", "order_id", "product_id", "review_ts", "rating", "body"]
    columns = ["review_id", *content, "updated_at", FLAGS]
    history = _versioned(good, "review_id", known_from(F.col("updated_at"), F.col("review_ts")), content, columns)
    return Stages(reviews, dedup, ruled, current(history), history)


def flag_outliers(orders: DataFrame, cap: float | None) -> DataFrame:
    """Current orders whose total is above `cap` (a quantile of valid totals) flagged `outlier:total`: a
    data-quality signal for analysts over the whole history. No feature or label reads it (a statistic over
    all history would reach back into the past); amounts stay as they were."""
    return flag_above(orders, "total", cap, "outlier:total")


def with_item_counts(orders: DataFrame, items: DataFrame) -> DataFrame:
    """silver.orders gains `item_count`, the quantity of its valid item lines (0 without any): every feature
    job needs it, and computing it once here saves each of them a shuffle-join with the item lines."""
    counts = items.groupBy("order_id").agg(F.sum("quantity").cast("int").alias("item_count"))
    joined = orders.join(counts, "order_id", "left").withColumn("item_count", F.coalesce("item_count", F.lit(0)))
    rest = [c for c in orders.columns if c not in (FLAGS, VALID_FROM, VALID_TO)]
    return joined.select(*rest, "item_count", FLAGS, *[c for c in (VALID_FROM, VALID_TO) if c in orders.columns])


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


def silver_stages(bronze: Mapping[str, DataFrame], ctx: Context, known: "Known | None" = None) -> dict[str, Stages]:
    """Every source's stages from the bronze frames (by source name), in dependency order: orphans are checked
    against the accepted customers and orders (with `known`, also against those silver already holds: an
    incremental run's slice of bronze refers to customers and orders of earlier batches), and orders (history
    and current) carry their item counts."""
    stages = {"users": clean_users(bronze["users"], ctx)}
    known_customers = stages["users"].silver.select("customer_id")
    if known is not None:
        known_customers = known_customers.unionByName(known.customers)
    orders = stages["orders"] = clean_orders(bronze["orders"], known_customers, ctx)
    known_orders = accepted_keys(orders, "order_id")
    if known is not None:
        known_orders = known_orders.unionByName(known.orders)
    stages["order_items"] = clean_order_items(bronze["order_items"], known_orders, ctx)
    orders.history = with_item_counts(orders.history, stages["order_items"].silver)
    orders.silver = current(orders.history)
    stages["events"] = clean_events(bronze["events"], known_customers, ctx)
    stages["reviews"] = clean_reviews(bronze["reviews"], known_customers, ctx)
    return stages


@dataclass(frozen=True)
class Known:
    """Keys silver already holds outside an incremental run's slice: `customers` (customer_id) and `orders`
    (order_id) that rows of the slice may refer to."""

    customers: DataFrame
    orders: DataFrame
