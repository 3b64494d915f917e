"""Feature groups: each a pure function of silver frames and the snapshot, returning one row per customer_id.

Inputs are silver rows tagged with the snapshot S each is read for (`snapshot_date`; versioned tables read
`pit.as_of` each S by the caller), and every group returns one row per (snapshot_date, customer_id): one Spark
job computes all of a run's snapshots. Every group reads its rows through `pit.before`, so nothing at or after
a row's snapshot can reach a feature. Spend is the
order `total` (net of discount) of completed orders, as the labels count it. Counts are 0 when a customer has no
rows; recency-like values stay null.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from customer_value.features.pit import KEYS, SNAPSHOT, before, days_before, days_since, in_window, snapshot, start_of
from customer_value.features.text import sentiment



def cents(amount) -> Column:
    """Money as whole cents: sums of integers are exact, so a rerun (rows in another order) gives the same
    figure to the last digit, where sums of doubles differ in the last bits."""
    column = F.col(amount) if isinstance(amount, str) else amount
    return F.round(column * 100).cast("long")


def money_sum(amount) -> Column:
    """Exact sum of money (via cents), as a double."""
    return F.sum(cents(amount)) / 100.0


def completed():
    """Completed orders: the only ones that count as spend."""
    return F.col("status") == "completed"


def order_facts(orders: DataFrame) -> DataFrame:
    """Orders of known customers (orphans excluded), with their item count as `items` and amounts as doubles.

    Silver keeps money as decimal(12, 2); their sums are decimal(22, 2), which Spark adds through
    java.math.BigDecimal (beyond 18 digits), several times slower than doubles. Features and labels are
    doubles anyway, so the cast happens once, here."""
    money = {c: F.col(c).cast("double") for c in ("total", "discount")}
    return orders.where(~F.array_contains("dq_flags", "orphan")).withColumnRenamed("item_count", "items").withColumns(money)


def population(customers: DataFrame, orders: DataFrame, activity: DataFrame) -> DataFrame:
    """Customers known before S: signed up before S, or (signup date unknown) active before S.

    `activity`: the behaviour days (`daily_activity`) tagged with their snapshots (`pit.known_before`)."""
    first_order = before(orders, "order_ts").groupBy(*KEYS).agg(F.min("order_ts").alias("first_order"))
    first_event = before(activity, "day").groupBy(SNAPSHOT, expand_id("customer_id").alias("customer_id")).agg(
        F.min("day").alias("first_event"))
    joined = customers.join(first_order, KEYS, "left").join(first_event, KEYS, "left")
    first_seen = F.coalesce(F.col("signup_date"), F.least(F.to_date("first_order"), F.col("first_event")))
    return joined.where(first_seen < snapshot()).select(*KEYS, first_seen.alias("first_seen"))


def rfm(orders: DataFrame) -> DataFrame:
    """Recency, frequency, monetary value of completed orders, the first purchase day's spend (Gamma-Gamma
    models the repeat purchases only), and BG/NBD's x, t_x, T (in days).

    Reduced to one row per customer and purchase day first, so distinct days are a plain count."""
    done = before(orders, "order_ts").where(completed())
    daily = done.groupBy(*KEYS, F.to_date("order_ts").alias("day")).agg(
        F.count(F.lit(1)).alias("n"), F.sum(cents("total")).alias("spend"), F.max("total").alias("top"))
    return daily.groupBy(*KEYS).agg(
        days_since(F.max("day")).alias("recency_days"),
        F.sum("n").alias("frequency_orders"),
        F.count(F.lit(1)).alias("frequency_days"),
        (F.sum("spend") / 100.0).alias("monetary_total"),
        (F.sum("spend") / F.sum("n") / 100.0).alias("monetary_mean"),
        F.max("top").cast("double").alias("monetary_max"),
        (F.min_by("spend", "day") / 100.0).alias("monetary_first"),
        (F.count(F.lit(1)) - 1).alias("bgnbd_x"),
        F.datediff(F.max("day"), F.min("day")).alias("bgnbd_t_x"),
        days_since(F.min("day")).alias("bgnbd_T"),
    )


def order_windows(orders: DataFrame, windows: Sequence[int]) -> DataFrame:
    """Per trailing window: orders, spend, items, discount share, cancellations, returns; trends vs the
    window before; slope of the daily spend rate over the windows (per log-day of window length)."""
    longest = 2 * max(windows)
    recent = before(orders, "order_ts", longest)
    aggs = []
    for w in windows:
        now, prev = in_window("order_ts", w), in_window("order_ts", w, offset_days=w)
        done_now = now & completed()
        aggs += [
            F.count(F.when(now, 1)).alias(f"orders_{w}d"),
            F.coalesce(money_sum(F.when(done_now, F.col("total"))), F.lit(0.0)).alias(f"spend_{w}d"),
            F.coalesce(F.sum(F.when(done_now, F.col("items"))), F.lit(0)).cast("long").alias(f"items_{w}d"),
            (F.sum(F.when(done_now, cents(F.col("discount")))) / F.sum(F.when(done_now, cents(F.col("total") + F.col("discount")))))
            .cast("double").alias(f"discount_share_{w}d"),
            F.count(F.when(now & (F.col("status") == "cancelled"), 1)).alias(f"cancellations_{w}d"),
            F.count(F.when(now & (F.col("status") == "returned"), 1)).alias(f"returns_{w}d"),
            F.coalesce(money_sum(F.when(prev & completed(), F.col("total"))), F.lit(0.0)).alias(f"_spend_prev_{w}d"),
        ]
    out = recent.groupBy(*KEYS).agg(*aggs)
    for w in windows:
        out = out.withColumn(f"spend_trend_{w}d", F.col(f"spend_{w}d") - F.col(f"_spend_prev_{w}d")).drop(f"_spend_prev_{w}d")
    logs = [math.log(w) for w in windows]
    mean_log = sum(logs) / len(logs)
    var_log = sum((x - mean_log) ** 2 for x in logs) or 1.0
    rates = [F.col(f"spend_{w}d") / w for w in windows]
    mean_rate = sum(rates) / len(rates)
    slope = sum((x - mean_log) * (r - mean_rate) for x, r in zip(logs, rates)) / var_log
    return out.withColumn("spend_rate_slope", slope.cast("double"))


def inter_purchase(orders: DataFrame) -> DataFrame:
    """Gaps between purchase days: mean, std, and time since the last purchase over the usual gap."""
    days = before(orders, "order_ts").where(completed()).select(*KEYS, F.to_date("order_ts").alias("day")).distinct()
    gaps = days.withColumn("gap", F.datediff("day", F.lag("day").over(Window.partitionBy(*KEYS).orderBy("day"))))
    out = gaps.groupBy(*KEYS).agg(
        F.avg("gap").alias("ipt_mean_days"),
        F.stddev_samp("gap").alias("ipt_std_days"),
        days_since(F.max("day")).alias("_recency"),
    )
    return out.withColumn("since_last_over_usual", F.col("_recency") / F.col("ipt_mean_days")).drop("_recency")


def compact_id(customer_id: str) -> Column:
    """Silver's pseudonyms (lowercase hex) as raw bytes: half the bytes to hash, compare and shuffle when
    grouping millions of events by customer; `expand_id` gives back the same string."""
    return F.unhex(customer_id)


def expand_id(compact: str) -> Column:
    return F.lower(F.hex(compact))


EVENT_TYPES = {"page_views": "page_view", "searches": "search", "favourites": "favourite", "cart_adds": "cart_add"}


def daily_activity(events: DataFrame) -> DataFrame:
    """The events reduced to one row per customer (compact id) and day: sessions that day and a count per event
    type. Independent of S (a day is before S or not, as S is a midnight), so it is computed once for all of a
    run's snapshots, then tagged with the snapshots each day precedes (`pit.known_before(..., "day", ...)`).

    A session is counted on each day it is active (split at midnight, as web analytics counts sessions): one
    row per customer, day and session first, then per day. Two small shuffles after the first partial
    aggregation; COUNT(DISTINCT ...) per window would instead copy every event once per expression."""
    per_session_day = events.groupBy(
        compact_id("customer_id").alias("customer_id"), F.to_date("event_ts").alias("day"), "session_id").agg(
        *[F.count(F.when(F.col("event_type") == t, 1)).alias(name) for name, t in EVENT_TYPES.items()])
    return per_session_day.groupBy("customer_id", "day").agg(
        *[F.sum(name).alias(name) for name in EVENT_TYPES], F.count("session_id").alias("sessions"))


def behaviour(activity: DataFrame, windows: Sequence[int]) -> DataFrame:
    """Per window: sessions, page views, searches, favourites, cart adds, active days; days since last activity.

    `activity`: `daily_activity` tagged with the snapshots (`pit.known_before`); the windows are plain sums over
    its days."""
    since = {w: F.col("day") >= F.date_sub(snapshot(), w) for w in windows}
    return before(activity, "day").groupBy(SNAPSHOT, expand_id("customer_id").alias("customer_id")).agg(
        *[F.coalesce(F.sum(F.when(since[w], F.col(name))), F.lit(0)).alias(f"{name}_{w}d")
          for w in windows for name in ("sessions", *EVENT_TYPES)],
        *[F.count(F.when(since[w], 1)).alias(f"days_active_{w}d") for w in windows],
        days_since(F.max("day")).alias("last_active_days"),
    )


def conversion(features: DataFrame, windows: Sequence[int]) -> DataFrame:
    """Cart-to-order conversion per window from the assembled order and behaviour counts (null without cart
    adds): derived after the join, so neither group reads the other's table."""
    for w in windows:
        features = features.withColumn(f"cart_to_order_{w}d", (F.col(f"orders_{w}d") / F.col(f"cart_adds_{w}d")).cast("double"))
    return features


