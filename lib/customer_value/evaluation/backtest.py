"""The backtest: train on snapshots before S, score every customer known at S, compare with [S, S + H).

Training snapshots are S - H, S - 2H, ... (as many as `backtest.max_training_snapshots` and the data allow):
their labels end by S, so nothing the models learn from happens at or after S. BG/NBD + Gamma-Gamma need no
labels and are fitted on the calibration features at S itself (data before S only), as the method prescribes.
On synthetic data the oracle (the generator's own expectation) is scored beside them.

Writes, each as one `replaceWhere` commit per (S, H), so a rerun replaces instead of adding:
gold.customer_features for every snapshot used, gold.backtest_predictions, gold.model_metrics; and the report
(metrics.json, PNGs, report.html) under `backtest.report_dir`.
"""

from __future__ import annotations

import functools
import tempfile
import time
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta, timezone
from functools import reduce
from typing import Callable, Sequence
from pathlib import Path

import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from customer_value import __version__
from customer_value.baselines.clv import ClvModel
from customer_value.cleaning.pseudonymise import load_key, pseudonym
from customer_value.config import Config
from customer_value.evaluation.models import (PREDICTION_COLUMNS, BacktestData, BacktestModel, BgNbdGammaGamma, Oracle,
                                               RfmRules, snapshots_before, standard_columns)
from customer_value.evaluation.report import vs_oracle, write_report
from customer_value.features.run import (fresh_snapshots, inputs_key, read_silver, rows_per_snapshot, snapshot_in,
                                         snapshot_labels, write_features, write_labels)
from customer_value.landing import Location, under_root
from customer_value.schemas import INTERVALS
from customer_value.synthetic.oracle import oracle
from customer_value.tables import Tables

RFM, CLV = RfmRules.name, BgNbdGammaGamma.name


class BacktestError(ValueError):
    pass


@dataclass(frozen=True)
class BacktestResult:
    snapshot: date
    horizon_days: int
    training_snapshots: list[date]
    report_dir: str
    metrics: dict[str, dict[str, float]]
    clv: ClvModel | None = None     # the fitted BG/NBD + Gamma-Gamma (backtest runs; not re-evaluations)
    context: dict[str, str] = field(default_factory=dict)   # what the report's header says


def _log(msg: str) -> None:
    print(f"[backtest] {msg}", flush=True)


def training_snapshots(snapshot: date, horizon_days: int, first_day: date, min_history_days: int,
                       max_count: int) -> list[date]:
    """S - H, S - 2H, ... while at least `min_history_days` of data precede them; oldest first."""
    return snapshots_before(snapshot, horizon_days, first_day, min_history_days, max_count, horizon_days)


def report_location(cfg: Config, snapshot: date, horizon_days: int) -> str:
    return f"{under_root(cfg, cfg.backtest.report_dir).rstrip('/')}/backtest/{snapshot}_h{horizon_days}"


def oracle_predictions(spark: SparkSession, cfg: Config, tables: Tables, snapshot: date, horizon_days: int) -> DataFrame | None:
    """The generator's expectation per customer, under the same pseudonyms as silver; None without ground truth."""
    if not tables.exists(spark, "synthetic.ground_truth"):
        return None
    truth = tables.read(spark, "synthetic.ground_truth").toPandas()
    expected = oracle(truth, cfg.synthetic, snapshot, horizon_days)[["user_id", "expected_spend", "churn_probability"]]
    frame = spark.createDataFrame(expected.astype({"user_id": str}))
    key = load_key(cfg.pseudonymisation)
    return frame.select(pseudonym(F.col("user_id"), key).alias("customer_id"),
                        F.col("expected_spend").alias("predicted_spend"), "churn_probability")


def side_by_side(labels: DataFrame, models: dict[str, tuple[DataFrame, str]], snapshot: date, horizon_days: int,
                 only: DataFrame | None = None) -> DataFrame:
    """gold.backtest_predictions rows: each model's predictions (the interface's columns) with its version,
    beside what happened (labels at S); restricted to the customers of `only` when given."""
    scored = reduce(DataFrame.unionByName, [
        standard_columns(frame).select("customer_id", F.lit(name).alias("model"), F.lit(version).alias("model_version"),
                                       *PREDICTION_COLUMNS[1:])
        for name, (frame, version) in models.items()])
    actual = labels.select("customer_id", F.col("future_spend").alias("actual_spend"),
                           F.col("future_orders").alias("actual_orders"), "churned")
    out = actual.join(scored, "customer_id")
    if only is not None:
        out = out.join(only, "customer_id", "left_semi")
    return out.select(
        F.lit(snapshot).alias("snapshot_date"), F.lit(horizon_days).alias("horizon_days"), "customer_id", "model",
        "model_version", "predicted_spend", "churn_probability", "actual_spend", "actual_orders", "churned",
        *INTERVALS)


