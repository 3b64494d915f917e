"""gold.customer_labels: per customer known before S, what happened in [S, S + H).

The population (who is labelled) is decided from data known before S, like the features. The future is read
from the orders as known just before S + H (`pit.as_of`) through `pit.within`: an order placed in the horizon
counts with the status it had by the horizon's end; nothing recorded at or after S + H changes a label.
Spend is the order `total` (net of discount) of completed orders: the same definition the features use.
"""

from __future__ import annotations

from datetime import date
from typing import Iterable

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from customer_value.features.groups import completed, daily_activity, money_sum, order_facts, population
from customer_value.features.pit import KEYS, SNAPSHOT, as_of, known_before, snapshots_frame, within


def customer_labels_at(customers: DataFrame, orders: DataFrame, events: DataFrame, snapshots: Iterable[date],
                       horizon_days: int) -> DataFrame:
    """Labels at several snapshots in one plan; `customers` and `orders` are the version histories
    (silver.customer_history, silver.order_history)."""
    snaps = snapshots_frame(customers, snapshots)
    known = order_facts(as_of(orders, snaps))
    activity = known_before(daily_activity(events), "day", snaps)
    pop = population(as_of(customers, snaps), known, activity).select(*KEYS)
    at_end = order_facts(as_of(orders, snaps, days_after=horizon_days))
    future = within(at_end, "order_ts", horizon_days).where(completed()).groupBy(*KEYS).agg(
        money_sum("total").alias("future_spend"),
        F.count(F.lit(1)).alias("future_orders"),
    )
    out = pop.join(future, KEYS, "left").fillna(0, subset=["future_spend", "future_orders"])
    return out.select(
        "customer_id", "future_spend", "future_orders", (F.col("future_orders") == 0).alias("churned"),
        F.lit(horizon_days).alias("horizon_days"), SNAPSHOT,
    )


def customer_labels(customers: DataFrame, orders: DataFrame, events: DataFrame, snapshot: date,
                    horizon_days: int) -> DataFrame:
    """Labels at S: `customer_labels_at` of [S]."""
    return customer_labels_at(customers, orders, events, [snapshot], horizon_days)


def training_set(features: DataFrame, labels: DataFrame) -> DataFrame:
    """Features and labels of the same snapshots, joined: one row per customer and snapshot."""
    return features.join(labels.drop("horizon_days"), ["customer_id", "snapshot_date"], "inner")
