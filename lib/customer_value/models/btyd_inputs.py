"""BG/NBD + Gamma-Gamma's own predictions at S as inputs of the network (stacking).

Why: on a plain transactions file the summary statistics (x, t_x, T, mean spend) carry most of what can be
known, and BG/NBD turns them into expected purchases and P(alive) through a model with 4 + 3 parameters that a
few thousand customers pin down. A network given only the raw statistics has to learn that non-linear posterior
from the training rows, and on small shops it falls short of the baseline it should beat. Given the baseline's
predictions as inputs, it starts from them and learns what the rest of the features add (sequences,
behaviour, seasonality), and where the baseline is off.

Point in time: the two models are fitted on each snapshot's own features (the history before S, no label), one
fit per snapshot, exactly as the BG/NBD baseline does at S; a training row at S_i never sees a fit that used
anything after S_i. Scoring at S fits them on S's features the same way. Customers without a completed
purchase have no BG/NBD figures: null, which the spec's `indicator` policy turns into 0 plus a missing flag.
"""

from __future__ import annotations

from datetime import date

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

import numpy as np
import pandas as pd

from customer_value.baselines.clv import ClvModel, fit_clv_if_buyers, fit_clv_per_snapshot, predict_frame
from customer_value.models.spec import NUMERIC, FeatureColumn, FeatureSpec

# Input name ← the column of the BG/NBD prediction frame it comes from.
BTYD_INPUTS = {"btyd_expected_orders": "expected_orders", "btyd_probability_alive": "probability_alive",
               "btyd_expected_spend": "predicted_spend", "btyd_probability_no_purchase": "churn_probability"}
HORIZON_KEY = "btyd_horizon_days"
PREDICT_INPUTS = ("bgnbd_x", "bgnbd_t_x", "bgnbd_T", "monetary_total", "monetary_first")


def btyd_columns() -> list[FeatureColumn]:
    return [FeatureColumn(name, NUMERIC, "double", "indicator") for name in BTYD_INPUTS]


def with_btyd_spec(spec: FeatureSpec, horizon_days: int) -> FeatureSpec:
    """The spec with the four inputs added (before any statistics are fitted) and the horizon they predict."""
    spec.columns = [*spec.columns, *btyd_columns()]
    spec.stats[HORIZON_KEY] = horizon_days
    return spec


def uses_btyd(spec: FeatureSpec) -> bool:
    return any(c.name in BTYD_INPUTS for c in spec.columns)


def with_btyd_inputs(features: DataFrame, horizon_days: int, max_customers: int,
                     fitted: ClvModel | None = None) -> DataFrame:
    """One snapshot's features with the four BTYD inputs, from models fitted on these features alone (`fitted`:
    that fit, where the caller has it already, e.g. the backtest's BG/NBD baseline at S; else fitted here)."""
    if fitted is None:
        fitted = fit_clv_if_buyers(features, max_customers)         # None without a buyer: all inputs null
    return with_fitted_btyd_inputs(features, horizon_days, fitted)


def with_fitted_btyd_inputs(features: DataFrame, horizon_days: int, fitted: ClvModel | None) -> DataFrame:
    """The features with the four BTYD inputs from this fit of their snapshot (None: no buyer, all null).

    The predictions are a column-wise pandas UDF over the five columns they need (a projection), not a join
    with `predict_clv`'s frame: no second scan of the features and no shuffle of every customer, which at
    millions of customers was a large part of scoring's time. Non-buyers get nulls, as from the baseline."""
    if fitted is None:
        return features.select("*", *(F.lit(None).cast("double").alias(n) for n in BTYD_INPUTS))

    @F.pandas_udf(PREDICTIONS_SCHEMA)
    def predict(x: pd.Series, t_x: pd.Series, T: pd.Series, total: pd.Series, first: pd.Series,
                frequency: pd.Series) -> pd.DataFrame:
        return btyd_predictions(fitted, horizon_days, x, t_x, T, total, first, frequency)

    return _with_predictions(features, predict(*_predict_inputs()))


PREDICTIONS_SCHEMA = "struct<{}>".format(", ".join(f"{src} double" for src in BTYD_INPUTS.values()))


def _predict_inputs() -> list:
    return [*(F.col(c).cast("double") for c in PREDICT_INPUTS), F.col("frequency_days")]


def _with_predictions(features: DataFrame, packed) -> DataFrame:
    """The features with the four inputs unpacked from the UDF's struct; null for non-buyers."""
    tmp = "_btyd_predictions"
    is_buyer = F.col("frequency_days") > 0
    return (features.withColumn(tmp, packed)
            .select(*features.columns, *(F.when(is_buyer, F.col(f"{tmp}.{src}")).alias(name)
                                         for name, src in BTYD_INPUTS.items())))