def snapshot_and_horizon(cfg: Config, snapshot: date | None, horizon_days: int | None) -> tuple[date, int]:
    """S and H as asked, or the defaults: H = features.horizon_days, S = the latest whose horizon has passed."""
    horizon = horizon_days or cfg.features.horizon_days
    return snapshot or cfg.cleaning.today() + timedelta(days=1 - horizon), horizon


def backtest_inputs(spark: SparkSession, tables: Tables, silver: dict[str, DataFrame], cfg: Config, snapshot: date,
                    horizon_days: int) -> tuple[Callable[[list[date]], DataFrame], Callable[[list[date]], DataFrame]]:
    """`BacktestData`'s two loaders for a backtest of (S, H): the features of a list of snapshots, written to
    gold.customer_features in one commit and read back; their labels, those of training snapshots (horizon ended
    by S) written to gold.customer_labels in one commit for the training-set job and read back, S's own (the
    outcome the models are scored against) computed and never written.

    Snapshots the tables already hold from the same inputs (the same silver versions, settings and code: the
    pipeline's features stage computes the backtest's snapshots with its own when training is due) are read, not
    computed again (`features.run.fresh_snapshots`)."""
    @functools.cache
    def inputs() -> str:
        return inputs_key(spark, tables, cfg.features)

    def features_for(snapshots: list[date]) -> DataFrame:
        t0 = time.perf_counter()
        kept = set(snapshots) & fresh_snapshots(spark, tables, "gold.customer_features", inputs())
        todo = [s for s in snapshots if s not in kept]
        if todo:
            write_features(spark, tables, silver, todo, cfg.features, inputs())
        written = tables.read(spark, "gold.customer_features").where(snapshot_in(snapshots))
        counts = rows_per_snapshot(written)
        _log(f"features at {len(snapshots)} snapshot(s): " + (f"{len(kept)} written by an earlier job from the same "
             "inputs, " if kept else "") + (f"{len(todo)} computed in one commit" if todo else "none computed")
             + f" ({time.perf_counter() - t0:.1f} s): " + ", ".join(f"{s} {counts.get(s, 0):,}" for s in snapshots)
             + " customers")
        return written

    def labels_for(snapshots: list[date]) -> DataFrame:
        training = [s for s in snapshots if s + timedelta(days=horizon_days) <= snapshot]
        outcome = [s for s in snapshots if s not in training]
        parts = [snapshot_labels(silver, outcome, horizon_days)] if outcome else []
        if training:
            t0 = time.perf_counter()
            kept = set(training) & fresh_snapshots(spark, tables, "gold.customer_labels", inputs(), horizon_days)
            todo = [s for s in training if s not in kept]
            if todo:
                write_labels(spark, tables, silver, todo, horizon_days, key=inputs())
            parts.append(tables.read(spark, "gold.customer_labels").where(
                f"{snapshot_in(training)} AND horizon_days = {horizon_days}"))
            _log(f"labels at {', '.join(map(str, training))}: " + (f"{len(kept)} written by an earlier job from the "
                 "same inputs, " if kept else "") + (f"{len(todo)} in one commit" if todo else "none computed")
                 + f" ({time.perf_counter() - t0:.1f} s)")
        return reduce(DataFrame.unionByName, parts)

    return features_for, labels_for


def _plan(spark: SparkSession, cfg: Config, tables: Tables, silver: dict[str, DataFrame], snapshot: date | None,
          horizon_days: int | None, extra_models: Sequence[BacktestModel]) -> tuple[BacktestData, list[date]]:
    """The backtest's data (S, H, the first day of data, the loaders) and the baselines' training snapshots;
    raises BacktestError where there is nothing to backtest."""
    snapshot, horizon = snapshot_and_horizon(cfg, snapshot, horizon_days)
    last_day = cfg.cleaning.today()
    if snapshot + timedelta(days=horizon) > last_day + timedelta(days=1):
        raise BacktestError(f"the horizon [{snapshot}, {snapshot + timedelta(days=horizon)}) ends after the last day "
                            f"of data ({last_day}): choose --snapshot-date <= {last_day + timedelta(days=1 - horizon)}")
    for model in extra_models:              # before any work: a model that cannot be backtested here says so
        check = getattr(model, "check", None)
        if check is not None:
            check(snapshot, horizon)
    first = silver["orders"].agg(F.min("order_ts")).collect()[0][0]
    if first is None:
        raise BacktestError("silver.orders is empty: nothing to backtest")
    train = training_snapshots(snapshot, horizon, first.date(), cfg.backtest.min_history_days,
                               cfg.backtest.max_training_snapshots)
    if not train:
        raise BacktestError(f"no training snapshot: S - {horizon} days is less than {cfg.backtest.min_history_days} "
                            f"days after the first order ({first.date()})")
    data = BacktestData(spark, cfg, tables, snapshot, horizon, first.date(),
                        *backtest_inputs(spark, tables, silver, cfg, snapshot, horizon))
    return data, train


