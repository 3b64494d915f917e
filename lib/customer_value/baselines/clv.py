"""BG/NBD + Gamma-Gamma on the feature table: fit on the driver from aggregated rows, predict in a pandas UDF.

The BG/NBD likelihood depends on a customer only through (x, t_x, T), so the calibration features are first
reduced in Spark to the distinct triples and their counts: the fit's cost is bounded by the number of distinct
triples (at most days^2), not by the number of customers. Gamma-Gamma has no such statistic; it is fitted on at
most `max_customers` repeat buyers (three parameters: a few hundred thousand rows pin them).

Units are days and purchases are purchase days: the features' `bgnbd_x` counts repeat purchase days.
Gamma-Gamma follows the method's convention (Fader & Hardie, "The Gamma-Gamma model of monetary value"), the
one that matches BG/NBD's x: x = the number of repeat purchases (`bgnbd_x`) and m = the mean spend of those
repeat purchases, the first one excluded, i.e. m = (monetary_total - monetary_first) / bgnbd_x for x >= 1
(`repeat_mean`). The first purchase is left out because x does not count it, and because it is unlike the
others (it is the one acquisition promotions and welcome offers act on). The fit uses repeat buyers with
m > 0; in prediction a customer's expected spend per purchase blends their own m with the population mean by
their x, and a customer with x = 0 (first purchase only) gets the population mean p gamma / (q - 1).

Same features, same fit, bit for bit, however Spark partitions them:
- The BG/NBD triples are sorted before the fit (`toPandas()` returns them in no fixed order, and the likelihood
  is a sum of doubles, which depends on the order of its terms).
- The Gamma-Gamma sample is the `max_customers` repeat buyers with the smallest `xxhash64(customer_id, seed)`
  (ties by customer_id), in that order: a top-k, cheap, and a function of the customers alone. The old
  `sample(seed).limit(n)` drew per partition and kept whichever rows came first.

Customers without a completed purchase have no (x, t_x, T): the caller gives them a fallback.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from datetime import date
from typing import Sequence

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from pyspark.sql import Column, DataFrame, Window
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


def repeat_mean(monetary_total: ArrayLike, monetary_first: ArrayLike, x: ArrayLike) -> np.ndarray:
    """m: mean spend of the x repeat purchase days, the first purchase day excluded; 0 (unused) where x = 0.

    A repeat spend below 0 can only be rounding of the two sums (repeat orders that cost nothing): read as 0."""
    total, first, x = (np.asarray(v, dtype=float) for v in (monetary_total, monetary_first, x))
    repeat = np.maximum(total - first, 0.0)
    return np.divide(repeat, x, out=np.zeros_like(repeat), where=x >= 1)


TRIPLE = ["bgnbd_x", "bgnbd_t_x", "bgnbd_T"]


def _sorted_triples(features: DataFrame) -> pd.DataFrame:
    """Distinct (x, t_x, T) of the buyers with their counts, sorted: the fit then adds the same terms in the
    same order every time."""
    triples = buyers(features).groupBy(*TRIPLE).count().toPandas()
    return triples.sort_values(TRIPLE, ignore_index=True)


def _sample_key(seed: int) -> Column:
    return F.xxhash64(F.col("customer_id"), F.lit(seed)).alias("sample_key")


def _repeat_buyers(features: DataFrame) -> DataFrame:
    """Buyers with a repeat purchase and positive repeat spend: the customers Gamma-Gamma is fitted on."""
    return buyers(features).where((F.col("bgnbd_x") >= 1) & (F.col("monetary_total") > F.col("monetary_first")))


def _spend_frame(rows: pd.DataFrame) -> pd.DataFrame:
    """customer_id, x, m of sampled rows, sorted by (sample_key, customer_id): the order the fit's sums run in."""
    rows = rows.sort_values(["sample_key", "customer_id"], ignore_index=True)
    x = rows["bgnbd_x"].to_numpy(float)
    return pd.DataFrame({"customer_id": rows["customer_id"], "x": x,
                         "m": repeat_mean(rows["monetary_total"], rows["monetary_first"], x)})


