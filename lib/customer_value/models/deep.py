"""The deep model in the backtest's interface: fit = training set + Horovod training + registration;
predict = the SavedModel applied in a Spark `mapInPandas`, loaded once per Python worker.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import shutil
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from customer_value.baselines.clv import ClvModel
from customer_value.config import Config
from customer_value.evaluation.metrics import spend_metrics
from customer_value.evaluation.models import BacktestData, snapshots_before
from customer_value.landing import under_root
from customer_value.models import registry
from customer_value.models.btyd_inputs import prepared, uses_btyd
from customer_value.models import promotion
from customer_value.models.blend import baseline_columns, baseline_from_numeric, blended, fit_blend
from customer_value.models.fit import build_training_set, launch
from customer_value.models.network import CHURN, SPEND, arrays_from_frame
from customer_value.models.spec import FeatureSpec, model_inputs, resolved_network
from customer_value.schemas import INTERVALS
from customer_value.models.ziln import (checked_level, distribution, expected_spend, spend_quantile,
                                        spend_quantile_if_buying)

PREDICTIONS = ("customer_id string, predicted_spend double, churn_probability double, buy_probability double, "
               "spend_p10 double, spend_p90 double, spend_if_buying_p10 double, spend_if_buying_p90 double")


class LeakError(ValueError):
    pass


def _log(msg: str) -> None:
    print(f"[train] {msg}", flush=True)


@functools.lru_cache(maxsize=4)
def load_saved_model(path: str, threads: int = 1):
    """The SavedModel at `path`, loaded at most once per process (keyed by path: a version never shares it).

    `threads`: TensorFlow's intra-op threads (`scoring.threads_per_worker`), set here on every path that loads a
    model in a Spark Python worker: a reused worker keeps the thread count of the first model it loaded, and the
    count changes some float32 results in their last bits. Before, the backtest's predictions loaded with
    TensorFlow's default (one thread per core) and a score stage that ran after them in the same process, on the
    same reused workers, served other last digits than the same stage run alone (one customer of 561)."""
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:                          # this process's runtime already started with them set
        pass
    return tf.keras.models.load_model(path, compile=False)


_TRACED: dict[int, object] = {}


def traced(model):
    """The model's inference call as one traced TensorFlow graph, kept per model object: about twice the rows/s
    of calling the Keras model eagerly on this machine's CPUs (bench/scoring.py); XLA was slower."""
    fn = _TRACED.get(id(model))
    if fn is None:
        import tensorflow as tf

        @tf.function(reduce_retracing=True)
        def call(inputs):
            return model(inputs, training=False)

        fn = _TRACED[id(model)] = call
    return fn


def predict_arrays(model, arrays: dict[str, np.ndarray], batch: int = 65536, interval_scale: float = 1.0,
                   mean_scale: float = 1.0, spend_cap: float = math.inf, level_scale: float = 1.0,
                   blend_weight: float = 1.0, blend_columns: tuple[int, int] | None = None) -> dict[str, np.ndarray]:
    """Expected spend, its 10-90 % interval given a purchase, P(buy) and churn probability per row."""
    n = len(arrays["numeric"])
    logits, churn = [], []
    call = traced(model)
    for i in range(0, n, batch):
        out = call({k: v[i:i + batch] for k, v in arrays.items()})
        logits.append(np.asarray(out[SPEND], dtype=np.float64))
        churn.append(np.asarray(out[CHURN], dtype=np.float64))
    lg = np.concatenate(logits) if logits else np.zeros((0, 3))
    ch = np.concatenate(churn) if churn else np.zeros((0, 1))
    return predictions(lg, ch, interval_scale, mean_scale, spend_cap, level_scale, blend_weight, blend_columns,
                       arrays.get("numeric"))


