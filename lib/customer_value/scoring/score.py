"""Scoring transformations: the model in a `mapInPandas`, then value score, tier, action and reasons in Spark.

Each function takes and returns a DataFrame (the I/O is in `scoring.run`). The model is loaded once per Python
worker and cached by its artifact path, which holds the version (`models/<name>/<version>/`): a new version is
a new path, never a stale cache entry.
"""

from __future__ import annotations

import math

from typing import Iterator, Sequence

import numpy as np
import pandas as pd
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from customer_value.config import ActionRule, TierThresholds
from customer_value.schemas import INTERVALS

PREDICTED = ("expected_spend", *INTERVALS, "buy_probability", "churn_probability")


def model_udf_schema(keep: Sequence[str], reason_count: int) -> str:
    cols = ["customer_id string", *(f"{c} double" for c in PREDICTED), *(f"{c} double" for c in keep)]
    for r in range(1, reason_count + 1):
        cols += [f"reason_{r} string", f"reason_{r}_amount double"]
    return ", ".join(cols)


def apply_model(inputs: DataFrame, model_dir: str, spec, keep: Sequence[str] = (), reason_count: int = 0,
                reason_steps: int = 4, btyd=None, threads: int = 1, fixed: Sequence[str] = ()) -> DataFrame:
    """`model_inputs` rows → customer_id, the predictions, the `keep` input columns and, when `reason_count` > 0,
    reason_1 .. reason_k with their amounts (money, signed), computed in the same batch as the prediction.

    `btyd`: an `InBatchBtyd` that fills the model's BG/NBD inputs in each batch (the rows then carry its raw
    columns). `threads`: TensorFlow's threads per Python worker (Spark already runs one worker per core;
    `models.deep.load_saved_model`).
    `fixed`: features never given as reasons (shop-level context, `reasons.Attributor`)."""
    from customer_value.models.deep import calibration_of

    saved = f"{model_dir}/saved_model"
    scale = calibration_of(model_dir)
    keep = list(keep)

    def score(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        from customer_value.models.deep import load_saved_model, predict_arrays, predictions
        from customer_value.models.network import arrays_from_frame
        from customer_value.scoring.reasons import top_reasons, with_blend

        model = load_saved_model(saved, threads)
        attributor = (_attributor(saved, model, spec, reason_steps, scale["mean_scale"], tuple(fixed),
                                  scale["spend_cap"], scale["level_scale"])
                      if reason_count else None)
        for pdf in batches:
            if not len(pdf):
                continue
            if btyd is not None:
                pdf = btyd.fill(pdf)
            arrays = arrays_from_frame(pdf, spec)
            if attributor is None:
                out = predict_arrays(model, arrays, **scale)
            else:
                spend, churn, amounts = attributor(arrays)
                out = predictions(spend, churn, **scale, numeric=arrays["numeric"])
                amounts = with_blend(amounts, arrays["numeric"], attributor.names, attributor.ref_numeric,
                                     scale["blend_weight"], scale["blend_columns"], scale["level_scale"])
            frame = {"customer_id": pdf["customer_id"].to_numpy(), "expected_spend": out["predicted_spend"],
                     **{c: out[c] for c in PREDICTED[1:]}, **{c: pdf[c].to_numpy(np.float64) for c in keep}}
            if attributor is not None:
                names, values = top_reasons(attributor.names, amounts, reason_count)
                for r, (n, v) in enumerate(zip(names, values), start=1):
                    frame[f"reason_{r}"], frame[f"reason_{r}_amount"] = n, v
            yield pd.DataFrame(frame)

    return inputs.mapInPandas(score, model_udf_schema(keep, reason_count))


_ATTRIBUTORS: dict[tuple, object] = {}


def _attributor(saved: str, model, spec, steps: int, mean_scale: float, fixed: tuple[str, ...] = (),
                spend_cap: float = math.inf, level_scale: float = 1.0):
    """One traced attribution function per worker, model version and settings."""
    from customer_value.scoring.reasons import Attributor

    key = (saved, steps, mean_scale, fixed, spend_cap, level_scale)
    if key not in _ATTRIBUTORS:
        _ATTRIBUTORS[key] = Attributor(model, spec, steps, mean_scale, fixed, spend_cap, level_scale)
    return _ATTRIBUTORS[key]


def reasons_array(scored: DataFrame, reason_count: int) -> DataFrame:
    """reason_1 .. reason_k and their amounts → one `top_reasons` array<struct<feature, amount>>, largest first."""
    if reason_count == 0:
        return scored.withColumn("top_reasons", F.lit(None).cast("array<struct<feature:string,amount:double>>"))
    flat = [c for r in range(1, reason_count + 1) for c in (f"reason_{r}", f"reason_{r}_amount")]
    items = [F.struct(F.col(f"reason_{r}").alias("feature"), F.col(f"reason_{r}_amount").alias("amount"))
             for r in range(1, reason_count + 1)]
    return scored.withColumn("top_reasons", F.array(*items)).drop(*flat)


def percentile_of(values: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Where each value falls in the distribution whose quantiles at 0, 1/K, ..., 1 are `grid` (K + 1 points),
    in [0, 1]: linear inside a step, the middle of a run of equal grid points for a tie (so a mass of equal
    values, e.g. customers predicted to spend nothing, gets one mid score instead of the top of its run)."""
    g = np.asarray(grid, dtype=np.float64)
    x = np.asarray(values, dtype=np.float64)
    k = len(g) - 1
    lo = np.searchsorted(g, x, side="left")
    hi = np.searchsorted(g, x, side="right")
    tie = hi > lo
    inside = np.clip(lo, 1, k)
    left, right = g[inside - 1], g[inside]
    width = np.where(right > left, right - left, 1.0)
    frac = np.clip((x - left) / width, 0.0, 1.0)
    between = (inside - 1 + frac) / k
    at_tie = (lo + hi - 1) / 2.0 / k
    return np.clip(np.where(tie, at_tie, between), 0.0, 1.0)


def with_value_score(scored: DataFrame, grid: Sequence[float]) -> DataFrame:
    """value_score: the percentile of expected_spend among the snapshot's customers (`grid`: its quantiles)."""
    g = np.asarray(grid, dtype=np.float64)

    @F.pandas_udf("double")
    def value_score(spend: pd.Series) -> pd.Series:
        return pd.Series(percentile_of(spend.to_numpy(np.float64), g))

    return scored.withColumn("value_score", value_score(F.col("expected_spend")))


FIXED_PARTITIONS = 8      # `in_fixed_order`'s partitions: a set number, so nothing follows the cluster's size


def in_fixed_order(rows: DataFrame, *columns: str) -> DataFrame:
    """`columns` of the rows hashed by customer into a fixed number of partitions, each sorted by customer.

    Why: Spark's approxQuantile sketches each partition in row order and merges the sketches, and k-means||
    samples its first centres partition by partition, so both follow the partitioning and order of the rows:
    the same scores read from another file layout gave a tier count one customer apart and other segments. In
    this order they are a function of the rows alone."""
    return (rows.select("customer_id", *columns).repartition(FIXED_PARTITIONS, "customer_id")
            .sortWithinPartitions("customer_id"))


def quantile_grid(scored: DataFrame, points: int = 1000, relative_error: float = 1e-4) -> list[float]:
    """expected_spend's quantiles at 0, 1/points, ..., 1 (Spark's approxQuantile, one pass over the scores in a
    fixed order: `in_fixed_order`)."""
    probs = [i / points for i in range(points + 1)]
    return in_fixed_order(scored, "expected_spend").approxQuantile("expected_spend", probs, relative_error)


def tier(value_score: Column, thresholds: TierThresholds) -> Column:
    return (F.when(value_score > thresholds.high, "high").when(value_score >= thresholds.mid, "mid")
            .otherwise("low"))


def churn_risk(churn_probability: Column, high: float) -> Column:
    return F.when(churn_probability >= high, "high").otherwise("low")


def action(tier_col: Column, risk_col: Column, rules: Sequence[ActionRule]) -> Column:
    """The first rule whose tier and churn risk match ("any" matches all)."""
    out = None
    for rule in rules:
        cond = F.lit(True)
        if rule.tier != "any":
            cond = cond & (tier_col == rule.tier)
        if rule.churn_risk != "any":
            cond = cond & (risk_col == rule.churn_risk)
        out = F.when(cond, rule.action) if out is None else out.when(cond, rule.action)
    return out


def with_tier_and_action(scored: DataFrame, thresholds: TierThresholds, churn_high: float,
                         rules: Sequence[ActionRule]) -> DataFrame:
    return (scored.withColumn("tier", tier(F.col("value_score"), thresholds))
            .withColumn("churn_risk", churn_risk(F.col("churn_probability"), churn_high))
            .withColumn("action", action(F.col("tier"), F.col("churn_risk"), rules)))
