"""Each feature group on tiny inputs with hand-computed answers (chispa). Snapshot S = 2024-03-01."""

from __future__ import annotations

import math
from datetime import date, datetime

import pytest
from chispa import assert_approx_df_equality, assert_df_equality

from pyspark.sql import functions as F

from customer_value.cleaning.pseudonymise import DEMO_KEY, hmac_hex
from customer_value.config import load_config
from customer_value.features import groups as g
from customer_value.features.build import customer_features
from customer_value.features.catalogue import POINT_IN_TIME, catalogue, markdown
from customer_value.features.pit import as_of, known_before
from customer_value.labels.build import customer_labels, training_set
from tests.conftest import ROOT
from tests.features.tiny import customer, event, frames, item, order, review

S = date(2024, 3, 1)
ORDERS = [
    order("o1", "c1", datetime(2024, 2, 1, 10), 100.0, discount=25.0, items=3),
    order("o2", "c1", datetime(2024, 2, 20, 9), 50.0),
    order("o3", "c1", datetime(2024, 2, 25, 8), 70.0, status="cancelled", items=5),
    order("o4", "c1", datetime(2024, 3, 1, 0), 999.0),             # at S: not a feature, a label
    order("o5", "c2", datetime(2023, 12, 1, 12), 40.0, status="returned"),
    order("o6", "c9", datetime(2024, 2, 10), 10.0, flags=["orphan"]),  # unknown customer: ignored
]
ITEMS = [item("o1", "home", 2), item("o1", "books", 1), item("o2", "home", 1), item("o3", "toys", 5), item("o4", "home", 1)]


def facts(orders):
    """The order facts as known at S, tagged with S: what the order groups read."""
    return g.order_facts(as_of(orders, S))


def activity(events):
    """The behaviour days before S, tagged with S: what `behaviour` and `population` read."""
    return known_before(g.daily_activity(events), "day", S)


@pytest.fixture()
def tiny(spark):
    return frames(spark, customers=[customer("c1"), customer("c2", city="Gotham"), customer("c3", signup=date(2024, 3, 1))],
                  orders=ORDERS, items=ITEMS)


def test_population_is_customers_known_before_the_snapshot(spark, tiny):
    customers, orders, items, events, _ = tiny
    pop = g.population(as_of(customers, S), g.order_facts(as_of(orders, S)), activity(events)).select("customer_id")
    assert sorted(r.customer_id for r in pop.collect()) == ["c1", "c2"]  # c3 signs up on S itself


def test_rfm(spark, tiny):
    _, orders, items, _, _ = tiny
    out = g.rfm(facts(orders)).drop("snapshot_date")
    expected = spark.createDataFrame(
        [("c1", 10, 2, 2, 150.0, 75.0, 100.0, 100.0, 1, 19, 29)],   # first purchase day: o1 (100)
        "customer_id string, recency_days int, frequency_orders long, frequency_days long, monetary_total double, "
        "monetary_mean double, monetary_max double, monetary_first double, bgnbd_x long, bgnbd_t_x int, bgnbd_T int")
    assert_df_equality(out, expected, ignore_nullable=True, ignore_row_order=True)


def test_order_windows_and_trends(spark, tiny):
    _, orders, items, _, _ = tiny
    out = g.order_windows(facts(orders), [7, 30]).where("customer_id = 'c1'")
    r = out.collect()[0].asDict()
    # 7 days = [Feb 23, Mar 1): only the cancelled o3; 30 days = [Jan 31, Mar 1): o1, o2, o3
    assert (r["orders_7d"], r["spend_7d"], r["cancellations_7d"], r["items_7d"]) == (1, 0.0, 1, 0)
    assert (r["orders_30d"], r["spend_30d"], r["items_30d"], r["cancellations_30d"], r["returns_30d"]) == (3, 150.0, 4, 1, 0)
    assert r["discount_share_30d"] == pytest.approx(25.0 / 175.0)
    assert r["discount_share_7d"] is None
    # the 7 days before the last 7 ([Feb 16, Feb 23)) had o2 (50); the 30 before the last 30 had nothing
    assert (r["spend_trend_7d"], r["spend_trend_30d"]) == (-50.0, 150.0)
    logs = [math.log(7), math.log(30)]
    rates = [0.0, 150.0 / 30]
    slope = (rates[1] - rates[0]) / (logs[1] - logs[0])
    assert r["spend_rate_slope"] == pytest.approx(slope)
    c2 = g.order_windows(facts(orders), [7, 30]).where("customer_id = 'c2'").collect()
    assert c2 == []  # c2's only order is older than twice the longest window


def test_inter_purchase(spark, tiny):
    _, orders, items, _, _ = tiny
    out = g.inter_purchase(facts(orders)).drop("snapshot_date")
    expected = spark.createDataFrame([("c1", 19.0, None, 10 / 19)],
                                     "customer_id string, ipt_mean_days double, ipt_std_days double, since_last_over_usual double")
    assert_approx_df_equality(out, expected, 1e-9, ignore_nullable=True)