def _baselines() -> list[BacktestModel]:
    rfm = RfmRules()
    return [rfm, BgNbdGammaGamma(fallback_from=rfm)]


def backtest_snapshots(spark: SparkSession, cfg: Config,
                       extra_models: Sequence[BacktestModel] = ()) -> tuple[list[date], list[date], int]:
    """The snapshots the default backtest (the train stage's) computes features for, those of them it writes
    labels for, and its horizon; nothing where it cannot run (it says why when it runs). Computed nothing."""
    tables = Tables(cfg.storage)
    try:
        data, _ = _plan(spark, cfg, tables, read_silver(spark, tables), None, None, extra_models)
    except BacktestError:
        return [], [], 0
    wanted = sorted({data.snapshot, *(s for model in [*_baselines(), *extra_models] for s in model.snapshots(data))})
    return wanted, [s for s in wanted if data.labelled(s)], data.horizon_days


def run_backtest(spark: SparkSession, cfg: Config, snapshot: date | None = None,
                 horizon_days: int | None = None, extra_models: Sequence[BacktestModel] = ()) -> BacktestResult:
    """The whole backtest of (S, H): every model fitted on what precedes S and predicting at S (the baselines,
    the oracle on synthetic data, then `extra_models`, e.g. the deep model), then `evaluate_backtest`."""
    tables = Tables(cfg.storage)
    silver = read_silver(spark, tables)
    data, train = _plan(spark, cfg, tables, silver, snapshot, horizon_days, extra_models)
    snapshot, horizon = data.snapshot, data.horizon_days
    _log(f"S = {snapshot}, horizon {horizon} days; baseline training snapshots {', '.join(map(str, train))}")
    models = _baselines()
    truth = oracle_predictions(spark, cfg, tables, snapshot, horizon)
    if truth is not None:
        models.append(Oracle(truth))
    models += list(extra_models)
    # every snapshot any model learns from, and S: computed together (one commit per table), then fitted
    data.prepare([snapshot, *(s for model in models for s in model.snapshots(data))])
    feats = data.features(snapshot)
    predicted = {}
    for model in models:
        model.fit(data)
        predicted[model.name] = (model.predict(feats, data), model.version)
    predictions = side_by_side(data.labels(snapshot), predicted, snapshot, horizon,
                               only=None if truth is None else truth.select("customer_id"))
    tables.write(predictions, "gold.backtest_predictions", options={"mergeSchema": "true"},
                 replace_where=f"snapshot_date = '{snapshot}' AND horizon_days = {horizon}")
    _log("gold.backtest_predictions written")
    clv = next(m for m in models if isinstance(m, BgNbdGammaGamma)).model
    context = {
        "training snapshots": ", ".join(map(str, train)),
        **clv.describe(),
        "RFM shrinkage": f"{cfg.backtest.rfm_shrinkage:g} customers",
    }
    for model in extra_models:
        if getattr(model, "training", None):
            context[f"{model.name} training snapshots"] = ", ".join(model.training["training_set"]["snapshots"])
    return replace(evaluate_backtest(spark, cfg, snapshot, horizon, train, context), clv=clv)


def canonical_rows(pdf: pd.DataFrame) -> pd.DataFrame:
    """The rows sorted by every column, index reset: `toPandas()` returns them in whatever order the tasks ran.

    The metrics do not depend on the order anyway (they sort their own inputs); this makes the rest of the report
    (per-model frames, plots) a function of the table's content too."""
    return pdf.sort_values(list(pdf.columns), kind="stable", ignore_index=True)


def model_versions(pdf: pd.DataFrame) -> dict[str, str]:
    """Each model's version; several (a table that mixes fits) are all named, sorted, rather than whichever row
    happened to come first."""
    return {str(m): "+".join(sorted({str(v) for v in group})) for m, group in pdf.groupby("model")["model_version"]}


def selection_snapshots(spark: SparkSession, tables: Tables, horizon_days: int) -> list[date]:
    """The snapshots of gold.model_metrics where settings were chosen (role `selection`) for this horizon."""
    if not tables.exists(spark, "gold.model_metrics"):
        return []
    metrics = tables.read(spark, "gold.model_metrics")
    if "role" not in metrics.columns:
        return []
    rows = (metrics.where((F.col("role") == "selection") & (F.col("horizon_days") == horizon_days))
            .select("snapshot_date").distinct().collect())
    return sorted(r.snapshot_date for r in rows)


