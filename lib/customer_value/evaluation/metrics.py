"""Evaluation metrics for the churn probability and the predicted spend over the horizon.

Inputs are 1-D arrays of equal length, one entry per customer. Everything here is a pure function of them, so the
same numbers come out for the model and for the oracle (the true expectation on synthetic data), and a model can
be reported as a share of the oracle's score with `oracle_ratios`.

Same rows in any order -> the same metrics, bit for bit. Two things would break that, and both are handled:
- Ties. Any rule that takes "the first k" of a ranking breaks ties by row order, so every cut through a block of
  equal scores is made fractionally (below), and average ranks are used where ranks are needed.
- Float sums. A sum of doubles depends on the order of its terms in the last bits (and scipy/sklearn sum in
  row order). Every metric therefore first puts its rows in one canonical order, sorted by their own values
  (`_canonical`), so the same multiset of rows is always summed in the same order; -0.0 is read as 0.0.
  Spark returns rows in no fixed order (`toPandas()` of a shuffled frame), so this is what makes `backtest` and
  `evaluate` agree to the last digit.

Conventions:
- "Top decile" of churn probability: k = ceil(n / 10) customers (the brief of the churn campaign is "call that
  many people"). Customers scored strictly above the k-th highest probability are in it; the block of b customers
  tied at that probability has k - a places left (a = customers strictly above), so each of them counts as
  (k - a) / b of a call. True positives = churners above + (churners in the block) * (k - a) / b, predicted
  positives = k. Precision = TP / k and F1 = 2 TP / (k + churners) are linear in TP, so these are exactly the
  expected precision and F1 when the tie is broken uniformly at random; with no tie at the cut they are the
  plain top-k values. They are computed from integer counts with a single division, so they are exact too.
- Spend ranking (gain curve, Gini, top-decile capture): customers with equal predicted spend form one block, and
  the curve runs straight through the block. That is the average over every order within the tie, so the result
  does not depend on the row order; with no ties it is the plain per-customer curve.
- Spend deciles: decile 1 holds the highest predicted spend. A customer's decile is taken from their average rank,
  so tied customers share a decile (deciles may then differ in size) and the row order does not matter.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
from scipy.stats import ConstantInputWarning, rankdata, spearmanr
from sklearn.calibration import calibration_curve
from sklearn.metrics import (
    auc,
    average_precision_score,
    brier_score_loss,
    mean_absolute_error,
    roc_auc_score,
    root_mean_squared_error,
)

NAN = float("nan")

# name: (which way is better, what it measures) -- used by the report for highlighting and the table.
METRICS: dict[str, tuple[str, str]] = {
    "churn_roc_auc": ("higher", "ROC-AUC of the churn probability"),
    "churn_pr_auc": ("higher", "average precision (PR-AUC) of the churn probability"),
    "churn_precision_top_decile": ("higher", "share of churners among the 10% most likely to churn (a tie at the "
                                             "cut counted pro rata)"),
    "churn_f1_top_decile": ("higher", "F1 when predicting churn for exactly the top 10% (a tie at the cut counted "
                                      "pro rata)"),
    "churn_brier": ("lower", "Brier score: mean squared error of the churn probability"),
    "spend_mae": ("lower", "mean absolute error of the predicted spend"),
    "spend_rmse": ("lower", "root mean squared error of the predicted spend"),
    "spend_spearman": ("higher", "Spearman rank correlation of predicted and actual spend"),
    "spend_gini": ("higher", "normalised Gini: model ranking's gain over random, as a share of the ideal's"),
    "spend_top_decile_capture": ("higher", "share of actual spend held by the 10% with highest predicted spend"),
    "spend_decile_mape": ("lower", "mean over predicted-spend deciles of |sum predicted - sum actual| / sum actual"),
    "spend_total_ratio": ("target 1.0", "sum of predicted spend / sum of actual spend: the budget a marketer would "
                                        "plan on, against what came"),
    "interval_coverage_buyers": ("target 0.8", "share of buyers whose spend is inside the 10-90 % interval of spend given a purchase"),
    "interval_coverage": ("at least 0.8", "share of customers whose spend (0 included) is inside the 10-90 % interval of "
                                          "the horizon's spend"),
}

PREDICTION_COLUMNS = ("predicted_spend", "churn_probability", "actual_spend", "churned")


def _floats(*arrays) -> list[np.ndarray]:
    """1-D finite float arrays of one common, non-zero length: a silent NaN would poison every metric.

    Adding 0.0 turns -0.0 into 0.0: the two compare equal, so a sort could leave them in row order, and they can
    change the sign of a zero result."""
    out = [np.asarray(a, dtype=float).ravel() + 0.0 for a in arrays]
    lengths = {len(a) for a in out}
    if len(lengths) != 1 or 0 in lengths:
        raise ValueError(f"expected non-empty arrays of equal length, got lengths {[len(a) for a in out]}")
    for a in out:
        if not np.isfinite(a).all():
            raise ValueError("metrics need finite values; found NaN or infinity")
    return out


def _canonical(*arrays: np.ndarray) -> list[np.ndarray]:
    """The rows (one entry of each array) sorted by the first array, then the second, ...: one order per multiset.

    Sums over the result are then done in the same order whatever order the rows came in, so a metric computed
    from it is a function of the set of rows alone, to the last bit. Rows equal in every array are
    interchangeable, so the sort need not be stable."""
    order = np.lexsort(arrays[::-1])  # lexsort's primary key is the last one
    return [a[order] for a in arrays]


def _churn_inputs(churned, churn_probability) -> tuple[np.ndarray, np.ndarray]:
    """Labels as 0/1 ints and probabilities checked to lie in [0, 1], in canonical row order."""
    p, y = _canonical(*_floats(churn_probability, churned))
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("churned must be boolean (or 0/1)")
    if p.min() < 0.0 or p.max() > 1.0:
        raise ValueError("churn_probability must lie in [0, 1]")
    return y.astype(int), p


def _spend_inputs(actual, predicted) -> tuple[np.ndarray, np.ndarray]:
    """Actual and predicted spend in canonical row order. Actual spend is a sum of completed orders, so it cannot
    be negative; shares of it would be meaningless."""
    p, a = _canonical(*_floats(predicted, actual))
    if a.min() < 0.0:
        raise ValueError("actual spend must not be negative")
    return a, p


def _top_decile_cut(scores: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    """k = ceil(n / 10), and masks of the customers scored strictly above the k-th highest score and tied with it."""
    k = math.ceil(len(scores) / 10)
    cut = np.partition(scores, len(scores) - k)[len(scores) - k]  # the k-th highest score
    return k, scores > cut, scores == cut


def top_decile_share(scores) -> np.ndarray:
    """Each customer's share of a place in the top decile: 1 above the cut, 0 below it, and (k - a) / b for each of
    the b customers tied at the cut when a are above it (k = ceil(n / 10)). Sums to k; no row order involved."""
    s = np.asarray(scores, dtype=float)
    k, above, tied = _top_decile_cut(s)
    return np.where(above, 1.0, np.where(tied, (k - int(above.sum())) / int(tied.sum()), 0.0))


def _top_decile_precision_f1(y: np.ndarray, p: np.ndarray) -> tuple[float, float]:
    """Precision and F1 of calling the top decile, the tie at the cut counted fractionally (module docstring).

    In integers scaled by the tie's size b, so the only rounding is the final division:
    TP * b = TP_above * b + TP_tied * (k - a)."""
    k, above, tied = _top_decile_cut(p)
    a, b = int(above.sum()), int(tied.sum())
    tp_scaled = int(y[above].sum()) * b + int(y[tied].sum()) * (k - a)
    return tp_scaled / (b * k), 2 * tp_scaled / (b * (k + int(y.sum())))


def churn_metrics(churned, churn_probability) -> dict[str, float]:
    """Ranking (ROC/PR-AUC), campaign (top decile) and probability quality (Brier) of the churn score.

    With a single class the AUCs are undefined and come back as NaN, so a tiny or degenerate sample does not
    abort a whole report."""
    y, p = _churn_inputs(churned, churn_probability)
    both_classes = 0 < y.sum() < len(y)
    precision, f1 = _top_decile_precision_f1(y, p)
    return {
        "churn_roc_auc": float(roc_auc_score(y, p)) if both_classes else NAN,
        "churn_pr_auc": float(average_precision_score(y, p)) if both_classes else NAN,
        "churn_precision_top_decile": precision,
        "churn_f1_top_decile": f1,
        "churn_brier": float(brier_score_loss(y, p, pos_label=1)),
    }


def calibration(churned, churn_probability, bins: int = 10) -> pd.DataFrame:
    """Observed churn rate against mean predicted probability in quantile bins (equal numbers of customers).

    Quantile bins, because churn probabilities are usually bunched: uniform bins would leave most bins empty.
    Edges are those of sklearn's `calibration_curve(strategy="quantile")`, which computes the two rates; empty
    bins (from tied edges) are dropped. `bin` is the 1-based index of the quantile bin."""
    y, p = _churn_inputs(churned, churn_probability)
    observed, predicted = calibration_curve(y, p, n_bins=bins, strategy="quantile")
    edges = np.percentile(p, np.linspace(0.0, 100.0, bins + 1))
    counts = np.bincount(np.searchsorted(edges[1:-1], p), minlength=bins)
    filled = np.flatnonzero(counts)
    if len(filled) != len(observed):
        raise RuntimeError("calibration bins disagree with sklearn's calibration_curve")
    return pd.DataFrame({
        "bin": filled + 1,
        "mean_predicted": predicted,
        "observed_rate": observed,
        "count": counts[filled],
    })


def gain_curve(actual, predicted) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative share of actual spend captured against share of customers, highest predicted spend first.

    Starts at (0, 0) and has one point per block of equal predicted spend (straight line through a tie, i.e.
    the average over orders within it), so it does not depend on the row order. The shares of spend are NaN when
    the total actual spend is 0."""
    a, p = _spend_inputs(actual, predicted)
    order = np.argsort(-p, kind="stable")
    a_sorted, p_sorted = a[order], p[order]
    ends = np.append(np.flatnonzero(np.diff(p_sorted) != 0), len(p) - 1)
    captured = np.cumsum(a_sorted)[ends]
    total = a.sum()
    share_of_spend = captured / total if total > 0 else np.full(len(ends), NAN)
    return np.append(0.0, (ends + 1) / len(p)), np.append(0.0, share_of_spend)


