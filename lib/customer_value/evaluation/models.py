"""One small interface for every model the backtest compares: fit on training snapshots, predict at S.

A model's predictions are rows of (customer_id, predicted_spend, churn_probability) and, where the model has a
distribution, its 10-90 % intervals (spend_p10 / spend_p90 of the horizon's spend, spend_if_buying_p10 / _p90
given a purchase); `version` names what was fitted. The backtest, the report and the
predictions table then treat RFM rules, BG/NBD + Gamma-Gamma, the deep model and the oracle alike.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import reduce
from typing import Callable, Iterable, Protocol

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from customer_value.baselines.clv import ClvModel, fit_clv, predict_clv
from customer_value.baselines.rfm import PROSPECT, RfmModel, fit_rfm, predict_rfm, rfm_scores
from customer_value.config import Config
from customer_value.schemas import INTERVALS
from customer_value.tables import Tables

PREDICTION_COLUMNS = ("customer_id", "predicted_spend", "churn_probability", *INTERVALS)


def _log(msg: str) -> None:
    print(f"[backtest] {msg}", flush=True)


def snapshots_before(snapshot: date, horizon_days: int, first_day: date, min_history_days: int, count: int,
                     step_days: int) -> list[date]:
    """Training snapshots for a backtest at S: S - H, S - H - step, ... (so every label ends by S), at most
    `count`, each with `min_history_days` of data before it; oldest first."""
    out = []
    s = snapshot - timedelta(days=horizon_days)
    while len(out) < count and (s - first_day).days >= min_history_days:
        out.append(s)
        s -= timedelta(days=step_days)
    return sorted(out)


@dataclass
class BacktestData:
    """What models may learn from for a backtest at S: features and labels of snapshots whose horizon ends by S
    (computed and written on first use, or together by `prepare`), and the features at S they predict from.

    `features_for` / `labels_for` compute (and write) the rows of a list of snapshots in one go and return them;
    `labels_for` writes only the labels of training snapshots (horizon ended by S), never S's own."""

    spark: SparkSession
    cfg: Config
    tables: Tables
    snapshot: date
    horizon_days: int
    first_day: date
    features_for: Callable[[list[date]], DataFrame]
    labels_for: Callable[[list[date]], DataFrame]
    _cache: dict = field(default_factory=dict)

    def snapshots(self, count: int, step_days: int) -> list[date]:
        """S - H, S - H - step, ... (oldest first): labels end by S; each with `min_history_days` before it."""
        return snapshots_before(self.snapshot, self.horizon_days, self.first_day, self.cfg.backtest.min_history_days,
                                count, step_days)

    def labelled(self, s: date) -> bool:
        """A training snapshot: its horizon ends by S, so its labels may be learned from."""
        return s + timedelta(days=self.horizon_days) <= self.snapshot

    def prepare(self, snapshots: Iterable[date]) -> None:
        """The features of these snapshots, and the labels of those that are training snapshots, computed
        together: one Spark job and one Delta commit per table instead of one each (a commit has a fixed cost of
        seconds). The models then find them here when they ask snapshot by snapshot."""
        wanted = sorted(set(snapshots))
        self._split("f", wanted, self.features_for)
        self._split("l", [s for s in wanted if self.labelled(s)], self.labels_for)

    def _split(self, kind: str, snapshots: list[date], compute: Callable[[list[date]], DataFrame]) -> None:
        todo = [s for s in snapshots if (kind, s) not in self._cache]
        if todo:
            rows = compute(todo)
            for s in todo:
                self._cache[(kind, s)] = rows.where(F.col("snapshot_date") == F.lit(s))

    def features(self, s: date) -> DataFrame:
        self._split("f", [s], self.features_for)
        return self._cache[("f", s)]

    def labels(self, s: date) -> DataFrame:
        self._split("l", [s], self.labels_for)
        return self._cache[("l", s)]

    def clv(self, s: date) -> ClvModel:
        """BG/NBD + Gamma-Gamma fitted on the features at `s`, once: the baseline and the deep model's inputs at S
        use the same fit (it is a function of those features alone)."""
        if ("clv", s) not in self._cache:
            self._cache[("clv", s)] = fit_clv(self.features(s), self.cfg.backtest.spend_fit_max_customers)
        return self._cache[("clv", s)]


