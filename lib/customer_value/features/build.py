"""Assemble the feature groups into one row per customer known before the snapshot."""

from __future__ import annotations

from datetime import date

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from customer_value.config import FeaturesConfig
from customer_value.features import groups as g
from customer_value.features.catalogue import catalogue
from customer_value.features.pit import as_of

ZERO_WHEN_ABSENT = ("frequency_", "monetary_total", "bgnbd_", "orders_", "spend_", "items_", "cancellations_",
                    "returns_", "sessions_", "page_views_", "searches_", "favourites_", "cart_adds_", "days_active_",
                    "review_count", "category_count")


def customer_features(customers: DataFrame, orders: DataFrame, items: DataFrame, events: DataFrame,
                      reviews: DataFrame, snapshot: date, cfg: FeaturesConfig) -> DataFrame:
    """gold.customer_features for one snapshot (without writing it).

    `customers`, `orders` and `reviews` are the version histories (silver.*_history): each is read as it was
    known just before S, so a later status change, correction, profile edit or late row cannot reach S."""
    customers, orders, reviews = (as_of(h, snapshot) for h in (customers, orders, reviews))
    facts = g.order_facts(orders)
    pop = g.population(customers, facts, events, snapshot)
    parts = [
        g.rfm(facts, snapshot),
        g.order_windows(facts, snapshot, cfg.windows),
        g.inter_purchase(facts, snapshot),
        g.behaviour(events, snapshot, cfg.windows),
        g.review_features(reviews, snapshot),
        g.category_mix(facts, items, snapshot),
        g.static(customers, snapshot, cfg.city_tiers, cfg.age_bands),
        g.order_sequence(facts, snapshot, cfg.sequence_length),
    ]
    out = pop.withColumn("tenure_days", F.datediff(F.lit(snapshot), F.col("first_seen"))).drop("first_seen")
    for part in parts:
        out = out.join(part, "customer_id", "left")
    names = [d.name for d in catalogue(cfg)]
    zero = [n for n in names if n.startswith(ZERO_WHEN_ABSENT)]
    out = g.conversion(out.fillna(0, subset=zero), cfg.windows)
    out = out.withColumn("shop_season_index", g.shop_season(facts, snapshot, cfg.horizon_days))
    empty = F.array().cast("array<int>")
    out = out.withColumn("seq_days_before", F.coalesce("seq_days_before", empty)) \
             .withColumn("seq_amount", F.coalesce("seq_amount", F.array().cast("array<double>"))) \
             .withColumn("seq_items", F.coalesce("seq_items", empty))
    return out.select("customer_id", *names, F.lit(snapshot).alias("snapshot_date"))