def review_features(reviews: DataFrame) -> DataFrame:
    """Review count, mean rating and mean sentiment of the review texts."""
    return before(reviews, "review_ts").groupBy(*KEYS).agg(
        F.count(F.lit(1)).alias("review_count"),
        F.avg("rating").alias("rating_mean"),
        F.avg(sentiment(F.col("body"))).alias("review_sentiment"),
    )


def category_mix(orders: DataFrame, items: DataFrame) -> DataFrame:
    """Number of categories bought, the top category's share of items, and the entropy of the mix."""
    done = before(orders, "order_ts").where(completed()).select(SNAPSHOT, "order_id", "customer_id")
    per_cat = done.join(items, "order_id").groupBy(*KEYS, "category").agg(F.sum("quantity").alias("q"))
    total = Window.partitionBy(*KEYS)
    shares = per_cat.withColumn("p", F.col("q") / F.sum("q").over(total))
    return shares.groupBy(*KEYS).agg(
        F.count(F.lit(1)).alias("category_count"),
        F.max("p").cast("double").alias("top_category_share"),
        (-F.sum(F.col("p") * F.log(F.col("p")))).cast("double").alias("category_entropy"),
    )


def age_band(birth_month: Column, at: Column, bands: Sequence[int]) -> Column:
    """'18-24', ..., '65+': the age at the snapshot from the birth month (silver keeps no birth date; within the
    birth month itself the age may be a year early); 'unknown' without one or outside the bands."""
    age = F.floor(F.months_between(at, birth_month) / 12)
    expr = F.lit("unknown")
    edges = list(bands)
    for low, high in reversed(list(zip(edges, edges[1:] + [None]))):
        label = f"{low}+" if high is None else f"{low}-{high - 1}"
        cond = (age >= low) if high is None else ((age >= low) & (age < high))
        expr = F.when(cond, F.lit(label)).otherwise(expr)
    return F.when(birth_month.isNull(), F.lit("unknown")).otherwise(expr)