def spend_sample(features: DataFrame, max_customers: int, seed: int) -> pd.DataFrame:
    """customer_id, x, m of at most `max_customers` repeat buyers with positive repeat spend: those with the
    smallest xxhash64(customer_id, seed), ties by customer_id, in that order.

    A deterministic top-k: the same customers, in the same order, whatever the partitioning and whatever order
    Spark returns them in (sorted again on the driver: that is the order the fit's sums run in)."""
    return _spend_frame(_repeat_buyers(features)
                        .select("customer_id", _sample_key(seed), "bgnbd_x", "monetary_total", "monetary_first")
                        .orderBy("sample_key", "customer_id").limit(max_customers).toPandas())


def _fit(triples: pd.DataFrame, spend: pd.DataFrame) -> ClvModel:
    """Both models from the sorted triples and the ordered spend sample (the driver's part of `fit_clv`)."""
    bg = fit_bgnbd(triples["bgnbd_x"].to_numpy(float), triples["bgnbd_t_x"].to_numpy(float),
                   triples["bgnbd_T"].to_numpy(float), weights=triples["count"].to_numpy(float))
    gg = fit_gamma_gamma(spend["x"].to_numpy(), spend["m"].to_numpy())
    return ClvModel(bg, gg, int(triples["count"].sum()), len(triples), len(spend))


def fit_clv(features: DataFrame, max_customers: int = 200_000, seed: int = 7) -> ClvModel:
    """Fit both models on one snapshot's features (data before the snapshot only, no labels needed)."""
    fitted = fit_clv_if_buyers(features, max_customers, seed)
    if fitted is None:
        raise ValueError("no customer with a completed purchase before the snapshot: BG/NBD cannot be fitted")
    return fitted


def fit_clv_if_buyers(features: DataFrame, max_customers: int = 200_000, seed: int = 7) -> ClvModel | None:
    """`fit_clv`, or None where no customer has a completed purchase: the triples job answers both questions,
    where asking first whether there is a buyer cost a Spark job of its own."""
    triples = _sorted_triples(features)
    return None if triples.empty else _fit(triples, spend_sample(features, max_customers, seed))


def fit_clv_per_snapshot(features: DataFrame, snapshots: Sequence[date], max_customers: int = 200_000,
                         seed: int = 7) -> dict[date, ClvModel | None]:
    """`fit_clv` on each snapshot's own rows of a several-snapshot frame (None where a snapshot has no buyer),
    from two Spark jobs for all of them instead of three per snapshot.

    Each fit sees exactly the inputs `fit_clv` on that snapshot alone would: its distinct triples, sorted, and
    its own top-`max_customers` sample by (sample_key, customer_id), in that order; so the same parameters to
    the last bit. Nothing crosses snapshots: every grouping and ranking is per `snapshot_date`."""
    triples = buyers(features).groupBy("snapshot_date", *TRIPLE).count().toPandas()
    rank = F.row_number().over(Window.partitionBy("snapshot_date").orderBy("sample_key", "customer_id"))
    sample = (_repeat_buyers(features)
              .select("snapshot_date", "customer_id", _sample_key(seed), "bgnbd_x", "monetary_total", "monetary_first")
              .withColumn("_rank", rank).where(F.col("_rank") <= max_customers).drop("_rank").toPandas())
    fits: dict[date, ClvModel | None] = {}
    for s in snapshots:
        mine = triples[triples["snapshot_date"] == s].drop(columns="snapshot_date")
        if mine.empty:
            fits[s] = None
            continue
        spend = _spend_frame(sample[sample["snapshot_date"] == s].drop(columns="snapshot_date"))
        fits[s] = _fit(mine.sort_values(TRIPLE, ignore_index=True), spend)
    return fits


def predict_frame(model: ClvModel, horizon_days: int, pdf: pd.DataFrame) -> pd.DataFrame:
    """Expected purchases, P(alive), spend and P(no purchase) over the horizon for a batch of buyers.

    Spend per purchase is Gamma-Gamma's conditional expectation given the customer's x repeat purchases and
    their mean m (`repeat_mean`); with x = 0 it is the population mean."""
    x, t_x, T = (pdf[c].to_numpy(float) for c in ("bgnbd_x", "bgnbd_t_x", "bgnbd_T"))
    orders = expected_purchases(model.bgnbd, horizon_days, x, t_x, T)
    m = repeat_mean(pdf["monetary_total"], pdf["monetary_first"], x)
    per_order = expected_spend_per_order(model.gamma_gamma, x, m)
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

    cols = ["customer_id", "bgnbd_x", "bgnbd_t_x", "bgnbd_T", "monetary_total", "monetary_first"]
    return buyers(features).select(*cols).mapInPandas(batches, PREDICTION_SCHEMA)
