"""Evaluation metrics on tiny examples with the arithmetic written out, and properties of the normalised Gini."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.calibration import calibration_curve

from customer_value.evaluation.metrics import (
    paired_difference,
    METRICS,
    calibration,
    churn_metrics,
    decile_mape,
    decile_table,
    evaluate,
    gain_curve,
    normalised_gini,
    oracle_ratios,
    spend_deciles,
    spend_metrics,
    top_decile_share,
)

# ------------------------------------------------------------------ churn
# 10 customers, probabilities already in descending order.
P = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05]
Y = [1, 0, 1, 1, 0, 0, 1, 0, 0, 0]  # churners at ranks 1, 3, 4, 7: 4 positives, 6 negatives


def test_churn_metrics_hand_computed():
    m = churn_metrics(np.array(Y, dtype=bool), P)
    # ROC-AUC = share of (churner, non-churner) pairs ranked right. Non-churners below each churner:
    # 0.9 -> 6, 0.7 -> 5, 0.6 -> 5, 0.3 -> 3 (0.2, 0.1, 0.05): 19 of 4 * 6 = 24 pairs.
    assert m["churn_roc_auc"] == pytest.approx(19 / 24)
    # Average precision = mean over churners of the precision at their rank: (1/1 + 2/3 + 3/4 + 4/7) / 4 = 251/336.
    assert m["churn_pr_auc"] == pytest.approx(251 / 336)
    # Top decile = ceil(10/10) = 1 customer, the 0.9 one, a churner: precision 1/1.
    assert m["churn_precision_top_decile"] == pytest.approx(1.0)
    # F1 = 2 TP / (predicted positives + actual positives) = 2 * 1 / (1 + 4) = 0.4.
    assert m["churn_f1_top_decile"] == pytest.approx(0.4)
    # Brier = mean (p - y)^2 = (.01 + .64 + .09 + .16 + .25 + .16 + .49 + .04 + .01 + .0025) / 10 = 1.8525 / 10.
    assert m["churn_brier"] == pytest.approx(0.18525)
    assert set(m) == {k for k in METRICS if k.startswith("churn_")}


@pytest.mark.parametrize("order", [[0, 1, 2, 3], [0, 3, 2, 1], [0, 2, 3, 1]])
def test_a_tie_at_the_top_decile_cut_counts_fractionally_whatever_the_row_order(order):
    # 11 customers -> k = ceil(11/10) = 2 places. Nobody is above 0.9 (a = 0); three tie at 0.9 (b = 3), two of
    # them churners, so each tied customer holds (k - a) / b = 2/3 of a place. Expected TP = 2 * 2/3 = 4/3:
    # precision = (4/3) / 2 = 2/3; F1 = 2 * (4/3) / (k + churners) = (8/3) / (2 + 3) = 8/15. The old stable sort
    # took the first two tied rows: 1 (both churners) in one order, 1/2 in another.
    p = np.array([0.5, 0.9, 0.9, 0.9] + [0.1] * 7)
    y = np.array([0, 1, 1, 0] + [0] * 6 + [1])
    rows = order + list(range(4, 11))
    m = churn_metrics(y[rows], p[rows])
    assert m["churn_precision_top_decile"] == 2 / 3
    assert m["churn_f1_top_decile"] == 8 / 15
    assert top_decile_share(p[rows]).tolist() == [0.0] + [2 / 3] * 3 + [0.0] * 7


def test_top_decile_counts_the_customers_above_the_cut_fully():
    # 20 customers -> k = 2. One above the cut (0.8, a churner, a = 1), then a tie of four at 0.6 holding one
    # churner for the one place left: share (2 - 1) / 4 = 1/4 each. Expected TP = 1 + 1 * 1/4 = 5/4; churners 3.
    # precision = (5/4) / 2 = 5/8; F1 = 2 * (5/4) / (2 + 3) = 1/2.
    p = np.array([0.8, 0.6, 0.6, 0.6, 0.6] + [0.2] * 15)
    y = np.array([1, 0, 1, 0, 0] + [1] + [0] * 14)
    m = churn_metrics(y, p)
    assert (m["churn_precision_top_decile"], m["churn_f1_top_decile"]) == (5 / 8, 1 / 2)
    assert top_decile_share(p).tolist() == [1.0] + [0.25] * 4 + [0.0] * 15
    assert top_decile_share(p).sum() == 2


def _bits(metrics: dict[str, float]) -> dict[str, str]:
    """Each value as its exact bit pattern (float.hex): == on these is equality to the last digit, NaN included."""
    return {k: float(v).hex() for k, v in metrics.items()}


# Few distinct probabilities and spends (many ties, also at the cuts), and spends with many significant digits
# (sums that depend on the order of the terms).
_rows = st.lists(st.tuples(
    st.floats(0, 500, allow_nan=False) | st.sampled_from([0.0, 1.5, 20.0]),  # predicted spend
    st.sampled_from([0.05, 0.2, 0.3, 0.7, 0.9]) | st.floats(0, 1),          # churn probability
    st.floats(0, 500, allow_nan=False) | st.just(0.0),                      # actual spend
    st.booleans()), min_size=1, max_size=80)


@settings(max_examples=200, deadline=None)
@given(rows=_rows, rnd=st.randoms(use_true_random=False))
def test_every_metric_is_identical_to_the_last_digit_under_any_row_order(rows, rnd):
    frame = pd.DataFrame(rows, columns=["predicted_spend", "churn_probability", "actual_spend", "churned"])
    order = list(range(len(rows)))
    rnd.shuffle(order)
    shuffled = frame.iloc[order].reset_index(drop=True)
    assert _bits(evaluate(shuffled)) == _bits(evaluate(frame))
    assert calibration(shuffled["churned"], shuffled["churn_probability"]).equals(
        calibration(frame["churned"], frame["churn_probability"]))
    assert decile_table(shuffled["actual_spend"], shuffled["predicted_spend"]).equals(
        decile_table(frame["actual_spend"], frame["predicted_spend"]))


def test_sums_of_many_spends_do_not_move_in_the_last_digit_when_rows_are_shuffled():
    # The plain example of the property above: 10,000 customers with continuous spend and probabilities, where a
    # sum in row order differs between permutations (checked here, so the test cannot pass vacuously).
    rng = np.random.default_rng(11)
    n = 10_000
    frame = pd.DataFrame({"predicted_spend": rng.gamma(1.2, 90.0, n), "churn_probability": rng.random(n),
                          "actual_spend": np.where(rng.random(n) < 0.4, 0.0, rng.gamma(1.5, 80.0, n)),
                          "churned": rng.random(n) < 0.3})
    expected = _bits(evaluate(frame))
    for seed in range(8):  # summed in row order, MAE, Gini and top-decile capture moved for 3 of these 8
        shuffled = frame.sample(frac=1.0, random_state=seed)
        assert np.cumsum(frame["actual_spend"].to_numpy())[-1] != np.cumsum(shuffled["actual_spend"].to_numpy())[-1]
        assert _bits(evaluate(shuffled)) == expected


@pytest.mark.parametrize("label", [0, 1])
def test_one_class_gives_nan_aucs_not_an_error(label):
    p = [0.1, 0.2, 0.3, 0.4]
    m = churn_metrics([label] * 4, p)
    assert math.isnan(m["churn_roc_auc"]) and math.isnan(m["churn_pr_auc"])
    # Brier is still defined: mean (p - label)^2.
    # label 0: (.01 + .04 + .09 + .16) / 4 = .075; label 1: (.81 + .64 + .49 + .36) / 4 = .575
    assert m["churn_brier"] == pytest.approx(0.075 if label == 0 else 0.575)


def test_calibration_quantile_bins_hand_computed():
    # 5 quantile bins over the 10 probabilities: edges at the 20/40/60/80th percentiles (linear interpolation)
    # 0.18, 0.36, 0.54, 0.72, so two customers per bin:
    #   {0.05, 0.1}: mean .075, churners 0/2 | {0.2, 0.3}: .25, 1/2 | {0.4, 0.5}: .45, 0/2 |
    #   {0.6, 0.7}: .65, 2/2 | {0.8, 0.9}: .85, 1/2
    table = calibration(Y, P, bins=5)
    assert table.columns.tolist() == ["bin", "mean_predicted", "observed_rate", "count"]
    assert table["bin"].tolist() == [1, 2, 3, 4, 5]
    assert table["mean_predicted"].tolist() == pytest.approx([0.075, 0.25, 0.45, 0.65, 0.85])
    assert table["observed_rate"].tolist() == pytest.approx([0.0, 0.5, 0.0, 1.0, 0.5])
    assert table["count"].tolist() == [2, 2, 2, 2, 2]


def test_calibration_drops_bins_left_empty_by_tied_edges():
    # Eight customers at 0.1: the 20-60th percentile edges are all 0.1, the 80th is 0.1 + 0.2 * (0.5 - 0.1) = 0.18.
    # Everyone at 0.1 falls in bin 1; 0.5 and 0.9 lie above 0.18, in bin 5; bins 2-4 are empty and left out.
    table = calibration([0, 0, 1, 0, 0, 0, 0, 1, 1, 0], [0.1] * 8 + [0.5, 0.9], bins=5)
    assert table["bin"].tolist() == [1, 5]
    assert table["count"].tolist() == [8, 2]
    assert table["mean_predicted"].tolist() == pytest.approx([0.1, 0.7])
    assert table["observed_rate"].tolist() == pytest.approx([2 / 8, 1 / 2])


def test_calibration_on_continuous_scores_has_equal_bins_matching_sklearn():
    rng = np.random.default_rng(3)
    p = rng.beta(2, 5, 1000)
    y = rng.random(1000) < p
    table = calibration(y, p)
    assert table["count"].tolist() == [100] * 10
    observed, predicted = calibration_curve(y, p, n_bins=10, strategy="quantile")
    assert table["observed_rate"].to_numpy() == pytest.approx(observed)
    assert table["mean_predicted"].to_numpy() == pytest.approx(predicted)
    assert table["mean_predicted"].is_monotonic_increasing


# ------------------------------------------------------------------ spend
# 10 customers, total actual spend 200. Sorted by predicted, descending (no ties):
#   predicted 90 60 25 20 15  8  5  3  2  1
#   actual   100 50 20 15 10  0  0  0  0  5
ACTUAL = [100, 0, 50, 20, 0, 10, 5, 0, 15, 0]
PREDICTED = [90, 8, 60, 25, 3, 15, 1, 2, 20, 5]


def test_spend_metrics_hand_computed():
    m = spend_metrics(ACTUAL, PREDICTED)
    # |errors| 10 8 10 5 3 5 4 2 5 5 -> sum 57; squares 100 64 100 25 9 25 16 4 25 25 -> sum 393.
    assert m["spend_mae"] == pytest.approx(5.7)
    assert m["spend_rmse"] == pytest.approx(math.sqrt(39.3))
    # Ranks (average for the four zeros: 2.5). actual: 10 2.5 9 8 2.5 6 5 2.5 7 2.5; predicted: 10 5 9 8 3 6 1 2 7 4.
    # Deviations from 5.5 -> sum of products 67.5, sums of squares 77.5 (actual) and 82.5 (predicted).
    assert m["spend_spearman"] == pytest.approx(67.5 / math.sqrt(77.5 * 82.5))
    # Gain curve, model order: cumulative shares .5 .75 .85 .925 .975 .975 .975 .975 .975 1 (sum 8.9); with steps
    # of 0.1 and y0 = 0, y10 = 1 the trapezoid area is 0.1 * (8.9 - 0.5) = 0.84. Ideal order (100 50 20 15 10 5 0..)
    # gives .5 .75 .85 .925 .975 1 1 1 1 1 (sum 9.0), area 0.85. Gini = (0.84 - 0.5) / (0.85 - 0.5) = 0.34 / 0.35.
    assert m["spend_gini"] == pytest.approx(0.34 / 0.35)
    # Top 10% by prediction = the 90 customer, who spent 100 of 200.
    assert m["spend_top_decile_capture"] == pytest.approx(0.5)
    # One customer per decile; deciles with actual > 0: 10/100, 10/50, 5/20, 5/15, 5/10, 4/5 -> mean of six.
    assert m["spend_decile_mape"] == pytest.approx((0.1 + 0.2 + 0.25 + 1 / 3 + 0.5 + 0.8) / 6)
    # predicted total 229 against an actual 200
    assert m["spend_total_ratio"] == pytest.approx(229 / 200)
    assert math.isnan(spend_metrics([0, 0], [1, 2])["spend_total_ratio"])
    assert set(m) == {k for k in METRICS if k.startswith("spend_")}


def test_gain_curve_runs_straight_through_ties():
    # Sorted by predicted: 60 (p=4), then {10, 30} tied at p=2, then 0 (p=1); total 100.
    x, y = gain_curve([0, 10, 30, 60], [1, 2, 2, 4])
    assert x.tolist() == pytest.approx([0, 0.25, 0.75, 1])
    assert y.tolist() == pytest.approx([0, 0.6, 1.0, 1.0])
    # Area .25*.3 + .5*.8 + .25*1 = .725; ideal (60 30 10 0) area .75; Gini .225/.25 = 0.9, the mean of the
    # two orders within the tie (10 first: 0.8, 30 first: 1.0).
    assert normalised_gini([0, 10, 30, 60], [1, 2, 2, 4]) == pytest.approx(0.9)
    assert normalised_gini([0, 30, 10, 60], [1, 2, 2, 4]) == pytest.approx(0.9)


@pytest.mark.parametrize("order", [[0, 1, 2], [0, 2, 1]])
def test_top_decile_capture_counts_a_tie_at_the_cut_pro_rata(order):
    # 20 customers -> the top 10% is 2 customers. Predicted 5 (spent 10), then a tie at 3 (spent 6 and 2),
    # then 17 at 1 spending 1 each; total 35. Half of the tie is inside: (10 + (6 + 2) / 2) / 35 = 0.4,
    # whichever of the tied two comes first in the input.
    actual = np.array([10, 6, 2] + [1] * 17, dtype=float)
    predicted = np.array([5, 3, 3] + [1] * 17, dtype=float)
    rows = order + list(range(3, 20))
    assert spend_metrics(actual[rows], predicted[rows])["spend_top_decile_capture"] == pytest.approx(0.4)


def test_decile_mape_sums_within_deciles_and_skips_deciles_without_spend():
    # 20 customers, predicted 20..1: decile d holds predicted {22 - 2d, 21 - 2d}.
    predicted = np.arange(20, 0, -1, dtype=float)
    actual = predicted.copy()
    actual[[0, 1]] = [10, 20]  # decile 1: predicted 20 + 19 = 39, actual 30 -> 9/30 = 0.3
    actual[[2, 3]] = [17, 18]  # decile 2: individually wrong, summed right (35 vs 35) -> 0
    actual[[4, 5]] = [0, 0]    # decile 3: no actual spend -> skipped
    # deciles 4-10 exact -> 0. Mean over the 9 deciles with spend: 0.3 / 9.
    rows = np.random.default_rng(0).permutation(20)
    assert decile_mape(actual[rows], predicted[rows]) == pytest.approx(0.3 / 9)
    table = decile_table(actual[rows], predicted[rows])
    assert table.columns.tolist() == ["decile", "mean_predicted", "mean_actual", "customers"]
    assert table["decile"].tolist() == list(range(1, 11))
    assert table["customers"].tolist() == [2] * 10
    assert table["mean_predicted"].tolist()[:3] == pytest.approx([19.5, 17.5, 15.5])
    assert table["mean_actual"].tolist()[:3] == pytest.approx([15.0, 17.5, 0.0])


def test_tied_predictions_share_a_decile():
    # Average ranks 1 2 3 4.5 4.5 6 7 8 9 10 of 10: the two tied at rank 4.5 both land in decile floor(3.5) + 1 = 4.
    predicted = [10, 9, 8, 7, 7, 5, 4, 3, 2, 1]
    assert spend_deciles(predicted).tolist() == [1, 2, 3, 4, 4, 6, 7, 8, 9, 10]


def test_decile_mape_is_nan_without_any_spend():
    assert math.isnan(decile_mape([0, 0, 0], [1, 2, 3]))


# ------------------------------------------------------------------ Gini properties

def _spend(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.where(rng.random(n) < 0.4, 0.0, rng.gamma(1.5, 80.0, n))


@pytest.mark.parametrize("transform", [lambda a: a, lambda a: np.log1p(a) * 3 - 7, lambda a: a ** 2 + 1])
def test_gini_of_a_perfect_ranking_is_one(transform):
    actual = _spend(1000, 1)  # 40% zeros: a tie in both actual and predicted
    assert normalised_gini(actual, transform(actual)) == pytest.approx(1.0)


def test_gini_of_random_predictions_is_about_zero():
    actual = _spend(100_000, 2)
    predicted = np.random.default_rng(3).random(100_000)
    assert abs(normalised_gini(actual, predicted)) < 0.02


def test_gini_of_the_reversed_ranking_is_negative():
    actual = _spend(1000, 4)
    assert normalised_gini(actual, -actual) == pytest.approx(-1.0)  # the mirror image of the ideal curve


@pytest.mark.parametrize("actual", [[0, 0, 0], [5, 5, 5]])
def test_gini_is_nan_when_the_ideal_gains_nothing(actual):
    assert math.isnan(normalised_gini(actual, [1, 2, 3]))


@settings(max_examples=150, deadline=None)
@given(rows=st.lists(st.tuples(st.integers(0, 1000), st.integers(-20, 20)), min_size=2, max_size=60),
       rnd=st.randoms(use_true_random=False))
def test_gini_is_invariant_to_increasing_transforms_and_row_order(rows, rnd):
    # Whole-unit spend (think cents) keeps the cumulative sums exact; narrow predicted range forces ties.
    actual = np.array([a for a, _ in rows], dtype=float)
    predicted = np.array([p for _, p in rows], dtype=float)
    gini = normalised_gini(actual, predicted)
    transformed = normalised_gini(actual, np.exp(predicted / 7) + predicted ** 3)  # strictly increasing
    order = list(range(len(rows)))
    rnd.shuffle(order)
    shuffled = normalised_gini(actual[order], predicted[order])
    for other in (transformed, shuffled):
        assert (math.isnan(gini) and math.isnan(other)) or other == pytest.approx(gini, abs=1e-12)


# ------------------------------------------------------------------ evaluate, oracle, validation

def test_evaluate_merges_churn_and_spend_metrics():
    frame = pd.DataFrame({"predicted_spend": PREDICTED, "churn_probability": P,
                          "actual_spend": ACTUAL, "churned": np.array(Y, dtype=bool)})
    m = evaluate(frame)
    assert set(m) == set(METRICS) - {"interval_coverage_buyers", "interval_coverage"}   # no intervals: no coverage
    assert m == {**churn_metrics(Y, P), **spend_metrics(ACTUAL, PREDICTED)}
    actual = np.asarray(ACTUAL, dtype=float)
    wide = evaluate(frame.assign(spend_if_buying_p10=actual * 0.5, spend_if_buying_p90=actual * 2))
    assert wide["interval_coverage_buyers"] == 1.0 and "interval_coverage" not in wide
    narrow = evaluate(frame.assign(spend_if_buying_p10=actual * 2 + 1, spend_if_buying_p90=actual * 3 + 2))
    assert narrow["interval_coverage_buyers"] == 0.0
    # the interval of the horizon's spend counts every customer, those who bought nothing included
    buyers = actual > 0
    assert 0 < buyers.sum() < len(actual)
    starts_at_zero = evaluate(frame.assign(spend_p10=0.0, spend_p90=actual * 2))
    assert starts_at_zero["interval_coverage"] == 1.0 and "interval_coverage_buyers" not in starts_at_zero
    above_zero = evaluate(frame.assign(spend_p10=actual * 0.5 + 0.01, spend_p90=actual * 2 + 1))
    assert above_zero["interval_coverage"] == pytest.approx(buyers.mean())
    with pytest.raises(ValueError, match="churned"):
        evaluate(frame.drop(columns="churned"))


def test_oracle_ratios():
    model = {"spend_gini": 0.6, "spend_mae": 30.0, "churn_brier": 0.2, "churn_roc_auc": 0.8, "only_model": 1.0}
    oracle = {"spend_gini": 0.8, "spend_mae": 20.0, "churn_brier": 0.0, "churn_roc_auc": float("nan"), "only_oracle": 1}
    r = oracle_ratios(model, oracle)
    assert set(r) == {"spend_gini_vs_oracle", "spend_mae_vs_oracle", "churn_brier_vs_oracle", "churn_roc_auc_vs_oracle"}
    assert r["spend_gini_vs_oracle"] == pytest.approx(0.75)
    assert r["spend_mae_vs_oracle"] == pytest.approx(1.5)
    assert math.isnan(r["churn_brier_vs_oracle"])   # oracle 0
    assert math.isnan(r["churn_roc_auc_vs_oracle"])  # oracle NaN


@pytest.mark.parametrize("call, message", [
    (lambda: churn_metrics([0, 1], [0.5]), "equal length"),
    (lambda: churn_metrics([], []), "non-empty"),
    (lambda: churn_metrics([0, 1], [0.5, float("nan")]), "finite"),
    (lambda: churn_metrics([0, 1], [0.5, 1.2]), r"\[0, 1\]"),
    (lambda: churn_metrics([0, 2], [0.5, 0.2]), "boolean"),
    (lambda: spend_metrics([-1, 2], [1, 2]), "negative"),
])
def test_bad_inputs_are_refused(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_paired_difference_of_two_models_on_the_same_customers():
    rng = np.random.default_rng(5)
    actual = np.where(rng.random(3000) < 0.5, 0.0, rng.exponential(50, 3000))
    good = actual + rng.normal(0, 20, 3000)
    close = good.copy()
    close[:30] = rng.permutation(close[:30])         # 1 % of customers reshuffled: a hair worse
    same = paired_difference(normalised_gini, actual, good, good, resamples=200)
    assert same == {"difference": 0.0, "low": 0.0, "high": 0.0, "resamples": 200}
    lead = paired_difference(normalised_gini, actual, good, rng.permutation(good), resamples=200, seed=1)
    assert 0.5 < lead["low"] <= lead["difference"] <= lead["high"]
    back = paired_difference(normalised_gini, actual, rng.permutation(good), good, resamples=200, seed=1)
    assert back["high"] < 0
    # paired: the customers both models share cancel, so a tiny difference has a tiny interval (resampling the
    # two models' customers independently gives one about 0.03 wide here)
    hair = paired_difference(normalised_gini, actual, good, close, resamples=200, seed=2)
    assert hair["low"] <= hair["difference"] <= hair["high"] and hair["high"] - hair["low"] < 0.01
    assert paired_difference(normalised_gini, actual, good, close, resamples=200, seed=2) == hair
    with pytest.raises(ValueError, match="one entry per customer"):
        paired_difference(normalised_gini, actual, good, good[:-1])