def _role_line(spark: SparkSession, tables: Tables, role: str, snapshot: date, horizon_days: int) -> str:
    """The report's word on the protocol: a selection snapshot says so; a test snapshot is untouched only where no
    setting was chosen on it or on a later snapshot (whose features and labels reach into its horizon)."""
    if role == "selection":
        return "selection: settings are chosen on this snapshot; report figures from a later, untouched one"
    chosen = selection_snapshots(spark, tables, horizon_days)
    touched = [s for s in chosen if s + timedelta(days=horizon_days) > snapshot]
    if touched:
        _log(f"WARNING: settings were chosen on {', '.join(map(str, touched))}, whose horizon does not end by S = "
             f"{snapshot}: S is not an untouched test snapshot")
        return f"test, NOT untouched: settings were chosen on {', '.join(map(str, touched))}"
    return ("test: untouched (settings chosen on " + ", ".join(map(str, chosen)) + ")") if chosen else "test"


def evaluate_backtest(spark: SparkSession, cfg: Config, snapshot: date, horizon_days: int,
                      train: list[date] | None = None, extra: dict[str, str] | None = None) -> BacktestResult:
    """Report and gold.model_metrics from gold.backtest_predictions of (S, H): the `evaluate` job."""
    tables = Tables(cfg.storage)
    rows = tables.read(spark, "gold.backtest_predictions").where(
        (F.col("snapshot_date") == F.lit(snapshot)) & (F.col("horizon_days") == horizon_days))
    cols = ["customer_id", "model", "model_version", "predicted_spend", "churn_probability", "actual_spend", "churned"]
    cols += [c for c in INTERVALS if c in rows.columns]
    pdf = canonical_rows(rows.select(*cols).toPandas())
    if pdf.empty:
        raise BacktestError(f"gold.backtest_predictions has no rows for snapshot {snapshot}, horizon {horizon_days}: "
                            "run `customer-value backtest` first")
    versions = model_versions(pdf)
    customers = pdf["customer_id"].nunique()
    context = {
        "snapshot S": str(snapshot), "horizon": f"{horizon_days} days: [{snapshot}, {snapshot + timedelta(days=horizon_days)})",
        "customers": f"{customers:,}", "actual churn rate": f"{pdf.groupby('customer_id')['churned'].first().mean():.3f}",
        **({"training snapshots": ", ".join(map(str, train))} if train else {}),
        **(extra or {}),
        "model versions": ", ".join(f"{m} {v}" for m, v in sorted(versions.items())),
        "customer_value": __version__,
    }
    role = cfg.backtest.role
    context["role"] = _role_line(spark, tables, role, snapshot, horizon_days)
    target = report_location(cfg, snapshot, horizon_days)
    with tempfile.TemporaryDirectory() as tmp:
        metrics = write_report(tmp, pdf, f"Backtest at {snapshot}, {horizon_days}-day horizon", context)
        out = Location.of(target)
        for path in sorted(Path(tmp).iterdir()):
            out.child(path.name).write_bytes(path.read_bytes())
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    ratios = vs_oracle(metrics)   # on synthetic data: each metric also as a share of the oracle's
    rows = {m: {**values, **ratios.get(m, {})} for m, values in metrics.items()}
    long = pd.DataFrame([(m, versions.get(m, ""), snapshot, horizon_days, role, k, float(v), now)
                         for m, values in rows.items() for k, v in values.items()],
                        columns=["model", "version", "snapshot_date", "horizon_days", "role", "metric", "value",
                                 "evaluated_at"])
    frame = spark.createDataFrame(long, "model string, version string, snapshot_date date, horizon_days int, "
                                        "role string, metric string, value double, evaluated_at timestamp")
    # a selection and a test backtest of the same (S, H) are kept side by side (the test then says S was touched);
    # a table written before the role column gains it (mergeSchema), and its rows of (S, H) are replaced
    where = f"snapshot_date = '{snapshot}' AND horizon_days = {horizon_days}"
    if tables.exists(spark, "gold.model_metrics") and "role" in tables.read(spark, "gold.model_metrics").columns:
        where += f" AND (role = '{role}' OR role IS NULL)"
    tables.write(frame, "gold.model_metrics", options={"mergeSchema": "true"}, replace_where=where)
    _log(f"report: {target}/report.html; {len(long)} metrics in gold.model_metrics; role: {context['role']}")
    for m, values in metrics.items():
        _log(f"  {m:<20} spend Gini {values.get('spend_gini', float('nan')):.3f}, churn ROC-AUC "
             f"{values.get('churn_roc_auc', float('nan')):.3f}, top-decile capture {values.get('spend_top_decile_capture', float('nan')):.3f}")
    return BacktestResult(snapshot, horizon_days, train or [], target, metrics, context=context)