def btyd_predictions(fitted, horizon_days: int, x: pd.Series, t_x: pd.Series, T: pd.Series, total: pd.Series,
                     first: pd.Series, frequency: pd.Series) -> pd.DataFrame:
    """BG/NBD + Gamma-Gamma's four predictions (columns: `BTYD_INPUTS`' values) for a batch of customers, NaN
    for those without a completed purchase (`frequency_days` 0 or null) or where nothing was fitted."""
    out = pd.DataFrame(np.nan, index=x.index, columns=list(BTYD_INPUTS.values()))
    buyer = (frequency.fillna(0) > 0).to_numpy()
    if fitted is not None and buyer.any():
        pdf = pd.DataFrame({"customer_id": "", "bgnbd_x": x[buyer], "bgnbd_t_x": t_x[buyer], "bgnbd_T": T[buyer],
                            "monetary_total": total[buyer], "monetary_first": first[buyer]})
        pred = predict_frame(fitted, horizon_days, pdf)
        out.loc[buyer, :] = pred[list(BTYD_INPUTS.values())].to_numpy()
    return out


def with_btyd_inputs_per_snapshot(features: DataFrame, snapshots: list[date], horizon_days: int,
                                  max_customers: int) -> DataFrame:
    """Features of several snapshots, each row with the inputs of its own snapshot's fit (`fit_clv_per_snapshot`:
    the fits of all snapshots from two Spark jobs, each exactly `fit_clv` of that snapshot alone).

    One pandas UDF over all the rows picks each row's fit by its snapshot: the predictions are row by row, so
    they are those of `with_fitted_btyd_inputs` on each snapshot alone, without a union of one scan and one
    Python round trip per snapshot (12 training snapshots: 12 branches)."""
    fits = fit_clv_per_snapshot(features, snapshots, max_customers)

    @F.pandas_udf(PREDICTIONS_SCHEMA)
    def predict(snapshot: pd.Series, x: pd.Series, t_x: pd.Series, T: pd.Series, total: pd.Series,
                first: pd.Series, frequency: pd.Series) -> pd.DataFrame:
        out = pd.DataFrame(np.nan, index=x.index, columns=list(BTYD_INPUTS.values()))
        for s, rows in snapshot.groupby(snapshot).groups.items():
            part = btyd_predictions(fits.get(s), horizon_days, x[rows], t_x[rows], T[rows], total[rows], first[rows],
                                    frequency[rows])
            out.loc[rows, :] = part.to_numpy()
        return out

    return _with_predictions(features, predict(F.col("snapshot_date"), *_predict_inputs()))


RAW_PREFIX = "_btyd_raw_"
RAW_INPUTS = (*PREDICT_INPUTS, "frequency_days")


class InBatchBtyd:
    """The four BTYD inputs computed inside the scorer's own `mapInPandas`, from raw columns carried beside the
    model's inputs, instead of by a pandas UDF of their own (`with_btyd_inputs`).

    Why: that UDF is a second Arrow round trip of every customer before the model's; at 10 million customers it
    cost about 80 s of the scoring job's 630 on two cores. Here the models are fitted on the driver as before
    (S's features only), and each batch's inputs are filled in the worker with the transformation `model_inputs`
    applies to every numeric input (signed log1p, null → 0 plus its missing flag)."""

    def __init__(self, fitted, horizon_days: int) -> None:
        self.fitted, self.horizon_days = fitted, horizon_days

    @staticmethod
    def placeholders(features: DataFrame) -> DataFrame:
        """The features with the four inputs as nulls (for `model_inputs`) and the raw columns they need."""
        return features.select("*", *(F.lit(None).cast("double").alias(n) for n in BTYD_INPUTS),
                               *(F.col(c).cast("double").alias(RAW_PREFIX + c) for c in RAW_INPUTS))

    @staticmethod
    def carried() -> list[str]:
        return [RAW_PREFIX + c for c in RAW_INPUTS]

    def fill(self, pdf: pd.DataFrame) -> pd.DataFrame:
        """`model_inputs` rows with the placeholders replaced by this batch's transformed predictions."""
        pred = btyd_predictions(self.fitted, self.horizon_days, *(pdf[RAW_PREFIX + c] for c in RAW_INPUTS))
        for name, src in BTYD_INPUTS.items():
            v = pred[src].to_numpy(np.float64)          # NaN for non-buyers already
            missing = np.isnan(v)
            pdf[name] = np.where(missing, 0.0, np.sign(v) * np.log1p(np.abs(v))).astype(np.float32)
            if f"{name}__missing" in pdf:
                pdf[f"{name}__missing"] = missing.astype(np.float32)
        return pdf


def in_batch(features: DataFrame, spec: FeatureSpec, max_customers: int) -> tuple[DataFrame, "InBatchBtyd | None"]:
    """(features ready for `model_inputs(..., carry=InBatchBtyd.carried())`, the in-batch filler), or (features,
    None) where the spec has no BTYD inputs. Nothing fitted (no buyer at S) leaves every customer's inputs null."""
    if not uses_btyd(spec):
        return features, None
    fitted = fit_clv_if_buyers(features, max_customers)
    return InBatchBtyd.placeholders(features), InBatchBtyd(fitted, int(spec.stats[HORIZON_KEY]))


def prepared(features: DataFrame, spec: FeatureSpec, max_customers: int = 200_000,
             fitted: ClvModel | None = None) -> DataFrame:
    """Features of one snapshot made ready for `model_inputs` under this spec (the BTYD inputs where it has
    them, from `fitted` when given: the fit on these same features): the one step scoring adds to the features
    table."""
    if not uses_btyd(spec):
        return features
    return with_btyd_inputs(features, int(spec.stats[HORIZON_KEY]), max_customers, fitted)