def predictions(spend_logits: np.ndarray, churn_logits: np.ndarray, interval_scale: float = 1.0,
                mean_scale: float = 1.0, spend_cap: float = math.inf, level_scale: float = 1.0,
                blend_weight: float = 1.0, blend_columns: tuple[int, int] | None = None,
                numeric: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The network's raw outputs (spend [n, 3] or [n, towers, 3], churn [n, 1] or [n, towers]) as predictions;
    the expected spend blended with BG/NBD's (`models.blend`: weight `blend_weight`, BG/NBD's amount read back
    from the `numeric` input array at `blend_columns`), times `level_scale` (the time-forward level,
    `ziln.level_scale`), and it and the interval at most `spend_cap` (the artifact's, `ziln.spend_bounds`). Two
    10-90 % intervals: `spend_p10`/`spend_p90` of the horizon's spend, no purchase included (0 where
    P(no purchase) >= q), and `spend_if_buying_p10`/`_p90` of the spend given a purchase; both with the
    interval's calibration. The level and the blend, corrections of the amount, move neither."""
    lg = np.asarray(spend_logits, dtype=np.float64)
    ch = np.asarray(churn_logits, dtype=np.float64)
    ch = ch.reshape(len(ch), -1)                                  # [n, towers]
    p, _, _ = distribution(lg)
    spend = expected_spend(lg, mean_scale)
    if blend_weight < 1.0:
        if blend_columns is None or numeric is None:
            raise ValueError(f"this model serves a blend with BG/NBD (weight {blend_weight}): its numeric inputs "
                             "and the columns of BG/NBD's expected spend in them are needed")
        spend = blended(spend, baseline_from_numeric(numeric, blend_columns), blend_weight)
    return {"predicted_spend": np.minimum(level_scale * spend, spend_cap),
            "churn_probability": (1.0 / (1.0 + np.exp(-ch))).mean(axis=1),
            "buy_probability": p,
            "spend_p10": np.minimum(spend_quantile(lg, 0.1, interval_scale), spend_cap),
            "spend_p90": np.minimum(spend_quantile(lg, 0.9, interval_scale), spend_cap),
            "spend_if_buying_p10": np.minimum(spend_quantile_if_buying(lg, 0.1, interval_scale), spend_cap),
            "spend_if_buying_p90": np.minimum(spend_quantile_if_buying(lg, 0.9, interval_scale), spend_cap)}


def calibration_of(model_dir: str | Path) -> dict:
    """The artifact's calibration of the interval, the mean and the level (1.0 each where the artifact has none),
    its blend with BG/NBD (`models.blend`: weight 1.0, the network alone, where it has none; the columns of
    BG/NBD's amount among its numeric inputs) and its cap on the published amounts (none where the artifact
    predates the bounds): the keyword arguments of `predict_arrays` and `predictions`."""
    folder = Path(model_dir)
    f = folder / "calibration.json"
    raw = json.loads(f.read_text()) if f.exists() else {}
    weight = float(raw.get("blend_weight", 1.0))
    columns = None
    if weight < 1.0:
        columns = baseline_columns(FeatureSpec.from_json((folder / "spec.json").read_text()).numeric_inputs)
        if columns is None:
            raise ValueError(f"{folder}: calibration.json blends with BG/NBD but the spec has no BG/NBD inputs")
    return {**{k: float(raw.get(k, 1.0)) for k in ("interval_scale", "mean_scale", "level_scale")},
            "spend_cap": float(raw.get("bounds", {}).get("spend_cap", math.inf)),
            "blend_weight": weight, "blend_columns": columns}


