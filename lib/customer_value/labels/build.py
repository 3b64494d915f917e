"""gold.customer_labels: per customer known before S, what happened in [S, S + H).

Only `pit.within` reads the orders, so no label sees anything before S or at/after S + H; who is labelled
(the population) is decided from data before S, like the features.
"""

from __future__ import annotations

from datetime import date

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from customer_value.features.groups import completed, order_facts, population
from customer_value.features.pit import within


def customer_labels(customers: DataFrame, orders: DataFrame, events: DataFrame, snapshot: date,
                    horizon_days: int) -> DataFrame:
    facts = order_facts(orders)
    pop = population(customers, facts, events, snapshot).select("customer_id")
    future = within(facts, "order_ts", snapshot, horizon_days).where(completed()).groupBy("customer_id").agg(
        F.sum("total").cast("double").alias("future_spend"),
        F.count(F.lit(1)).alias("future_orders"),
    )
    out = pop.join(future, "customer_id", "left").fillna(0, subset=["future_spend", "future_orders"])
    return out.select(
        "customer_id", "future_spend", "future_orders", (F.col("future_orders") == 0).alias("churned"),
        F.lit(horizon_days).alias("horizon_days"), F.lit(snapshot).alias("snapshot_date"),
    )


def training_set(features: DataFrame, labels: DataFrame) -> DataFrame:
    """Features and labels of the same snapshots, joined: one row per customer and snapshot."""
    return features.join(labels.drop("horizon_days"), ["customer_id", "snapshot_date"], "inner")