def normalised_gini(actual, predicted) -> float:
    """(area under the model's gain curve - 0.5) / (area under the ideal one - 0.5).

    1 for a ranking as good as sorting by actual spend, about 0 for a random one, negative when reversed. NaN
    when it is undefined: no spend at all, or every customer spent the same (the ideal gains nothing)."""
    a, p = _spend_inputs(actual, predicted)
    ideal = auc(*gain_curve(a, a)) - 0.5
    if not ideal > 0:
        return NAN
    return float((auc(*gain_curve(a, p)) - 0.5) / ideal)


def spend_deciles(predicted) -> np.ndarray:
    """Decile 1..10 of each customer by predicted spend, 1 = highest; tied customers share their average rank."""
    p = np.asarray(predicted, dtype=float)
    rank = rankdata(-p, method="average")  # 1..n
    return (np.floor((rank - 1) * 10 / len(p)) + 1).astype(int)


def _decile_sums(actual: np.ndarray, predicted: np.ndarray) -> pd.DataFrame:
    frame = pd.DataFrame({"decile": spend_deciles(predicted), "predicted": predicted, "actual": actual})
    return frame.groupby("decile").agg(
        predicted_sum=("predicted", "sum"), actual_sum=("actual", "sum"),
        mean_predicted=("predicted", "mean"), mean_actual=("actual", "mean"), customers=("actual", "size"),
    )