def test_behaviour(spark):
    customers, orders, items, events, _ = frames(spark, customers=[customer("c1")], orders=[
        order("o1", "c1", datetime(2024, 2, 28, 12), 10.0)], events=[
        event("c1", datetime(2024, 2, 28, 10), "page_view", "s1"),
        event("c1", datetime(2024, 2, 28, 10, 1), "cart_add", "s1"),
        event("c1", datetime(2024, 2, 28, 10, 2), "cart_add", "s1"),
        event("c1", datetime(2024, 2, 10, 9), "search", "s2"),
        event("c1", datetime(2024, 2, 10, 9, 5), "favourite", "s2"),
        event("c1", datetime(2024, 3, 1, 0, 0), "cart_add", "s3"),   # at S: invisible
    ])
    r = g.behaviour(activity(events), [7, 30]).collect()[0].asDict()
    assert (r["sessions_7d"], r["page_views_7d"], r["cart_adds_7d"], r["searches_7d"], r["days_active_7d"]) == (1, 1, 2, 0, 1)
    assert (r["sessions_30d"], r["searches_30d"], r["favourites_30d"], r["days_active_30d"]) == (2, 1, 1, 2)
    assert r["last_active_days"] == 2


def test_a_session_over_midnight_counts_on_both_days(spark):
    *_, events, _ = frames(spark, events=[
        event("c1", datetime(2024, 2, 20, 23, 58), "page_view", "s1"),
        event("c1", datetime(2024, 2, 21, 0, 3), "page_view", "s1"),
        event("c1", datetime(2024, 2, 21, 9), "search", "s2"),
        event("c1", datetime(2024, 2, 21, 9, 1), "search", None),   # no session: counted as an event, not a session
    ])
    r = g.behaviour(activity(events), [9, 30]).collect()[0].asDict()
    assert (r["sessions_9d"], r["days_active_9d"], r["page_views_9d"], r["searches_9d"]) == (2, 1, 1, 2)
    assert (r["sessions_30d"], r["days_active_30d"], r["page_views_30d"]) == (3, 2, 2)


def test_conversion_is_orders_per_cart_add(spark):
    df = spark.createDataFrame([("c1", 1, 2), ("c2", 0, 3), ("c3", 2, 0)], "customer_id string, orders_7d long, cart_adds_7d long")
    out = g.conversion(df, [7]).select("customer_id", "cart_to_order_7d")
    expected = spark.createDataFrame([("c1", 0.5), ("c2", 0.0), ("c3", None)], "customer_id string, cart_to_order_7d double")
    assert_df_equality(out, expected, ignore_nullable=True, ignore_row_order=True)


def test_reviews_and_sentiment(spark):
    *_, reviews = frames(spark, reviews=[
        review("r1", "c1", datetime(2024, 2, 1), 5, "Excellent! Love it."),
        review("r2", "c1", datetime(2024, 2, 2), 1, "Terrible, broke after a day."),
        review("r3", "c1", datetime(2024, 3, 2), 1, "Awful."),  # after S
    ])
    out = g.review_features(as_of(reviews, S)).drop("snapshot_date")
    expected = spark.createDataFrame([("c1", 2, 3.0, 0.0)], "customer_id string, review_count long, rating_mean double, review_sentiment double")
    assert_df_equality(out, expected, ignore_nullable=True)


def test_category_mix(spark, tiny):
    _, orders, items, _, _ = tiny
    out = g.category_mix(facts(orders), items).drop("snapshot_date")
    # completed before S: o1 (home 2, books 1), o2 (home 1): home 3/4, books 1/4
    entropy = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    expected = spark.createDataFrame([("c1", 2, 0.75, entropy)],
                                     "customer_id string, category_count long, top_category_share double, category_entropy double")
    assert_approx_df_equality(out, expected, 1e-9, ignore_nullable=True)


def test_static(spark, tiny):
    customers, *_ = tiny
    out = g.static(as_of(customers, S), {"Berlin": 1}, [18, 25, 35]).where("customer_id != 'c3'").drop("snapshot_date")
    expected = spark.createDataFrame([("c1", "25-34", "f", "1", "email", "2024Q1"), ("c2", "25-34", "f", "3", "email", "2024Q1")],
                                     "customer_id string, age_band string, gender string, city_tier string, acquisition_channel string, signup_cohort string")
    assert_df_equality(out, expected, ignore_nullable=True, ignore_row_order=True)


def test_age_band_is_the_age_at_the_snapshot(spark):
    df = spark.createDataFrame([(date(2000, 6, 1),), (date(1960, 6, 1),), (date(2010, 1, 1),), (None,)], "birth date")
    bands = [18, 25, 35, 45, 55, 65]
    at = lambda s: [r.band for r in df.select(g.age_band(F.col("birth"), F.lit(s), bands).alias("band")).collect()]  # noqa: E731
    # born June 2000 (1960): 24 (64) on 2025-05-31, 25 (65) from 2025-06-01; 2010: under 18
    assert at(date(2025, 5, 31)) == ["18-24", "55-64", "unknown", "unknown"]
    assert at(date(2025, 6, 1)) == ["25-34", "65+", "unknown", "unknown"]
    assert at(date(2024, 12, 31)) == ["18-24", "55-64", "unknown", "unknown"]