def score_frame(features: DataFrame, model_dir: str, spec: FeatureSpec,
                btyd_max_customers: int = 200_000, btyd_fit: ClvModel | None = None, threads: int = 1,
                baseline: bool = False) -> DataFrame:
    """Predictions for every row of one snapshot's gold.customer_features rows, in a mapInPandas (`btyd_fit`:
    BG/NBD + Gamma-Gamma fitted on these features, where the caller has it; else fitted here; `threads`: as
    `load_saved_model`). `baseline`: also `baseline_spend`, BG/NBD's expected spend as the blend reads it back
    from the same rows' inputs (`models.blend`; NaN without a purchase), for the level check to choose the blend
    on exactly what serving will blend."""
    saved = str(Path(model_dir) / "saved_model")
    scale = calibration_of(model_dir)
    columns = baseline_columns(spec.numeric_inputs) if baseline else None
    if baseline and columns is None:
        raise ValueError("baseline_spend asked of a model without BG/NBD inputs")

    def score(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        model = load_saved_model(saved, threads)
        for pdf in batches:
            arrays = arrays_from_frame(pdf, spec)
            out = predict_arrays(model, arrays, **scale) if len(pdf) else {}
            extra = {"baseline_spend": baseline_from_numeric(arrays["numeric"], columns)} if baseline else {}
            yield pd.DataFrame({"customer_id": pdf["customer_id"].to_numpy(),
                                **{k: out.get(k, np.zeros(0)) for k in
                                   ("predicted_spend", "churn_probability", "buy_probability", *INTERVALS)},
                                **extra})

    schema = PREDICTIONS + (", baseline_spend double" if baseline else "")
    return model_inputs(prepared(features, spec, btyd_max_customers, btyd_fit), spec).mapInPandas(score, schema)


BACKTEST_DIR = "backtest"    # in a version's artifact: the model its backtest scored, where a refit serves


def backtested(path: Path) -> Path:
    """The model a version's backtest scored: its `backtest/` where the served model is a refit, else itself."""
    return path / BACKTEST_DIR if (path / BACKTEST_DIR / "training.json").exists() else path


def _whole(folder: Path) -> bool:
    """A staged model is whole once its training record exists: it is written last."""
    return (folder / "training.json").exists() and (folder / "saved_model").exists()


def _checked(predicted: np.ndarray, actual: np.ndarray, buyers: int, min_z: float) -> dict:
    """`ziln.checked_level` as the level check records it: the measured level, its noise and the one applied."""
    c = checked_level(predicted, actual, buyers, min_z)
    return {"measured_level": c["measured"], "level_se": c["se"], "level_z": c["z"], "level_scale": c["level_scale"]}


def _z(result: dict) -> str:
    if result.get("level_z") is None:
        return "its noise unknown"
    applied = "applied" if result["level_scale"] == result["measured_level"] else "within its noise: not applied"
    return f"measured {result['measured_level']:.3f}, {result['level_z']:.1f} standard errors from 1, {applied}"


def _set_level(folder: Path, level: float, blend_weight: float = 1.0) -> None:
    calibration = json.loads((folder / "calibration.json").read_text())
    calibration["level_scale"] = level
    calibration["blend_weight"] = blend_weight
    (folder / "calibration.json").write_text(json.dumps(calibration, indent=1))


class DeepModel:
    """The product's model. `fit` trains and registers a new version; `DeepModel.load` serves a registered one."""

    name = "deep_ziln"

    def __init__(self, cfg: Config, registered: registry.RegisteredModel | None = None) -> None:
        self.cfg = cfg
        self.registered, self.version, self.spec, self.training, self.run_id = None, "", None, {}, None
        self.path: Path | None = None         # the model the backtest scores: `backtest/` of a refitted version
        self.refit: dict | None = None        # the served refit's training record, once trained (`_refit`)
        self._data: BacktestData | None = None
        self._staged: Path | None = None
        self._work: Path | None = None
        if registered is not None:
            self._use(registered)

    def _use(self, registered: registry.RegisteredModel) -> None:
        """Backtest a registered version: its label and MLflow run, and the model its backtest scored (the
        version's `backtest/` where the served model is a refit, `backtested`)."""
        self.registered = registered
        self.version = registered.label
        self._load(backtested(registered.path))
        self.run_id = registered.run_id

    def _load(self, path: Path) -> None:
        self.path = path
        self.spec = FeatureSpec.from_json((path / "spec.json").read_text())
        self.training = json.loads((path / "training.json").read_text())

    @classmethod
    def load(cls, cfg: Config, ref: str) -> "DeepModel":
        return cls(cfg, registry.resolve(cfg, ref))

    def check(self, snapshot: date, horizon_days: int) -> None:
        """A registered model may be backtested at S only if it learned nothing from [S, ...) and was trained
        for this horizon; raises LeakError otherwise. A model still to be fitted passes."""
        if self.registered is None:
            return
        ts = self.training["training_set"]
        ends = max(date.fromisoformat(s) for s in ts["snapshots"]) + timedelta(days=int(ts["horizon_days"]))
        if ends > snapshot:
            raise LeakError(f"model {self.version} learned from labels up to {ends}, after the backtest's "
                            f"S = {snapshot}: backtest it at S >= {ends}")
        if int(ts["horizon_days"]) != horizon_days:
            raise LeakError(f"model {self.version} predicts a {ts['horizon_days']}-day horizon, not {horizon_days} days")

    def fit(self, data: BacktestData) -> None:
        self.check(data.snapshot, data.horizon_days)
        self._data = data
        if self.registered is None:
            self._train(data)

    def _run_key(self, data: BacktestData) -> str:
        """The same (S, H, training config) → the same key, and so the same work folder: a rerun after a crash
        finds its checkpoints and resumes; after a successful registration the folder is removed, so the next run
        trains afresh. A run killed after registering its version, during the backtest, left that version to
        finish instead (`registry.unfinished`)."""
        return hashlib.sha256(json.dumps([str(data.snapshot), data.horizon_days, self.cfg.training.model_dump()],
                                         sort_keys=True, default=str).encode()).hexdigest()[:12]

    def snapshots(self, data: BacktestData) -> list[date]:
        """The training snapshots `fit` will read: none for a registered version or one an interrupted run left
        to adopt (nothing is trained)."""
        if self.registered is not None or registry.unfinished(self.cfg, self._run_key(data)) is not None:
            return []
        tc = self.cfg.training
        return sorted({*data.snapshots(tc.snapshots, tc.snapshot_step_days), *self._level_snapshots(data),
                       *self._refit_snapshots(data)})

    def _refit_snapshots(self, data: BacktestData) -> list[date]:
        """The served refit's training snapshots: the backtest's recipe one horizon later, so the newest is S
        itself (labels of [S, S + H), in by the scoring date); none where the refit is off."""
        tc = self.cfg.training
        if not tc.refit:
            return []
        return snapshots_before(data.snapshot + timedelta(days=data.horizon_days), data.horizon_days, data.first_day,
                                self.cfg.backtest.min_history_days, tc.snapshots, tc.snapshot_step_days)

    def _level_snapshots(self, data: BacktestData) -> list[date]:
        """The time-forward level check's training snapshots (horizon ended by S − H), then S − H where it is
        scored (its labels end by S); none where the check is off or nothing precedes S − H."""
        tc = self.cfg.training
        if not tc.level_check:
            return []
        at = data.snapshot - timedelta(days=data.horizon_days)
        train = snapshots_before(at, data.horizon_days, data.first_day, self.cfg.backtest.min_history_days,
                                 tc.snapshots, tc.snapshot_step_days)
        return [*train, at] if train else []

    def _plan(self, work: Path, ts, out_dir: Path) -> dict:
        """The Horovod ranks' plan for a training set built under `work / "data"`: this config's training
        settings, the network resolved on that split (`wide: auto`), checkpoints and rank reports under `work`."""
        tc = self.cfg.training
        return {
            "train_url": ts.train_url, "validation_url": ts.validation_url, "spec": str(work / "data" / "spec.json"),
            "network": resolved_network(tc.network.model_dump(), ts.spec),
            "seed": tc.seed, "epochs": tc.epochs, "patience": tc.patience,
            "batch_size": tc.batch_size, "learning_rate": tc.learning_rate, "churn_loss_weight": tc.churn_loss_weight,
            "threads_per_rank": tc.threads_per_rank, "horovod": tc.horovod.model_dump(),
            "bounds": {"spend_cap_multiple": tc.spend_cap_multiple, "mu_log_margin": tc.mu_log_margin},
            "backward_passes_per_step": tc.horovod.backward_passes_per_step,
            "checkpoint_dir": str(work / "checkpoints"), "out_dir": str(out_dir), "report_dir": str(work / "ranks"),
        }

    def _training_set(self, data: BacktestData, snapshots: list[date], work: Path):
        tc = self.cfg.training
        return build_training_set(data.spark, data.tables, self.cfg.features, snapshots, data.horizon_days,
                                  str(work / "data"), tc.seed, tc.validation_share, tc.rows_per_group, tc.num_proc,
                                  self.cfg.backtest.spend_fit_max_customers if tc.btyd_inputs else None)

    def _level_check(self, data: BacktestData, work: Path) -> dict:
        """The level of this training recipe one horizon ahead in time (`ziln.level_scale`): the same settings
        trained on the snapshots whose horizon ended by S − H, scored at S − H against what its customers spent
        in [S − H, S). Nothing at or after S is read. Kept in `work` once measured: a rerun after a crash in the
        main training does not measure it again."""
        done = work / "level.json"
        if done.exists():
            return json.loads(done.read_text())
        snaps = self._level_snapshots(data)
        if not snaps:
            _log("level check: no training snapshot before S - H, level_scale 1")
            return {"snapshot": None, "level_scale": 1.0}
        *train, at = snaps
        tc = self.cfg.training
        t0 = time.perf_counter()
        ts = self._training_set(data, train, work)
        reports = launch(self._plan(work, ts, work / "model"), tc.num_proc, tc.launcher)
        blend = tc.blend and uses_btyd(ts.spec)      # BG/NBD's expected spend at S - H beside the network's
        scored = score_frame(data.features(at), str(work / "model"), ts.spec,
                             self.cfg.backtest.spend_fit_max_customers, data.clv(at) if uses_btyd(ts.spec) else None,
                             self.cfg.scoring.threads_per_worker, baseline=blend)
        pdf = (scored.join(data.labels(at).select("customer_id", "future_spend"), "customer_id")
               .select("customer_id", "predicted_spend", "future_spend", *(["baseline_spend"] if blend else []))
               .toPandas().sort_values("customer_id", kind="stable"))       # one order: the same sums on a rerun
        predicted, actual = float(pdf.predicted_spend.sum()), float(pdf.future_spend.sum())
        buyers = int((pdf.future_spend > 0).sum())
        metrics = spend_metrics(pdf.future_spend, pdf.predicted_spend) if len(pdf) else {}
        result = {"snapshot": str(at), "training_snapshots": [str(s) for s in train],
                  "customers": len(pdf), "buyers": buyers, "predicted_total": predicted, "actual_total": actual,
                  # the backtest's own definitions (`evaluation.metrics`); undefined (no spend at all) is None
                  **{k: (metrics[k] if math.isfinite(metrics.get(k, math.nan)) else None)
                     for k in ("spend_total_ratio", "spend_mae", "spend_gini")},
                  "epochs": reports[0]["epochs_run"], "blend_weight": 1.0,
                  **_checked(pdf.predicted_spend.to_numpy(), pdf.future_spend.to_numpy(), buyers, tc.level_min_z)}
        ratio = "n/a" if result["spend_total_ratio"] is None else f"{result['spend_total_ratio']:.3f}"
        _log(f"level check at {at}: the same settings trained on {train[0]} .. {train[-1]} predicted "
             f"{predicted:,.0f} against {actual:,.0f} spent (ratio {ratio}, {buyers:,} buyers, {_z(result)}): "
             f"level_scale {result['level_scale']:.3f} ({time.perf_counter() - t0:.1f} s)")
        if blend and len(pdf):
            fitted = fit_blend(pdf.predicted_spend.to_numpy(), pdf.baseline_spend.to_numpy(np.float64),
                               pdf.future_spend.to_numpy(), buyers, tc.blend_max_gini_loss, min_z=tc.level_min_z)
            own, best = fitted["table"][-1], next(r for r in fitted["table"] if r["w"] == fitted["weight"])
            result.update(blend_weight=fitted["weight"], level_scale=fitted["level_scale"], blend=fitted["table"])
            _log(f"blend with BG/NBD at {at}: weight {fitted['weight']:.1f} on the network (spend MAE "
                 f"{best['mae']:.1f} against {own['mae']:.1f} for the network alone, Gini {best['gini']:.3f} against "
                 f"{own['gini']:.3f}), level_scale {fitted['level_scale']:.3f}")
        done.write_text(json.dumps(result, indent=1))
        return result

    def _train(self, data: BacktestData) -> None:
        """The backtest's model: the level check, then the recipe trained on the snapshots before S, staged in
        `models/<name>/_staging-<run key>/` (under `backtest/` where a refit will serve). Registered by `finish`
        once the backtest has scored it (and the refit is trained): a version is registered whole. A run killed
        after staging it backtests that staged model instead of training it again."""
        tc = self.cfg.training
        run_key = self._run_key(data)
        work = Path(under_root(self.cfg, tc.work_dir)).resolve() / run_key
        interrupted = registry.unfinished(self.cfg, run_key)
        if interrupted is not None:
            self._adopt(interrupted)
            shutil.rmtree(work, ignore_errors=True)
            return
        staged = registry.models_root(self.cfg) / tc.model_name / f"_staging-{run_key}"
        target = staged / BACKTEST_DIR if tc.refit else staged
        self._staged, self._work = staged, work
        if _whole(target):
            self._load(target)
            self.run_id = self.training["mlflow_run_id"]
            self.version = f"{tc.model_name}/{registry.next_version(self.cfg)}"
            _log(f"the model an interrupted run trained for this snapshot, horizon and training configuration is "
                 f"staged at {target}: backtesting it instead of training again")
            return
        snapshots = data.snapshots(tc.snapshots, tc.snapshot_step_days)
        if not snapshots:
            raise ValueError("no training snapshot has enough history before it (backtest.min_history_days)")
        for s in sorted({*snapshots, *self._level_snapshots(data)}):     # the level check's read here too
            data.features(s)
            data.labels(s)
        level = self._level_check(data, work / "level") if tc.level_check else None
        if (work / "checkpoints" / "state.json").exists():
            _log(f"resuming from the checkpoints in {work / 'checkpoints'}")
        t0 = time.perf_counter()
        ts = self._training_set(data, snapshots, work)
        _log(f"training set: {ts.train_rows:,} train + {ts.validation_rows:,} validation rows from snapshots "
             f"{', '.join(ts.snapshots)} (Delta versions {ts.delta_versions}) ({time.perf_counter() - t0:.1f} s)")
        plan = self._plan(work, ts, target)
        network = plan["network"]                   # `wide: auto` decided on this split
        client = registry.client(self.cfg)
        exp = registry.experiment_id(self.cfg)
        run = client.create_run(exp, run_name=f"train-{data.snapshot}-{run_key}")
        self.run_id = run.info.run_id
        params = {"snapshot": str(data.snapshot), "horizon_days": data.horizon_days, "num_proc": tc.num_proc,
                  "launcher": tc.launcher, "training_snapshots": ",".join(ts.snapshots), "train_rows": ts.train_rows,
                  "validation_rows": ts.validation_rows, **{f"delta_version.{k}": v for k, v in ts.delta_versions.items()},
                  **{k: v for k, v in plan.items() if k in ("seed", "epochs", "patience", "batch_size", "learning_rate",
                                                            "churn_loss_weight", "threads_per_rank")},
                  **{f"network.{k}": v for k, v in network.items()}}
        for k, v in params.items():
            client.log_param(self.run_id, k, str(v))
        t0 = time.perf_counter()
        _log(f"Horovod: {tc.num_proc} ranks via {tc.launcher}, batch {tc.batch_size}/rank, up to {tc.epochs} epochs")
        reports = launch(plan, tc.num_proc, tc.launcher)
        r0 = reports[0]
        for metric, values in r0["history"].items():
            for i, v in enumerate(values):
                client.log_metric(self.run_id, metric, v, step=r0["initial_epoch"] + i)
        _log(f"trained: {r0['epochs_run']} epochs of {r0['steps_per_epoch']} steps per rank, best validation loss "
             f"{r0['best_loss']:.4f} at epoch {r0['best_epoch']} ({time.perf_counter() - t0:.1f} s)")
        (target / "spec.json").write_text((work / "data" / "spec.json").read_text())
        if level is not None:         # the served amounts' level, measured one horizon earlier (`_level_check`)
            _set_level(target, level["level_scale"], level.get("blend_weight", 1.0))
            client.log_param(self.run_id, "level_scale", str(level["level_scale"]))
            client.log_param(self.run_id, "blend_weight", str(level.get("blend_weight", 1.0)))
            for k in ("spend_total_ratio", "spend_mae", "spend_gini"):
                if level.get(k) is not None:
                    client.log_metric(self.run_id, f"level_check.{k}", float(level[k]))
        training = {"run_key": run_key, "training_set": ts.describe(), "plan": {k: v for k, v in plan.items() if "dir" not in k},
                    "ranks": [{k: v for k, v in r.items() if not k.endswith("_keys")} for r in reports],
                    "config": self.cfg.training.model_dump(), "mlflow_run_id": self.run_id, "level_check": level}
        # written last: the staged model is whole once it exists (`_whole`)
        (target / "training.json").write_text(json.dumps(training, indent=1, default=str))
        self._load(target)
        self.version = f"{tc.model_name}/{registry.next_version(self.cfg)}"      # the number it will be registered as
        _log(f"staged the backtest's model at {target}")

    def _refit(self, metrics: dict[str, dict[str, float]]) -> None:
        """The version that serves: the backtest's recipe (its settings, its network as resolved, its epoch count)
        trained again on the snapshots one horizon later, the newest being S, whose labels the backtest scored
        against; staged beside the backtest's model. Its level is the backtest's own measurement: the backtested
        model (trained up to S − H) scored at S is this recipe one horizon ahead, exactly as the refit scored at
        S + H will be. A run killed during it resumes from its checkpoints."""
        from customer_value.evaluation.backtest import backtest_inputs
        from customer_value.features.run import read_silver

        data, tc, staged, work = self._data, self.cfg.training, self._staged, self._work / "refit"
        if _whole(staged):
            _log(f"the refit an interrupted run trained is staged at {staged}")
            self.refit = json.loads((staged / "training.json").read_text())
            return
        at = data.snapshot + timedelta(days=data.horizon_days)
        later = BacktestData(data.spark, self.cfg, data.tables, at, data.horizon_days, data.first_day,
                             *backtest_inputs(data.spark, data.tables, read_silver(data.spark, data.tables), self.cfg,
                                          at, data.horizon_days))
        snapshots = self._refit_snapshots(data)
        later.prepare(snapshots)
        epochs = int(self.training["ranks"][0].get("best_epoch") or self.training["ranks"][0]["epochs_run"])
        t0 = time.perf_counter()
        ts = self._training_set(later, snapshots, work)
        plan = {**self._plan(work, ts, staged), "network": self.training["plan"]["network"],
                "epochs": epochs, "patience": epochs + 1}
        if (work / "checkpoints" / "state.json").exists():
            _log(f"resuming the refit from the checkpoints in {work / 'checkpoints'}")
        _log(f"refit for serving: {ts.train_rows:,} train + {ts.validation_rows:,} validation rows from snapshots "
             f"{ts.snapshots[0]} .. {ts.snapshots[-1]}, {epochs} epochs (the backtest's best)")
        reports = launch(plan, tc.num_proc, tc.launcher)
        level = self._refit_level(metrics) if tc.level_check else None
        (staged / "spec.json").write_text((work / "data" / "spec.json").read_text())
        if level is not None:          # the backtest's blend, its level measured at S
            _set_level(staged, level["level_scale"], calibration_of(self.path)["blend_weight"])
        client = registry.client(self.cfg)
        client.log_param(self.run_id, "refit.training_snapshots", ",".join(ts.snapshots))
        client.log_param(self.run_id, "refit.epochs", str(epochs))
        if level is not None:
            client.log_param(self.run_id, "refit.level_scale", str(level["level_scale"]))
        self.refit = {"run_key": self.training["run_key"], "refit_of": "backtest", "training_set": ts.describe(),
                      "plan": {k: v for k, v in plan.items() if "dir" not in k},
                      "ranks": [{k: v for k, v in r.items() if not k.endswith("_keys")} for r in reports],
                      "config": self.cfg.training.model_dump(), "mlflow_run_id": self.run_id, "level_check": level}
        (staged / "training.json").write_text(json.dumps(self.refit, indent=1, default=str))
        _log(f"refit trained: {reports[0]['epochs_run']} epochs, level_scale "
             f"{1.0 if level is None else level['level_scale']:.3f} ({time.perf_counter() - t0:.1f} s)")

    def _refit_level(self, metrics: dict[str, dict[str, float]]) -> dict:
        """The refit's level: the backtest's predicted total at S before its own level correction, against what
        was spent in [S, S + H) (`ziln.level_scale`)."""
        pdf = (self._data.tables.read(self._data.spark, "gold.backtest_predictions")
               .where(f"snapshot_date = '{self._data.snapshot}' AND horizon_days = {self._data.horizon_days} "
                      f"AND model = '{self.name}'").select("predicted_spend", "actual_spend").toPandas())
        own = calibration_of(self.path)["level_scale"]
        pdf = pdf.sort_values(["predicted_spend", "actual_spend"], kind="stable")    # one order: the same sums
        before = pdf.predicted_spend.to_numpy() / own
        predicted, actual = float(before.sum()), float(pdf.actual_spend.sum())
        buyers = int((pdf.actual_spend > 0).sum())
        result = {"snapshot": str(self._data.snapshot), "predicted_total": predicted, "actual_total": actual,
                  "buyers": buyers, **_checked(before, pdf.actual_spend.to_numpy(), buyers, self.cfg.training.level_min_z)}
        _log(f"the refit's level, from the backtest at {self._data.snapshot}: {predicted:,.0f} predicted before "
             f"the level correction against {actual:,.0f} spent ({_z(result)}): level_scale {result['level_scale']:.3f}")
        return result

    def _adopt(self, registered: registry.RegisteredModel) -> None:
        """Take over a version an interrupted run of the same (S, H, training config) trained and registered but
        did not backtest: its backtest is finished now, and it becomes ready, instead of training again."""
        self._use(registered)
        _log(f"{self.version} was trained and registered by an interrupted run of this snapshot, horizon and "
             "training configuration: backtesting it instead of training again")

    def predict(self, features: DataFrame, data: BacktestData | None) -> DataFrame:
        """In a backtest (`data`: the features are those at its S) the BG/NBD inputs come from the baseline's fit
        at S, not a second one; without one (`None`: one snapshot's features from anywhere) they are fitted on
        these features, which is the same fit."""
        fitted = (data.clv(data.snapshot) if data is not None and self.spec is not None and uses_btyd(self.spec)
                  else None)
        return score_frame(features, str(self.path), self.spec, self.cfg.backtest.spend_fit_max_customers,
                           fitted, self.cfg.scoring.threads_per_worker)

    def finish(self, metrics: dict, report_dir: str, context: dict[str, str]) -> None:
        """After the backtest: the refit for serving (`training.refit`), the backtest's metrics, report and a model
        card in the artifact, the version registered whole (a version an interrupted run registered is completed
        instead), the run's logs, and the version marked ready."""
        if self.registered is None:
            path = self._staged
            if self.cfg.training.refit:
                self._refit(metrics)
        else:
            path = self.registered.path
        (path / "metrics.json").write_text(json.dumps(metrics, indent=1, sort_keys=True))
        report = path / "report"
        shutil.rmtree(report, ignore_errors=True)
        src = Path(report_dir)
        if src.exists():
            shutil.copytree(src, report)
        (path / "MODEL_CARD.md").write_text(model_card(self, metrics, context))
        if self.registered is None:
            expected = self.version
            self.registered = registry.register(self.cfg, path, self.run_id)
            self.version = self.registered.label
            path = self.registered.path
            if self.version != expected:          # another version was registered since this one was staged
                self._relabel(expected)
            shutil.rmtree(self._work, ignore_errors=True)
            _log(f"registered {self.version} at {path}")
        client = registry.client(self.cfg)
        for k, v in (metrics.get(self.name) or {}).items():
            client.log_metric(self.run_id, f"backtest.{k}", float(v))
        for model, values in metrics.items():
            if model != self.name:
                for k in ("spend_gini", "churn_roc_auc"):
                    if k in values:
                        client.log_metric(self.run_id, f"baseline.{model}.{k}", float(values[k]))
        # the version itself was logged as the run's pyfunc model when registered (`registry.register`)
        for part in ("metrics.json", "MODEL_CARD.md"):
            client.log_artifact(self.run_id, str(path / part), "backtest")
        if report.exists():
            client.log_artifacts(self.run_id, str(report), "backtest/report")
        client.set_terminated(self.run_id)
        registry.mark_ready(self.cfg, self.registered)

    def _relabel(self, staged_label: str) -> None:
        """The backtest's rows name the version the registry was expected to give (`registry.next_version`); where
        another registration took that number in between, they are renamed to the version registered."""
        data = self._data
        where = (f"snapshot_date = '{data.snapshot}' AND horizon_days = {data.horizon_days} AND "
                 f"model = '{self.name}' AND {{col}} = '{staged_label}'")
        for table, col in (("gold.backtest_predictions", "model_version"), ("gold.model_metrics", "version")):
            data.tables.commit(table, lambda t=table, c=col: data.tables.delta_table(data.spark, t).update(
                where.format(col=c), {c: F.lit(self.version)}))
        _log(f"the backtest's rows of {staged_label} renamed {self.version}: another version was registered meanwhile")


def model_card(model: DeepModel, metrics: dict, context: dict[str, str]) -> str:
    ts = model.training["training_set"]
    rows = "\n".join(f"| {m} | {v.get('spend_gini', float('nan')):.3f} | {v.get('churn_roc_auc', float('nan')):.3f} | "
                     f"{v.get('spend_mae', float('nan')):.1f} |" for m, v in sorted(metrics.items()))
    own = metrics.get(model.name, {})
    cov = own.get("interval_coverage_buyers")
    served = ""
    if model.refit:
        rts = model.refit["training_set"]
        served = (f"\n**Served.** The model above is the one the backtest scored (`{BACKTEST_DIR}/`). The version serves "
                  f"the same recipe retrained on the latest labelled snapshots, {', '.join(rts['snapshots'])} "
                  f"({rts['train_rows']:,} training rows), for {model.refit['plan']['epochs']} epochs (the backtest's "
                  f"best), its level set by the backtest at S.\n")
    level = model.training.get("level_check") or {}
    amounts = ""
    if level.get("snapshot"):
        w = float(level.get("blend_weight", 1.0))
        mix = ("the network's expected spend alone" if w >= 1.0 else
               f"{w:.1f} × the network's expected spend + {1 - w:.1f} × BG/NBD + Gamma-Gamma's (`models.blend`)")
        amounts = (f"\n**Amounts.** {mix}, times the level {level['level_scale']:.3f}: both chosen by a model of the "
                   f"same settings trained on the snapshots before {level['snapshot']} and scored there against "
                   f"what its customers then spent.\n")
    return f"""# Model card: {model.version}

**What it predicts.** For each customer known at a snapshot S: expected spend in [S, S + {ts['horizon_days']} days)
(zero-inflated lognormal: P(buy), and spend given a purchase with a 10-90 % interval) and the probability of no
completed order in that horizon (churn).

**Trained on.** Snapshots {', '.join(ts['snapshots'])}: {ts['train_rows']:,} training and {ts['validation_rows']:,}
validation customer-snapshots (split by hashed customer id), read from Delta versions {ts['delta_versions']}.
Features: `docs/features.md` ({len(model.spec.numeric_inputs)} numeric inputs incl. missing indicators and season,
{len(model.spec.categorical_inputs)} categorical, the last {model.spec.sequence_length} orders).
Horovod ranks: {model.training['config']['num_proc']}; MLflow run {model.run_id}.
{amounts}{served}
**Backtest** at {context.get('snapshot S', '?')} ({context.get('customers', '?')} customers), beside the baselines:

| model | spend Gini | churn ROC-AUC | spend MAE |
|---|---|---|---|
{rows}

10-90 % interval coverage of buyers' spend: {'n/a' if cov is None else f'{cov:.3f}'} (target 0.80).

**Intended use.** Ranking and tiering customers for marketing actions; aggregate spend forecasts. Not for
decisions about individuals with legal or similarly significant effects.

**Limits.** Trained for one horizon length; a shop whose behaviour changes (new channels, prices, seasons not in
the training snapshots) needs retraining (drift monitoring). Customers without history get the population's
prior through the same network. Personal data never reaches the model: ids are pseudonymised in silver.
"""


def _champion(cfg: Config, snapshot: date, horizon_days: int) -> tuple[int | None, "DeepModel | None", str | None]:
    """The serving champion's version (None: none yet), the model to backtest it as beside the new version
    (None where it cannot be backtested at S) and why it cannot."""
    number = registry.alias_version(cfg, cfg.training.model_name, registry.CHAMPION)
    if number is None:
        return None, None, None
    try:
        champion = DeepModel.load(cfg, f"{cfg.training.model_name}/{number}")
        champion.check(snapshot, horizon_days)
    except (LeakError, registry.ModelNotFound) as e:
        return number, None, str(e)
    champion.name = promotion.CHAMPION_MODEL
    return number, champion, None


def train_and_backtest(spark, cfg: Config, snapshot: date | None = None, horizon_days: int | None = None):
    """The train stage: a new version trained on snapshots before S, backtested at S beside the baselines and
    the serving champion, its artifact completed and marked ready in the registry, then made the champion or a
    challenger (`models.promotion`). Returns (the model, the backtest result)."""
    from customer_value.evaluation.backtest import run_backtest, snapshot_and_horizon

    deep = DeepModel(cfg)
    s, h = snapshot_and_horizon(cfg, snapshot, horizon_days)
    champion, beside, skipped = _champion(cfg, s, h)
    result = run_backtest(spark, cfg, snapshot, horizon_days, [deep, *([beside] if beside else [])])
    deep.finish(result.metrics, result.report_dir, result.context)
    decision = promotion.decide(cfg, deep.registered, result.metrics, deep.name, champion, skipped)
    _log(f"{deep.version} is the {'champion' if decision.promote else 'challenger'}: {decision.why()}")
    return deep, result
