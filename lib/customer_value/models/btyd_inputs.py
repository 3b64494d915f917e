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
from functools import reduce

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from customer_value.baselines.clv import buyers, fit_clv, predict_clv
from customer_value.models.spec import NUMERIC, FeatureColumn, FeatureSpec

# Input name ← the column of the BG/NBD prediction frame it comes from.
BTYD_INPUTS = {"btyd_expected_orders": "expected_orders", "btyd_probability_alive": "probability_alive",
               "btyd_expected_spend": "predicted_spend", "btyd_probability_no_purchase": "churn_probability"}
HORIZON_KEY = "btyd_horizon_days"


def btyd_columns() -> list[FeatureColumn]:
    return [FeatureColumn(name, NUMERIC, "double", "indicator") for name in BTYD_INPUTS]


def with_btyd_spec(spec: FeatureSpec, horizon_days: int) -> FeatureSpec:
    """The spec with the four inputs added (before any statistics are fitted) and the horizon they predict."""
    spec.columns = [*spec.columns, *btyd_columns()]
    spec.stats[HORIZON_KEY] = horizon_days
    return spec


def uses_btyd(spec: FeatureSpec) -> bool:
    return any(c.name in BTYD_INPUTS for c in spec.columns)


def with_btyd_inputs(features: DataFrame, horizon_days: int, max_customers: int) -> DataFrame:
    """One snapshot's features with the four BTYD inputs, from models fitted on these features alone."""
    if buyers(features).limit(1).count() == 0:
        return features.select("*", *(F.lit(None).cast("double").alias(n) for n in BTYD_INPUTS))
    fitted = fit_clv(features, max_customers)
    preds = predict_clv(fitted, features, horizon_days).select(
        "customer_id", *(F.col(src).alias(name) for name, src in BTYD_INPUTS.items()))
    return features.join(preds, "customer_id", "left")


def with_btyd_inputs_per_snapshot(features: DataFrame, snapshots: list[date], horizon_days: int,
                                  max_customers: int) -> DataFrame:
    """Features of several snapshots, each with the inputs of its own snapshot's fit."""
    return reduce(DataFrame.unionByName,
                  [with_btyd_inputs(features.where(F.col("snapshot_date") == F.lit(s)), horizon_days, max_customers)
                   for s in snapshots])


def prepared(features: DataFrame, spec: FeatureSpec, max_customers: int) -> DataFrame:
    """Features of one snapshot made ready for `model_inputs` under this spec (the BTYD inputs where it has
    them): the one step scoring adds to the features table."""
    if not uses_btyd(spec):
        return features
    return with_btyd_inputs(features, int(spec.stats[HORIZON_KEY]), max_customers)
