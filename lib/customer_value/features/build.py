"""Assemble the feature groups into one row per customer known before the snapshot."""

from __future__ import annotations

from datetime import date
from typing import Iterable

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from customer_value.config import FeaturesConfig
from customer_value.features import groups as g
from customer_value.features.catalogue import catalogue
from customer_value.features.pit import KEYS, SNAPSHOT, as_of, days_since, known_before, snapshots_frame

ZERO_WHEN_ABSENT = ("frequency_", "monetary_total", "bgnbd_", "orders_", "spend_", "items_", "cancellations_",
                    "returns_", "sessions_", "page_views_", "searches_", "favourites_", "cart_adds_", "days_active_",
                    "review_count", "category_count")


def customer_features_at(customers: DataFrame, orders: DataFrame, items: DataFrame, events: DataFrame,
                         reviews: DataFrame, snapshots: Iterable[date], cfg: FeaturesConfig) -> DataFrame:
    """gold.customer_features for several snapshots (without writing them), in one plan: rows per
    (customer_id, snapshot_date), each snapshot's exactly what it would be computed alone.

    `customers`, `orders` and `reviews` are the version histories (silver.*_history): each is read as it was
    known just before each S, so a later status change, correction, profile edit or late row cannot reach S."""
    snaps = snapshots_frame(customers, snapshots)
    customers, orders, reviews = (as_of(h, snaps) for h in (customers, orders, reviews))
    facts = g.order_facts(orders)
    activity = known_before(g.daily_activity(events), "day", snaps)
    pop = g.population(customers, facts, activity)
    parts = [
        g.rfm(facts),
        g.order_windows(facts, cfg.windows),
        g.inter_purchase(facts),
        g.behaviour(activity, cfg.windows),
        g.review_features(reviews),
        g.category_mix(facts, items),
        g.static(customers, cfg.city_tiers, cfg.age_bands),
        g.order_sequence(facts, cfg.sequence_length),
    ]
    out = pop.withColumn("tenure_days", days_since(F.col("first_seen"))).drop("first_seen")
    for part in parts:
        out = out.join(part, KEYS, "left")
    names = [d.name for d in catalogue(cfg)]
    zero = [n for n in names if n.startswith(ZERO_WHEN_ABSENT)]
    out = g.conversion(out.fillna(0, subset=zero), cfg.windows)
    out = out.join(F.broadcast(g.shop_season(facts, cfg.horizon_days)), SNAPSHOT, "left")
    empty = F.array().cast("array<int>")
    out = out.withColumn("seq_days_before", F.coalesce("seq_days_before", empty)) \
             .withColumn("seq_amount", F.coalesce("seq_amount", F.array().cast("array<double>"))) \
             .withColumn("seq_items", F.coalesce("seq_items", empty))
    return out.select("customer_id", *names, SNAPSHOT)


def customer_features(customers: DataFrame, orders: DataFrame, items: DataFrame, events: DataFrame,
                      reviews: DataFrame, snapshot: date, cfg: FeaturesConfig) -> DataFrame:
    """gold.customer_features for one snapshot (without writing it): `customer_features_at` of [S]."""
    return customer_features_at(customers, orders, items, events, reviews, [snapshot], cfg)