def test_versions_are_read_as_known_before_the_snapshot(spark):
    """An order placed before S, returned after S: at S it is the completed version; at S + 30 the returned one."""
    placed, back = datetime(2024, 2, 25, 10), datetime(2024, 3, 10, 9)
    rows = [("o1", placed, "completed", placed, back), ("o1", placed, "returned", back, None),
            ("o2", placed, "completed", datetime(2024, 3, 2), None),        # late: recorded after S
            ("o3", placed, "completed", placed, datetime(2024, 3, 1))]      # replaced exactly at S: still valid
    df = spark.createDataFrame(rows, "order_id string, order_ts timestamp, status string, valid_from timestamp, valid_to timestamp")
    at_s = {r.order_id: r.status for r in as_of(df, S).collect()}
    assert at_s == {"o1": "completed", "o3": "completed"}
    later = {r.order_id: r.status for r in as_of(df, date(2024, 3, 31)).collect()}
    assert later == {"o1": "returned", "o2": "completed"}


def test_order_sequence_newest_first_and_aligned(spark, tiny):
    _, orders, items, _, _ = tiny
    out = g.order_sequence(facts(orders), length=1).drop("snapshot_date")
    expected = spark.createDataFrame([("c1", [10], [50.0], [1])],
                                     "customer_id string, seq_days_before array<int>, seq_amount array<double>, seq_items array<int>")
    assert_df_equality(out, expected, ignore_nullable=True)
    full = g.order_sequence(facts(orders), length=20).collect()[0]
    assert (full.seq_days_before, full.seq_amount, full.seq_items) == ([10, 29], [50.0, 100.0], [1, 3])


def test_labels_use_only_the_horizon(spark, tiny):
    customers, orders, items, events, _ = tiny
    out = customer_labels(customers, orders, events, S, horizon_days=90)
    expected = spark.createDataFrame([("c1", 999.0, 1, False, 90, S), ("c2", 0.0, 0, True, 90, S)],
                                     "customer_id string, future_spend double, future_orders long, churned boolean, horizon_days int, snapshot_date date")
    assert_df_equality(out, expected, ignore_nullable=True, ignore_row_order=True)


def test_assembled_features_match_the_catalogue_and_the_docs(spark, tiny):
    cfg = load_config(ROOT / "conf" / "local.yaml").features
    customers, orders, items, events, reviews = tiny
    out = customer_features(customers, orders, items, events, reviews, S, cfg)
    assert out.columns == ["customer_id", *[d.name for d in catalogue(cfg)], "snapshot_date"]
    rows = {r.customer_id: r for r in out.collect()}
    assert set(rows) == {"c1", "c2"}
    assert (rows["c2"].frequency_orders, rows["c2"].spend_30d, rows["c2"].recency_days, rows["c2"].seq_amount) == (0, 0.0, None, [])
    assert rows["c1"].tenure_days == 60
    assert (ROOT / "docs" / "features.md").read_text() == markdown(cfg), "regenerate: customer-value feature-catalogue > docs/features.md"
    assert {d.group for d in catalogue(cfg)} == set(POINT_IN_TIME), "every group says how it respects S"
    labels = customer_labels(customers, orders, events, S, 90)
    assert training_set(out, labels).count() == 2


def test_compact_ids_round_trip_pseudonyms(spark):
    ids = [hmac_hex(DEMO_KEY, f"u{i}") for i in range(500)]
    df = spark.createDataFrame([(i,) for i in ids], "customer_id string")
    back = df.select(g.expand_id(g.compact_id("customer_id")).alias("customer_id"), F.octet_length(g.compact_id("customer_id")).alias("n"))
    assert_df_equality(back.select("customer_id"), df, ignore_nullable=True)
    assert {r.n for r in back.collect()} == {32}


def test_shop_season_index_compares_last_years_window_with_a_typical_one(spark):
    from datetime import datetime

    s = date(2025, 3, 1)
    rows = [("a", datetime(2024, 2, 1), 100.0, "completed"),     # before the year: only proves a full year exists
            ("a", datetime(2024, 3, 10), 300.0, "completed"),    # in last year's [S - 365, S - 365 + 30)
            ("b", datetime(2024, 3, 20), 50.0, "cancelled"),     # not spend
            ("b", datetime(2024, 8, 1), 600.0, "completed"),     # in the year, outside the window
            ("c", datetime(2025, 3, 5), 9999.0, "completed")]    # at/after S: never seen
    orders = spark.createDataFrame(rows, "customer_id string, order_ts timestamp, total double, status string")
    got = g.shop_season(known_before(orders, "order_ts", s), 30).collect()[0]["shop_season_index"]
    assert got == pytest.approx(300.0 / (900.0 * 30 / 365))
    # without a full year of orders before S: unknown, not a guess
    young = orders.where("order_ts >= '2024-03-01'")
    assert g.shop_season(known_before(young, "order_ts", s), 30).collect()[0]["shop_season_index"] is None
