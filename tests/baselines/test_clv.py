"""BG/NBD + Gamma-Gamma on the feature table: Gamma-Gamma's repeat-purchase convention, by hand and in the fit,
and a fit that is the same, bit for bit, however Spark partitions the features."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import functions as F

from customer_value.baselines.btyd import BgNbd, GammaGamma, fit_gamma_gamma, simulate_bgnbd, simulate_gamma_gamma
from customer_value.baselines.clv import ClvModel, fit_clv, predict_frame, repeat_mean, spend_sample

FEATURES = ("customer_id string, frequency_days long, bgnbd_x long, bgnbd_t_x int, bgnbd_T int, "
            "monetary_total double, monetary_first double")
TRUE_BG = BgNbd(r=0.9, alpha=30.0, a=1.0, b=12.0)   # in days, about the synthetic shop's
TRUE_GG = GammaGamma(p=6.0, q=3.5, gamma=40.0)


# ------------------------------------------------------------------ the convention, by hand

def test_repeat_mean_leaves_the_first_purchase_out():
    # total 70 over 3 purchase days, 10 of it on the first: the 2 repeat days average (70 - 10) / 2 = 30.
    # x = 0: no repeat purchase, m unused (0). Free repeat orders: (15 - 15) / 1 = 0; rounding below 0 reads as 0.
    m = repeat_mean([70.0, 25.0, 15.0, 15.0], [10.0, 25.0, 15.0, 15.0 + 1e-12], [2, 0, 1, 1])
    assert m.tolist() == [30.0, 0.0, 0.0, 0.0]


def test_spend_per_purchase_is_conditioned_on_the_repeat_purchases():
    # Gamma-Gamma p = 2, q = 3, gamma = 10: population mean p gamma / (q - 1) = 10, and for x repeat purchases
    # of mean m, E[spend per purchase] = p (gamma + x m) / (p x + q - 1).
    #   a: 3 purchase days (x = 2), total 70, first day 10: m = 30 -> 2 (10 + 2 * 30) / (4 + 2) = 70/3
    #      (the first purchase included, 70/3 over 3 days, would give 2 (10 + 70) / (6 + 2) = 20)
    #   b: first purchase only (x = 0): the population mean, 10 (the old rule: m = 25 over 1 day, 17.5)
    #   c: x = 1 repeat day that cost nothing: m = 0 -> 2 * 10 / (2 + 2) = 5
    model = ClvModel(TRUE_BG, GammaGamma(p=2.0, q=3.0, gamma=10.0), customers=3, distinct_rows=3, spend_rows=2)
    pdf = pd.DataFrame({"customer_id": ["a", "b", "c"], "frequency_days": [3, 1, 2], "bgnbd_x": [2, 0, 1],
                        "bgnbd_t_x": [40, 0, 10], "bgnbd_T": [100, 30, 60], "monetary_total": [70.0, 25.0, 15.0],
                        "monetary_first": [10.0, 25.0, 15.0]})
    out = predict_frame(model, 90, pdf)
    assert (out["expected_orders"] > 0).all()
    per_purchase = out["predicted_spend"] / out["expected_orders"]
    assert per_purchase.tolist() == pytest.approx([70 / 3, 10.0, 5.0], rel=1e-12)


# ------------------------------------------------------------------ the fit

@pytest.fixture(scope="module")
def simulated():
    """2,000 buyers from BG/NBD + Gamma-Gamma in days, with a first purchase unlike the repeat ones (a welcome
    offer: 5 to 24), and 50 customers without a purchase (features zero, monetary_first null)."""
    rng = np.random.default_rng(7)
    n = 2_000
    T = rng.integers(60, 400, n)
    x, t_x = simulate_bgnbd(TRUE_BG, T.astype(float), rng)
    m = np.round(simulate_gamma_gamma(TRUE_GG, x, rng), 2)       # mean repeat spend, 0 where x = 0
    first = 5.0 + rng.integers(0, 20, n)
    rows = pd.DataFrame({"customer_id": [f"c{i:05d}" for i in range(n)], "frequency_days": x + 1, "bgnbd_x": x,
                         "bgnbd_t_x": np.floor(t_x).astype(int), "bgnbd_T": T.astype(int),
                         "monetary_total": first + x * m, "monetary_first": first.astype(object)})
    prospects = pd.DataFrame({"customer_id": [f"p{i:03d}" for i in range(50)], "frequency_days": 0, "bgnbd_x": 0,
                              "bgnbd_t_x": 0, "bgnbd_T": 0, "monetary_total": 0.0,
                              "monetary_first": pd.Series([None] * 50, dtype=object)})
    return pd.concat([rows, prospects], ignore_index=True), x, m


@pytest.fixture(scope="module")
def features(spark, simulated):
    frame, _, _ = simulated
    out = spark.createDataFrame(frame, FEATURES).cache()
    assert out.where(F.col("monetary_first").isNull()).count() == 50  # null, not NaN, as in the features
    return out


def test_gamma_gamma_is_fitted_on_the_mean_of_the_repeat_purchases(features, simulated):
    # Reference: the Gamma-Gamma fit on (x, m) as generated (p 6.43, q 3.41, gamma 36.3; simulated with 6, 3.5,
    # 40). The old rule, first purchase included (x + 1 days, total / (x + 1)), fitted p 3.51, q 3.79, gamma 61.5.
    _, x, m = simulated
    want = fit_gamma_gamma(x[x >= 1], m[x >= 1])
    got = fit_clv(features).gamma_gamma
    assert (got.p, got.q, got.gamma) == pytest.approx((want.p, want.q, want.gamma), rel=1e-6)


def test_fit_is_identical_to_the_last_digit_however_spark_partitions_the_features(features):
    # max_customers below the number of repeat buyers, so the Gamma-Gamma sample matters
    one, seven = (fit_clv(features.repartition(k, "customer_id") if k > 1 else features.repartition(1),
                          max_customers=400) for k in (1, 7))
    assert one.spend_rows == 400
    assert one == seven  # dataclass equality: every parameter as the same double


def test_the_spend_sample_is_the_smallest_seeded_hashes_of_the_repeat_buyers(features, simulated):
    frame, x, m = simulated
    sample = spend_sample(features.repartition(7, "customer_id"), max_customers=300, seed=7)
    keys = (features.where((F.col("bgnbd_x") >= 1) & (F.col("monetary_total") > F.col("monetary_first")))
            .select("customer_id", F.xxhash64("customer_id", F.lit(7)).alias("k")).toPandas()
            .sort_values(["k", "customer_id"]))
    assert sample["customer_id"].tolist() == keys["customer_id"].tolist()[:300]
    assert spend_sample(features.repartition(1), 300, 7).equals(sample)
    other_seed = spend_sample(features, 300, 8)
    assert set(other_seed["customer_id"]) != set(sample["customer_id"])
    ids = frame["customer_id"].tolist()
    rows = [ids.index(c) for c in sample["customer_id"]]
    assert sample["x"].tolist() == x[rows].astype(float).tolist()
    assert sample["m"].to_numpy() == pytest.approx(m[rows], rel=1e-12)


def test_fits_of_several_snapshots_at_once_are_each_snapshots_own_fit_to_the_last_digit(features):
    # two snapshots: all the customers at one, a part of them at the other, and one snapshot with no buyer; the
    # joint fit (two Spark jobs for all) must give each snapshot exactly what `fit_clv` on it alone gives
    from datetime import date

    from customer_value.baselines.clv import fit_clv_per_snapshot

    a, b, none = date(2025, 1, 1), date(2025, 4, 1), date(2025, 7, 1)
    at_a = features.withColumn("snapshot_date", F.lit(a))
    at_b = features.where(F.col("customer_id") < "c01200").withColumn("snapshot_date", F.lit(b))
    at_none = features.where(F.col("frequency_days") == 0).withColumn("snapshot_date", F.lit(none))
    both = at_a.unionByName(at_b).unionByName(at_none).repartition(5, "customer_id")
    fits = fit_clv_per_snapshot(both, [a, b, none], max_customers=400)
    assert fits[none] is None
    assert fits[a] == fit_clv(at_a, max_customers=400)
    assert fits[b] == fit_clv(at_b, max_customers=400)
    assert fits[a] != fits[b]