def static(customers: DataFrame, city_tiers: Mapping[str, int], age_bands: Sequence[int]) -> DataFrame:
    """Age band at S, gender, city tier, acquisition channel and signup cohort (year-quarter), from the profile
    as known at S."""
    tier = F.lit("3")
    for city, t in city_tiers.items():
        tier = F.when(F.col("city") == city, F.lit(str(t))).otherwise(tier)
    tier = F.when(F.col("city").isNull() | (F.col("city") == "unknown"), F.lit("unknown")).otherwise(tier)
    cohort = F.when(F.col("signup_date").isNotNull(),
                    F.concat(F.year("signup_date").cast("string"), F.lit("Q"), F.quarter("signup_date").cast("string")))
    return customers.select(*KEYS, age_band(F.col("birth_month"), snapshot(), age_bands).alias("age_band"),
                            "gender", tier.alias("city_tier"), "acquisition_channel",
                            F.coalesce(cohort, F.lit("unknown")).alias("signup_cohort"))


def order_sequence(orders: DataFrame, length: int) -> DataFrame:
    """The last `length` completed orders, newest first, as aligned arrays: days before S, amount, items."""
    done = before(orders, "order_ts").where(completed())
    rows = F.struct(F.col("order_ts").alias("ts"), F.col("order_id").alias("id"),
                    F.col("total").cast("double").alias("amount"), F.col("items").cast("int").alias("items"))
    seq = done.groupBy(*KEYS).agg(F.slice(F.sort_array(F.collect_list(rows), asc=False), 1, length).alias("_seq"))
    return seq.select(
        *KEYS,
        F.transform("_seq", lambda o: days_before(o["ts"])).alias("seq_days_before"),
        F.transform("_seq", lambda o: o["amount"]).alias("seq_amount"),
        F.transform("_seq", lambda o: o["items"]).alias("seq_items"),
    )


def shop_season(orders: DataFrame, horizon_days: int) -> DataFrame:
    """The shop's seasonal index for the horizon ahead, one row per snapshot: completed spend of all customers in
    last year's same window [S - 365, S - 365 + H), over the mean H-day spend of the year before S
    ([S - 365, S) × H / 365). Above 1: the coming weeks sold more than a typical stretch last year (a peak
    season ahead). Null without a full year of orders before S. Every input is before S: the index is as known
    at S, like every feature.

    Why a shop-level index rather than the calendar: a model learns "what the next H days usually hold" from a
    handful of training snapshots only through a quantity that generalises across years and shops; a raw day
    of year would have to be mapped to a level from those few points and would extrapolate at S."""
    year_ago = F.date_sub(snapshot(), 365)
    window = F.col("order_ts") >= start_of(year_ago)
    same = window & (F.col("order_ts") < start_of(F.date_add(year_ago, horizon_days)))
    per = (before(orders, "order_ts").where(completed()).groupBy(SNAPSHOT)
           .agg(F.min(F.to_date("order_ts")).alias("first"),
                F.sum(F.when(same, cents(F.col("total")))).alias("same"),
                F.sum(F.when(window, cents(F.col("total")))).alias("year")))
    index = F.coalesce(F.col("same"), F.lit(0)).cast("double") / (F.col("year").cast("double") * horizon_days / 365.0)
    unknown = F.col("first").isNull() | (F.col("first") > year_ago) | F.coalesce(F.col("year") == 0, F.lit(True))
    return per.select(SNAPSHOT, F.when(unknown, F.lit(None).cast("double")).otherwise(index).alias("shop_season_index"))