class BacktestModel(Protocol):
    name: str
    version: str

    def snapshots(self, data: BacktestData) -> list[date]:
        """The snapshots whose features (and, for a training snapshot, labels) `fit` will ask for, so that the
        backtest computes them all together first (`BacktestData.prepare`)."""
        ...

    def fit(self, data: BacktestData) -> None: ...

    def predict(self, features: DataFrame, data: BacktestData) -> DataFrame: ...


def with_fallback(predictions: DataFrame, customers: DataFrame, spend: float, churn: float) -> DataFrame:
    """Every customer of `customers` gets a prediction: those the model cannot score get (spend, churn)."""
    return customers.select("customer_id").join(predictions, "customer_id", "left").select(
        "customer_id",
        F.coalesce("predicted_spend", F.lit(spend)).alias("predicted_spend"),
        F.coalesce("churn_probability", F.lit(churn)).alias("churn_probability"),
    )


class RfmRules:
    """RFM cells learned from the training snapshots (S - H, S - 2H, ...)."""

    name = "rfm_rules"

    def __init__(self) -> None:
        self.version = ""
        self.model: RfmModel | None = None
        self.fallback = (0.0, 1.0)        # the prospects' (spend, churn): for customers nobody can score

    def snapshots(self, data: BacktestData) -> list[date]:
        return data.snapshots(data.cfg.backtest.max_training_snapshots, data.horizon_days)

    def fit(self, data: BacktestData) -> None:
        t0 = time.perf_counter()
        train = self.snapshots(data)
        feats = reduce(DataFrame.unionByName, [data.features(s) for s in train])
        labels = reduce(DataFrame.unionByName, [data.labels(s) for s in train]).cache()
        self.model = fit_rfm(rfm_scores(feats), labels, data.cfg.backtest.rfm_shrinkage)
        segments = self.model.segments.collect()
        prospect = [r for r in segments if r["segment"] == PROSPECT]
        if prospect:
            self.fallback = (prospect[0]["spend"], prospect[0]["churn"])
        self.version = "rfm-" + hashlib.sha256(f"{train}|{data.cfg.backtest.rfm_shrinkage}".encode()).hexdigest()[:10]
        self.train = train
        _log(f"RFM cells fitted on {sum(r['n'] for r in segments):,} customer-snapshots ({time.perf_counter() - t0:.1f} s)")

    def predict(self, features: DataFrame, data: BacktestData) -> DataFrame:
        return predict_rfm(self.model, rfm_scores(features))


class BgNbdGammaGamma:
    """BG/NBD + Gamma-Gamma, fitted on the calibration period before S (the features at S), as the method
    prescribes; customers without a purchase get the RFM prospects' figures."""

    name = "bgnbd_gamma_gamma"

    def __init__(self, fallback_from: RfmRules) -> None:
        self.rfm = fallback_from
        self.version = ""
        self.model: ClvModel | None = None

    def snapshots(self, data: BacktestData) -> list[date]:
        return [data.snapshot]

    def fit(self, data: BacktestData) -> None:
        t0 = time.perf_counter()
        self.model = data.clv(data.snapshot)
        self.version = self.model.version
        _log("; ".join(f"{k} {v}" for k, v in self.model.describe().items()) + f" ({time.perf_counter() - t0:.1f} s)")

    def predict(self, features: DataFrame, data: BacktestData) -> DataFrame:
        return with_fallback(predict_clv(self.model, features, data.horizon_days), features, *self.rfm.fallback)


class Oracle:
    """The generator's own expectation (synthetic data only): the ceiling any model is measured against."""

    name = "oracle"

    def __init__(self, predictions: DataFrame) -> None:
        self.predictions = predictions
        self.version = "generator"

    def snapshots(self, data: BacktestData) -> list[date]:
        return []

    def fit(self, data: BacktestData) -> None:
        pass

    def predict(self, features: DataFrame, data: BacktestData) -> DataFrame:
        return self.predictions


def standard_columns(frame: DataFrame) -> DataFrame:
    """A model's predictions with every column of the contract (absent intervals as null doubles)."""
    return frame.select(
        "customer_id",
        *[(F.col(c) if c in frame.columns else F.lit(None)).cast("double").alias(c) for c in PREDICTION_COLUMNS[1:]])