def decile_table(actual, predicted) -> pd.DataFrame:
    """Mean predicted and actual spend per predicted-spend decile (1 = highest): is the level right everywhere?"""
    a, p = _spend_inputs(actual, predicted)
    sums = _decile_sums(a, p)
    return sums[["mean_predicted", "mean_actual", "customers"]].reset_index()


def decile_mape(actual, predicted) -> float:
    """Mean over predicted-spend deciles of |sum predicted - sum actual| / sum actual.

    Measures the spend level per segment (what a budget would use) rather than per customer, where errors of a
    mostly-zero target are dominated by noise. Deciles with no actual spend have no relative error and are
    skipped; NaN when all are."""
    a, p = _spend_inputs(actual, predicted)
    sums = _decile_sums(a, p)
    spent = sums[sums["actual_sum"] > 0]
    if spent.empty:
        return NAN
    return float(((spent["predicted_sum"] - spent["actual_sum"]).abs() / spent["actual_sum"]).mean())


def spend_metrics(actual, predicted) -> dict[str, float]:
    """Error (MAE, RMSE), ranking (Spearman, Gini, top-decile capture), segment level (decile MAPE) and total
    level (predicted ÷ actual total: a rank metric cannot see an amount that is off by a factor) of spend."""
    a, p = _spend_inputs(actual, predicted)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConstantInputWarning)  # constant input: NaN is the answer
        spearman = float(spearmanr(a, p).statistic)
    share_of_customers, share_of_spend = gain_curve(a, p)
    return {
        "spend_mae": float(mean_absolute_error(a, p)),
        "spend_rmse": float(root_mean_squared_error(a, p)),
        "spend_spearman": spearman,
        "spend_gini": normalised_gini(a, p),
        # read off the gain curve, so a tie across the 10% cut counts pro rata rather than by row order
        "spend_top_decile_capture": float(np.interp(0.1, share_of_customers, share_of_spend)),
        "spend_decile_mape": decile_mape(a, p),
        "spend_total_ratio": float(p.sum() / a.sum()) if a.sum() > 0 else NAN,
    }


