"""BG/NBD + Gamma-Gamma on the feature table: fit on the driver from aggregated rows, predict in a pandas UDF.

The BG/NBD likelihood depends on a customer only through (x, t_x, T), so the calibration features are first
reduced in Spark to the distinct triples and their counts: the fit's cost is bounded by the number of distinct
triples (at most days^2), not by the number of customers. Gamma-Gamma has no such statistic; it is fitted on a
seeded sample of at most `max_customers` repeat buyers (three parameters: a few hundred thousand rows pin them).

Units are days, purchases are purchase days (the features' `bgnbd_x` counts repeat purchase days), and spend per
purchase is `monetary_total / frequency_days` (the first purchase included, since the features do not keep it
apart). Customers without a completed purchase have no (x, t_x, T): the caller gives them a fallback.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from customer_value.baselines.btyd import (
    BgNbd,
    GammaGamma,
    expected_purchases,
    expected_spend_per_order,
    fit_bgnbd,
    fit_gamma_gamma,
    probability_alive,
    probability_no_purchase,
)

PREDICTION_SCHEMA = ("customer_id string, expected_orders double, probability_alive double, "
                     "predicted_spend double, churn_probability double")


@dataclass(frozen=True)
class ClvModel:
    bgnbd: BgNbd
    gamma_gamma: GammaGamma
    customers: int          # buyers in the BG/NBD fit
    distinct_rows: int      # distinct (x, t_x, T) the fit actually iterated over
    spend_rows: int         # repeat buyers in the Gamma-Gamma fit

    @property
    def version(self) -> str:
        """Content hash of the fitted parameters to 4 significant digits: the same fit gives the same version
        (Spark's sums of doubles may differ in the last bits between runs)."""
        params = {"bgnbd": asdict(self.bgnbd), "gamma_gamma": asdict(self.gamma_gamma)}
        rounded = json.dumps({m: {k: f"{v:.4g}" for k, v in p.items()} for m, p in params.items()}, sort_keys=True)
        return "bgnbd-gg-" + hashlib.sha256(rounded.encode()).hexdigest()[:10]

    def describe(self) -> dict[str, str]:
        """The fitted parameters as people read them (report context, logs)."""
        bg, gg = self.bgnbd, self.gamma_gamma
        return {"BG/NBD (days)": f"r={bg.r:.4g}, alpha={bg.alpha:.4g}, a={bg.a:.4g}, b={bg.b:.4g} on {self.customers:,} "
                                 f"buyers ({self.distinct_rows:,} distinct (x, t_x, T) rows)",
                "Gamma-Gamma": f"p={gg.p:.4g}, q={gg.q:.4g}, gamma={gg.gamma:.4g} on {self.spend_rows:,} repeat buyers"}


def buyers(features: DataFrame) -> DataFrame:
    return features.where(F.col("frequency_days") > 0)


def fit_clv(features: DataFrame, max_customers: int = 200_000, seed: int = 7) -> ClvModel:
    """Fit both models on one snapshot's features (data before the snapshot only, no labels needed)."""
    triples = (buyers(features).groupBy("bgnbd_x", "bgnbd_t_x", "bgnbd_T").count()
               .toPandas())
    if triples.empty:
        raise ValueError("no customer with a completed purchase before the snapshot: BG/NBD cannot be fitted")
    bg = fit_bgnbd(triples["bgnbd_x"].to_numpy(float), triples["bgnbd_t_x"].to_numpy(float),
                   triples["bgnbd_T"].to_numpy(float), weights=triples["count"].to_numpy(float))
    repeat = buyers(features).where(F.col("frequency_days") >= 2).select(
        F.col("frequency_days").cast("double").alias("x"),
        (F.col("monetary_total") / F.col("frequency_days")).alias("m")).where(F.col("m") > 0)
    n_repeat = repeat.count()
    if n_repeat > max_customers:
        repeat = repeat.sample(fraction=min(1.0, 1.2 * max_customers / n_repeat), seed=seed).limit(max_customers)
    spend = repeat.toPandas()
    gg = fit_gamma_gamma(spend["x"].to_numpy(), spend["m"].to_numpy())
    return ClvModel(bg, gg, int(triples["count"].sum()), len(triples), len(spend))


def predict_frame(model: ClvModel, horizon_days: int, pdf: pd.DataFrame) -> pd.DataFrame:
    """Expected purchases, P(alive), spend and P(no purchase) over the horizon for a batch of buyers."""
    x, t_x, T = (pdf[c].to_numpy(float) for c in ("bgnbd_x", "bgnbd_t_x", "bgnbd_T"))
    orders = expected_purchases(model.bgnbd, horizon_days, x, t_x, T)
    days = pdf["frequency_days"].to_numpy(float)
    per_order = expected_spend_per_order(model.gamma_gamma, days, pdf["monetary_total"].to_numpy(float) / days)
    return pd.DataFrame({
        "customer_id": pdf["customer_id"],
        "expected_orders": orders,
        "probability_alive": probability_alive(model.bgnbd, x, t_x, T),
        "predicted_spend": orders * per_order,
        "churn_probability": probability_no_purchase(model.bgnbd, horizon_days, x, t_x, T),
    })


def predict_clv(model: ClvModel, features: DataFrame, horizon_days: int) -> DataFrame:
    """Per buyer at the features' snapshot: the PREDICTION_SCHEMA columns, computed in the executors."""

    def batches(frames):
        for pdf in frames:
            yield predict_frame(model, horizon_days, pdf)

    cols = ["customer_id", "bgnbd_x", "bgnbd_t_x", "bgnbd_T", "frequency_days", "monetary_total"]
    return buyers(features).select(*cols).mapInPandas(batches, PREDICTION_SCHEMA)
