"""Value score, tiers and actions as Spark transformations, and the population stability index."""

from __future__ import annotations

import numpy as np
from chispa import assert_df_equality
from hypothesis import given, settings
from hypothesis import strategies as st
from pyspark.sql import functions as F

from customer_value.config import ActionRule, TierThresholds
from customer_value.scoring import drift
from customer_value.scoring.score import percentile_of, quantile_grid, with_tier_and_action, with_value_score

RULES = [ActionRule(tier="high", churn_risk="high", action="retain"), ActionRule(tier="high", action="vip"),
         ActionRule(tier="mid", action="coupon"), ActionRule(tier="any", action="promo")]


def exact_grid(values: np.ndarray, points: int = 1000) -> np.ndarray:
    """What approxQuantile returns at zero error: order statistics, no interpolation."""
    v = np.sort(values)
    idx = np.clip(np.ceil(np.arange(points + 1) / points * len(v)).astype(int) - 1, 0, len(v) - 1)
    return v[idx]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0, 1e4, allow_nan=False), min_size=20, max_size=400))
def test_value_score_is_the_mid_rank_percentile(values):
    x = np.asarray(values)
    score = percentile_of(x, exact_grid(x))
    assert ((score >= 0) & (score <= 1)).all()
    order = np.argsort(x, kind="stable")
    assert (np.diff(score[order]) >= -1e-12).all()                       # monotone in expected spend
    below = np.searchsorted(np.sort(x), x, "left")
    equal = np.searchsorted(np.sort(x), x, "right") - below
    mid_rank = (below + equal / 2) / len(x)                              # share below + half the ties
    assert np.abs(score - mid_rank).max() <= 2 / len(x) + 2e-3


def test_value_scores_are_uniform_on_a_snapshot(spark):
    rng = np.random.default_rng(1)
    spend = np.concatenate([np.zeros(300), rng.lognormal(3, 1.5, 9700)])
    rng.shuffle(spend)
    df = spark.createDataFrame([(f"c{i}", float(v)) for i, v in enumerate(spend)], "customer_id string, expected_spend double")
    scored = with_value_score(df, quantile_grid(df)).toPandas()
    buyers = scored[scored.expected_spend > 0].value_score.to_numpy()
    counts, _ = np.histogram(buyers, bins=10, range=(0.03, 1.0))
    assert counts.min() > 0.9 * counts.mean() and counts.max() < 1.1 * counts.mean()
    zeros = scored[scored.expected_spend == 0].value_score.unique()
    assert len(zeros) == 1 and abs(zeros[0] - 0.015) < 0.002              # the 3 % that tie share the mid score
    assert abs(np.mean(scored.value_score) - 0.5) < 0.01


def test_tiers_and_actions_follow_the_configuration(spark):
    rows = [("a", 0.95, 0.7), ("b", 0.95, 0.1), ("c", 0.8, 0.9), ("d", 0.6, 0.2), ("e", 0.59, 0.9)]
    df = spark.createDataFrame(rows, "customer_id string, value_score double, churn_probability double")
    got = with_tier_and_action(df, TierThresholds(high=0.8, mid=0.6), 0.5, RULES)
    expected = spark.createDataFrame(
        [(*r, t, k, a) for r, t, k, a in zip(rows, ["high", "high", "mid", "mid", "low"],
                                             ["high", "low", "high", "low", "high"],
                                             ["retain", "vip", "coupon", "coupon", "promo"])],
        "customer_id string, value_score double, churn_probability double, tier string, churn_risk string, action string")
    assert_df_equality(got, expected, ignore_nullable=True)
    stricter = with_tier_and_action(df, TierThresholds(high=0.9, mid=0.7), 0.8, RULES)
    assert [r.tier for r in stricter.orderBy("customer_id").collect()] == ["high", "high", "mid", "low", "low"]
    assert [r.action for r in stricter.orderBy("customer_id").collect()] == ["vip", "vip", "coupon", "promo", "promo"]


def test_psi_of_identical_data_is_zero_and_of_a_shifted_one_crosses_the_threshold(spark):
    rng = np.random.default_rng(2)
    ref = spark.createDataFrame([(float(v), float(w)) for v, w in zip(rng.normal(0, 1, 5000), rng.gamma(2, 1, 5000))],
                                "x double, y double")
    edges = drift.reference_edges(ref, ["x", "y"], 10)
    shares = drift.bin_shares(ref, edges)
    assert all(abs(sum(s.values()) - 1) < 1e-9 for s in shares.values())
    same = drift.bin_shares(ref, edges)
    assert drift.psi(shares["x"], same["x"]) == 0.0 and drift.psi(shares["y"], same["y"]) == 0.0
    shifted = drift.bin_shares(ref.select((F.col("x") + 0.6).alias("x"), (F.col("y") * 1.05).alias("y")), edges)
    assert drift.psi(shares["x"], shifted["x"]) > 0.25                      # a 0.6 sd shift: retrain
    assert drift.psi(shares["y"], shifted["y"]) < 0.1                       # a 5 % rescale: stable
    assert drift.status(drift.psi(shares["x"], shifted["x"]), 0.1, 0.25) == "retrain"
    with_nulls = drift.bin_shares(ref.select(F.when(F.col("x") > 1, None).otherwise(F.col("x")).alias("x")),
                                  {"x": edges["x"]})
    assert with_nulls["x"][drift.NULL_BIN] > 0.1 and drift.psi(shares["x"], with_nulls["x"]) > 0.25


def test_the_value_score_grid_does_not_depend_on_the_layout_of_the_scores(spark):
    """approxQuantile sketches each partition in row order: the same scores in another partitioning and order
    must still give the same grid, so the tiers follow the scores and not the table's files."""
    rng = np.random.default_rng(3)
    spend = np.concatenate([np.zeros(2000), rng.lognormal(3, 1.5, 38000)])
    df = spark.createDataFrame([(f"c{i:06d}", float(v)) for i, v in enumerate(spend)],
                               "customer_id string, expected_spend double").cache()
    layouts = [df.coalesce(1), df.repartition(7).orderBy(F.rand(1)), df.repartition(3, "expected_spend")]
    grids = [quantile_grid(layout, relative_error=1e-3) for layout in layouts]
    assert grids[1] == grids[0] and grids[2] == grids[0]