def evaluate(frame: pd.DataFrame) -> dict[str, float]:
    """All churn and spend metrics of one model's predictions (columns `PREDICTION_COLUMNS`).

    The frame's row order (and index) does not matter: every metric puts its rows in canonical order first."""
    missing = [c for c in PREDICTION_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"predictions lack columns {missing}")
    out = {
        **churn_metrics(frame["churned"].to_numpy(), frame["churn_probability"].to_numpy()),
        **spend_metrics(frame["actual_spend"].to_numpy(), frame["predicted_spend"].to_numpy()),
    }
    if {"spend_if_buying_p10", "spend_if_buying_p90"} <= set(frame.columns) and frame["spend_if_buying_p10"].notna().any():
        out["interval_coverage_buyers"] = interval_coverage(frame["actual_spend"].to_numpy(),
                                                            frame["spend_if_buying_p10"].to_numpy(),
                                                            frame["spend_if_buying_p90"].to_numpy())
    if {"spend_p10", "spend_p90"} <= set(frame.columns) and frame["spend_p10"].notna().any():
        out["interval_coverage"] = interval_coverage(frame["actual_spend"].to_numpy(), frame["spend_p10"].to_numpy(),
                                                     frame["spend_p90"].to_numpy(), buyers_only=False)
    return out


def interval_coverage(actual, low, high, buyers_only: bool = True) -> float:
    """Share of buyers (actual spend > 0) whose spend lies in [low, high]: a 10-90 % interval of spend given a
    purchase should hold 80 % of them. NaN without buyers. `buyers_only=False`: the share of every customer, for
    the interval of the horizon's spend with no purchase included (its point mass at 0 makes it hold at least
    80 %: a customer who buys nothing is inside whenever the interval starts at 0)."""
    a, lo, hi = _floats(actual, low, high)
    rows = a > 0 if buyers_only else np.ones(len(a), dtype=bool)
    if not rows.any():
        return NAN
    return float(np.mean((a[rows] >= lo[rows]) & (a[rows] <= hi[rows])))


def oracle_ratios(model_metrics: dict[str, float], oracle_metrics: dict[str, float]) -> dict[str, float]:
    """`<metric>_vs_oracle` = model / oracle for each metric both have: how much of the attainable score is reached.

    NaN when the oracle's value is 0 or NaN. For lower-is-better metrics (errors) a ratio above 1 is the excess."""
    out = {}
    for name, value in model_metrics.items():
        if name not in oracle_metrics:
            continue
        reference = float(oracle_metrics[name])
        ok = math.isfinite(reference) and reference != 0.0
        out[f"{name}_vs_oracle"] = float(value) / reference if ok else NAN
    return out


def paired_difference(metric, actual, first, second, resamples: int = 1000, seed: int = 0,
                      level: float = 0.95) -> dict[str, float]:
    """`metric(actual, first) - metric(actual, second)` and its paired percentile-bootstrap interval.

    Why: on a few thousand customers a spend Gini moves by about 0.01 from one sample of customers to another,
    so whether one model leads another needs the interval, not the two figures. Both models are scored on the
    same resample of customers each time, so what they have in common cancels. `metric` takes (actual,
    predicted) and returns a float (`normalised_gini`, or a churn ROC-AUC); resamples where it is NaN are left
    out. Same inputs and seed → the same interval."""
    a, x, y = (np.asarray(v, dtype=float) for v in (actual, first, second))
    if not len(a) == len(x) == len(y):
        raise ValueError("actual and both predictions must have one entry per customer")
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(resamples):
        i = rng.integers(0, len(a), len(a))
        diffs.append(metric(a[i], x[i]) - metric(a[i], y[i]))
    d = np.asarray(diffs, dtype=float)
    d = d[np.isfinite(d)]
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = (np.percentile(d, [tail, 100.0 - tail]) if len(d) else (NAN, NAN))
    return {"difference": float(metric(a, x) - metric(a, y)), "low": float(low), "high": float(high),
            "resamples": int(len(d))}
