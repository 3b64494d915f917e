"""Configuration: conf/base.yaml + one environment overlay + command-line overrides, validated by pydantic.

Why layered: the same jobs run on a laptop, on a Spark cluster and on Databricks; only paths, Spark settings
and parallelism differ, so those differences live in small overlays and everything else is shared.
"""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from datetime import date
from typing import Any, Iterator, Literal, Mapping, Sequence

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class ConfigError(ValueError):
    """A configuration file or override that cannot be used; the message names the file or key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StorageConfig(_Strict):
    root: str = Field(description="Base path of path-addressed tables: <root>/<layer>/<table>.")
    catalog: str | None = Field(None, description="Metastore catalog; when set, tables are <catalog>.<layer>.<table>.")
    conflict_retries: int = Field(3, ge=0, description="Times a Delta commit refused for a concurrent writer's "
                                                       "conflicting commit is retried before the job fails.")


class SparkConfig(_Strict):
    app_name: str = "customer-value"
    master: str | None = None
    delta_jars: Literal["auto", "none"] = "auto"
    log_level: Literal["ERROR", "WARN", "INFO", "DEBUG"] = Field("ERROR", description="Spark's log level once started.")
    conf: dict[str, str] = Field(default_factory=dict)


class NetworkSettings(_Strict):
    sequence_branch: Literal["conv1d", "gru", "none"] = "conv1d"
    sequence_units: int = Field(32, gt=0)
    embedding_dim: int = Field(4, gt=0)
    hidden: list[int] = Field(default_factory=lambda: [128, 64], min_length=1)
    dropout: float = Field(0.1, ge=0, lt=1)
    towers: int = Field(1, ge=1, description="Independent trunks and heads over the shared inputs, averaged.")
    wide: bool | Literal["auto"] = Field(
        "auto", description="A linear path from the normalised numeric inputs to every head (wide & deep). auto: on "
                            "only where the training split has no behavioural signal (every behaviour and review "
                            "input constant, as in a transactions-only shop): there it ties BG/NBD, on a shop with "
                            "events and reviews it costs the lead (docs/evaluation.md).")
    wide_inputs: list[str] = Field(default_factory=list, description="Name prefixes of the numeric inputs the wide "
                                                                     "path reads (e.g. [btyd_]); empty: all.")


class HorovodSettings(_Strict):
    fusion_threshold_mb: float | None = Field(None, ge=0, description="HOROVOD_FUSION_THRESHOLD in MiB; null: Horovod's default.")
    cycle_time_ms: float | None = Field(None, gt=0, description="HOROVOD_CYCLE_TIME; null: Horovod's default.")
    backward_passes_per_step: int = Field(1, ge=1, description="Local gradient steps aggregated per allreduce.")
    num_groups: int = Field(1, ge=0, description="Gradient allreduces per step (grouped); 0: one per tensor, fused by "
                                                 "Horovod's cycle.")


class TrainingConfig(_Strict):
    num_proc: int = Field(2, ge=1, description="Horovod ranks: CPU processes here, one per GPU on a GPU node.")
    launcher: Literal["horovodrun", "spark"] = "horovodrun"
    threads_per_rank: int = Field(1, ge=1)
    model_name: str = Field("customer_value", pattern=r"^[A-Za-z0-9_\-]+$")
    models_dir: str = Field("models", description="Artifacts: <models_dir>/<name>/<version>/, relative to storage.root.")
    work_dir: str = Field("_work/training", description="Training sets, checkpoints, rank reports.")
    tracking_uri: str | None = Field(None, description="MLflow; null: MLFLOW_TRACKING_URI, else SQLite under storage.root.")
    retrain_every_days: int = Field(7, ge=1, description="`customer-value pipeline` trains when no model exists or S "
                                                         "enters a new period of this many days (Mondays for 7).")
    snapshots: int = Field(12, ge=1, description="Training snapshots: S - H, then every snapshot_step_days back.")
    snapshot_step_days: int = Field(30, gt=0)
    validation_share: float = Field(0.15, gt=0, lt=1)
    rows_per_group: int = Field(4096, gt=0, description="Rows per Parquet row group: the unit of sharding.")
    seed: int = 7
    epochs: int = Field(30, ge=1)
    patience: int = Field(4, ge=1)
    batch_size: int = Field(512, gt=0, description="Per rank.")
    learning_rate: float = Field(0.002, gt=0, description="Per rank; scaled by the rank count.")
    churn_loss_weight: float = Field(1.0, ge=0)
    btyd_inputs: bool = Field(True, description="BG/NBD + Gamma-Gamma's predictions, fitted at each snapshot, as inputs.")
    spend_cap_multiple: float = Field(1.0, gt=0, description="The served expected spend and interval are at most this "
                                                             "× the largest horizon spend in the training labels.")
    mu_log_margin: float = Field(0.5, ge=0, description="The served model's μ (log spend given a purchase) stays "
                                                        "within the training buyers' log range ± this.")
    level_check: bool = Field(True, description="Before training, a model of the same settings trained on the "
                              "snapshots whose horizon ended by S - H is scored at S - H: its predicted total "
                              "over the actual one sets the served model's level (`level_scale`), a check one "
                              "horizon ahead in time that the validation split cannot make.")
    level_min_z: float = Field(2.0, ge=0, description="The level check's level is applied only where it is at "
                               "least this many standard errors from 1 (its sampling noise over the check's "
                               "customers, ziln.checked_level); 1 otherwise.")
    blend: bool = Field(True, description="The served expected spend blends the network's with BG/NBD + "
                        "Gamma-Gamma's (w · network + (1 - w) · BG/NBD), w chosen by the level check at S - H: the "
                        "smallest spend MAE among the weights whose Gini stays within blend_max_gini_loss of the "
                        "network's own (models.blend). Needs level_check and btyd_inputs.")
    blend_max_gini_loss: float = Field(0.005, ge=0, description="How much spend Gini at the level check the blend "
                                       "may give up for a smaller MAE.")
    refit: bool = Field(True, description="After the backtest, the version that serves is trained again with the "
                        "backtest's settings and epoch count on the latest labelled snapshots (horizon ended by S + "
                        "H), its level measured by the backtest itself at S; the backtested model is kept beside "
                        "it (`backtest/`) for the champion's next comparison. false: the backtested model serves.")
    network: NetworkSettings = NetworkSettings()
    horovod: HorovodSettings = HorovodSettings()


class PurchaseRate(_Strict):
    r: float = Field(gt=0)
    alpha: float = Field(gt=0)


class Dropout(_Strict):
    a: float = Field(gt=0)
    b: float = Field(gt=0)


class Spend(_Strict):
    p: float = Field(gt=0)
    q: float = Field(gt=1, description="> 1 so that the mean spend per order exists")
    gamma: float = Field(gt=0)


class Seasonality(_Strict):
    yearly_amplitude: float = Field(ge=0, lt=1)
    yearly_peak_day: int = Field(ge=1, le=366)
    weekday_weights: list[float] = Field(min_length=7, max_length=7)


class Engagement(_Strict):
    sessions_per_day: float = Field(gt=0)
    pre_purchase_days: int = Field(ge=0)
    pre_purchase_boost: float = Field(ge=0)
    after_dropout: float = Field(ge=0, le=1)


Rate = float


class DirtyRates(_Strict):
    duplicate_row: Rate = Field(0, ge=0, le=0.2)
    resent_order: Rate = Field(0, ge=0, le=0.2)
    missing_value: Rate = Field(0, ge=0, le=0.2)
    wrong_type: Rate = Field(0, ge=0, le=0.2)
    negative_amount: Rate = Field(0, ge=0, le=0.2)
    absurd_amount: Rate = Field(0, ge=0, le=0.2)
    future_timestamp: Rate = Field(0, ge=0, le=0.2)
    before_opening: Rate = Field(0, ge=0, le=0.2)
    unknown_user: Rate = Field(0, ge=0, le=0.2)
    malformed_line: Rate = Field(0, ge=0, le=0.2)
    broken_json: Rate = Field(0, ge=0, le=0.2)
    wrong_encoding_file: Rate = Field(0, ge=0, le=1)
    extra_column_file: Rate = Field(0, ge=0, le=1)
    missing_column_file: Rate = Field(0, ge=0, le=1)


class SyntheticConfig(_Strict):
    seed: int
    customers: int = Field(gt=0)
    customers_per_file: int = Field(gt=0)
    shop_opened: date
    export_date: date
    purchase_rate: PurchaseRate
    dropout: Dropout
    spend: Spend
    seasonality: Seasonality
    cancel_rate: float = Field(ge=0, lt=1)
    return_rate: float = Field(ge=0, lt=1)
    discount_rate: float = Field(ge=0, le=1)
    review_rate: float = Field(ge=0, le=1)
    profile_edit_rate: float = Field(0.0, ge=0, le=1)
    engagement: Engagement
    categories: list[str] = Field(min_length=1)
    dirty: DirtyRates
    delivery_days: int = Field(0, ge=0, description=(
        "0: one export file per source and block. N > 0: what was recorded in the last N days of the export "
        "comes as one file per day (a shop's daily deliveries), the rest as the history file."))

    @model_validator(mode="after")
    def _dates_in_order(self) -> "SyntheticConfig":
        if (self.export_date - self.shop_opened).days < 60:
            raise ValueError("export_date must be at least 60 days after shop_opened")
        return self


class TransactionColumns(_Strict):
    customer_id: str
    date: str
    amount: str
    quantity: str | None = None
    order_id: str | None = None


class TransactionsConfig(_Strict):
    path: str | None = None
    separator: str = ","
    header: bool = True
    date_format: str = "yyyy-MM-dd"
    columns: TransactionColumns


class CleaningConfig(_Strict):
    as_of: date | None = None
    shop_opened: date
    max_reject_share: float = Field(ge=0, le=1)
    min_rows_to_judge: int = Field(200, ge=0, description="A table reading fewer rows in a run is not held to max_reject_share.")
    max_amount: float = Field(gt=0)
    max_quantity: int = Field(gt=0)
    outlier_quantile: float = Field(gt=0.5, le=1)
    statuses: list[str] = Field(min_length=1)
    event_types: list[str] = Field(min_length=1)
    fill: dict[str, str] = Field(default_factory=dict)
    incremental: bool = Field(True, description="Merge only new bronze batches into silver (false: recompute all).")

    def today(self) -> date:
        from datetime import datetime, timezone

        return self.as_of or datetime.now(timezone.utc).date()


class PseudonymisationConfig(_Strict):
    key_env: str
    secret_scope: str | None = None
    secret_key: str | None = None
    demo_mode: bool = False


class FeaturesConfig(_Strict):
    windows: list[int] = Field(min_length=1)
    sequence_length: int = Field(gt=0)
    horizon_days: int = Field(gt=0)
    history_snapshots: int = Field(ge=1)
    snapshot_step_days: int = Field(gt=0)
    city_tiers: dict[str, int] = Field(default_factory=dict)
    age_bands: list[int] = Field(min_length=1)

    @model_validator(mode="after")
    def _sorted_windows(self) -> "FeaturesConfig":
        if self.windows != sorted(set(self.windows)) or self.windows[0] <= 0:
            raise ValueError("features.windows must be positive, distinct and ascending")
        return self


class BacktestConfig(_Strict):
    max_training_snapshots: int = Field(4, ge=1, description="Training snapshots S-H, S-2H, ... at most this many.")
    min_history_days: int = Field(180, ge=0, description="A training snapshot needs this much data before it.")
    rfm_shrinkage: float = Field(20.0, ge=0, description="Pseudo-customers pulling a small RFM cell to its segment.")
    spend_fit_max_customers: int = Field(200_000, gt=0, description="Sample size for the Gamma-Gamma fit.")
    report_dir: str = Field("reports", description="Where reports go; relative paths are under storage.root.")
    role: Literal["test", "selection"] = Field(
        "test", description="What this backtest is for, recorded in gold.model_metrics: `selection` where settings "
                            "are chosen (snapshots before the one reported), `test` where they are only reported "
                            "(docs/evaluation.md: the protocol).")


class PromotionRule(_Strict):
    metric: str = Field(description="A backtest metric (evaluation.metrics.METRICS).")
    tolerance: float = Field(0.0, ge=0, description="How far the new version may trail the champion: absolute for "
                             "a higher-is-better metric and for a distance to a target, relative for an error.")


class PromotionConfig(_Strict):
    """When a newly trained version becomes MLflow's `champion` (what `score` serves): its backtest beside the
    current champion's on the same snapshot is at least as good on every rule, within the rule's tolerance."""
    rules: list[PromotionRule] = Field(default_factory=lambda: [
        PromotionRule(metric="spend_gini", tolerance=0.005), PromotionRule(metric="churn_roc_auc", tolerance=0.005),
        PromotionRule(metric="spend_total_ratio", tolerance=0.05), PromotionRule(metric="spend_mae", tolerance=0.02)])

    @model_validator(mode="after")
    def _known(self) -> "PromotionConfig":
        from customer_value.evaluation.metrics import METRICS

        unknown = [r.metric for r in self.rules if r.metric not in METRICS]
        if unknown:
            raise ValueError(f"promotion.rules: unknown metrics {unknown}; known: {sorted(METRICS)}")
        return self


class TierThresholds(_Strict):
    high: float = Field(0.8, gt=0, lt=1, description="value_score > high: tier high.")
    mid: float = Field(0.6, gt=0, lt=1, description="mid <= value_score <= high: tier mid; below: low.")

    @model_validator(mode="after")
    def _ordered(self) -> "TierThresholds":
        if not self.mid < self.high:
            raise ValueError(f"scoring.tiers: mid ({self.mid}) must be below high ({self.high})")
        return self


class ActionRule(_Strict):
    tier: Literal["high", "mid", "low", "any"]
    churn_risk: Literal["high", "low", "any"] = "any"
    action: str = Field(min_length=1)


class SegmentSettings(_Strict):
    k: int = Field(6, ge=2, le=50, description="K-means clusters.")
    features: list[str] = Field(min_length=1, description="value_score, churn_probability, buy_probability and "
                                                          "numeric features of the model's spec (as the model sees them).")
    seed: int = 11
    max_iter: int = Field(40, ge=1)


class ScoringConfig(_Strict):
    arrow_batch_size: int = Field(20_000, gt=0, description="spark.sql.execution.arrow.maxRecordsPerBatch while scoring.")
    reasons: bool = Field(True, description="Top reasons per customer (integrated gradients).")
    reason_count: int = Field(3, ge=1)
    reason_steps: int = Field(2, ge=1, le=64, description="Integrated-gradient steps (midpoint rule).")
    threads_per_worker: int = Field(1, ge=1, description="TensorFlow threads in each Spark Python worker "
                                                         "(Spark runs one worker per core already).")
    quantile_error: float = Field(1e-4, gt=0, lt=0.01, description="Relative error of the value score's quantiles.")
    tiers: TierThresholds = TierThresholds()
    churn_risk_high: float = Field(0.5, gt=0, lt=1, description="churn_probability >= this: high churn risk.")
    actions: list[ActionRule] = Field(min_length=1, description="First matching rule wins; the last should match all.")
    segments: SegmentSettings

    @model_validator(mode="after")
    def _total(self) -> "ScoringConfig":
        last = self.actions[-1]
        if (last.tier, last.churn_risk) != ("any", "any"):
            raise ValueError("scoring.actions: the last rule must have tier any and churn_risk any, so every "
                             "customer gets an action")
        return self


class MonitorConfig(_Strict):
    bins: int = Field(10, ge=2, le=100, description="Reference quantile bins per monitored column.")
    watch: float = Field(0.1, gt=0, description="PSI at or above: watch.")
    retrain: float = Field(0.25, gt=0, description="PSI above: retrain.")
    retrain_exit_code: int = Field(3, ge=2, le=125, description="`customer-value monitor`'s exit code on a retrain verdict.")

    @model_validator(mode="after")
    def _ordered(self) -> "MonitorConfig":
        if not self.watch < self.retrain:
            raise ValueError(f"monitor: watch ({self.watch}) must be below retrain ({self.retrain})")
        return self


class Config(_Strict):
    environment: str
    storage: StorageConfig
    landing: str = "landing"
    spark: SparkConfig = SparkConfig()
    training: TrainingConfig = TrainingConfig()
    synthetic: SyntheticConfig
    transactions: TransactionsConfig
    cleaning: CleaningConfig
    pseudonymisation: PseudonymisationConfig
    features: FeaturesConfig
    backtest: BacktestConfig = BacktestConfig()
    promotion: PromotionConfig = PromotionConfig()
    scoring: ScoringConfig
    monitor: MonitorConfig = MonitorConfig()


def _deep_merge(base: dict[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in overlay.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = os.path.expandvars(path.read_text())
        data = yaml.safe_load(text) or {}
    except FileNotFoundError:
        raise ConfigError(f"configuration file not found: {path}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    unresolved = [line.strip() for line in text.splitlines() if "${" in line]
    if unresolved:
        raise ConfigError(f"{path}: environment variable not set in: {unresolved[0]}")
    return data


def _override_tree(override: str) -> dict[str, Any]:
    """`a.b=value` as {"a": {"b": "value"}} (the value as text): what refuse_secrets looks at."""
    key, raw = override.split("=", 1)
    tree: dict[str, Any] = {}
    node = tree
    parts = ["spark", "conf", key[len("spark.conf."):]] if key.startswith("spark.conf.") else key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = raw
    return tree


def _apply_override(data: dict[str, Any], override: str) -> None:
    """`a.b.c=value`; the value is parsed as YAML (numbers, booleans, null). Spark conf keys keep their dots:
    everything after `spark.conf.` is one key."""
    if "=" not in override:
        raise ConfigError(f"override {override!r} is not key=value")
    key, raw = override.split("=", 1)
    value = yaml.safe_load(raw) if raw else ""
    if key.startswith("spark.conf."):
        parts = ["spark", "conf", key[len("spark.conf."):]]
        value = str(value)
    else:
        parts = key.split(".")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {override!r}: {part} is not a section")
    node[parts[-1]] = value


# Settings whose names say they hold a secret. The key's *whereabouts* are settings (the variable's name, the
# secret scope and the name in it); a key itself never is.
SECRET_NAME = re.compile(r"(^|_)(key|secret|password|passwd|token|credentials?)$", re.IGNORECASE)
SECRET_WHEREABOUTS = {"pseudonymisation.key_env", "pseudonymisation.secret_scope", "pseudonymisation.secret_key"}
DEFAULT_KEY_ENV = "CUSTOMER_VALUE_ID_KEY"


class SecretInConfigError(ConfigError):
    """A secret in conf/ or on the command line: named by its setting, never echoed."""


def _leaves(data: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(data, dict):
        for k, v in data.items():
            yield from _leaves(v, f"{path}.{k}" if path else str(k))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            yield from _leaves(v, f"{path}[{i}]")
    else:
        yield path, data


def refuse_secrets(data: dict[str, Any], where: str) -> None:
    """Refuses a configuration that holds a secret: a setting named like one (outside spark.conf, whose keys are
    Spark's), or the pseudonymisation key's value anywhere. Files in conf/ are committed and command lines end
    up in shell histories, process lists and job logs; the key comes from the environment or a secret scope."""
    key_env = (data.get("pseudonymisation") or {}).get("key_env") or DEFAULT_KEY_ENV
    key = os.environ.get(str(key_env)) or ""
    for path, value in _leaves(data):
        name = path.rsplit(".", 1)[-1]
        if not path.startswith("spark.conf.") and path not in SECRET_WHEREABOUTS and SECRET_NAME.search(name):
            raise SecretInConfigError(
                f"{path} ({where}): a secret is never read from conf/ or --set. Set the pseudonymisation key in "
                f"${key_env} or a Databricks secret scope (pseudonymisation.secret_scope / secret_key)")
        if len(key) >= 8 and isinstance(value, str) and key in value:
            raise SecretInConfigError(
                f"{path} ({where}) holds the value of ${key_env}, the pseudonymisation key: remove it; the key is "
                "read from the environment or a secret scope only")


def load_config(overlay: str | Path | None = None, overrides: Sequence[str] = ()) -> Config:
    """Load base.yaml from the overlay's folder (or conf/ when no overlay), then the overlay, then overrides."""
    overlay_path = Path(overlay) if overlay else None
    conf_dir = overlay_path.parent if overlay_path else Path("conf")
    data = _read_yaml(conf_dir / "base.yaml")
    refuse_secrets(data, str(conf_dir / "base.yaml"))
    if overlay_path and overlay_path.name != "base.yaml":
        overlay_data = _read_yaml(overlay_path)
        refuse_secrets(overlay_data, str(overlay_path))
        data = _deep_merge(data, overlay_data)
    for override in overrides:
        if "=" in override:                 # before parsing: a parse error must not echo a secret either
            refuse_secrets(_override_tree(override), "--set")
        _apply_override(data, override)
    if isinstance(data.get("spark", {}).get("conf"), dict):
        data["spark"]["conf"] = {k: str(v) for k, v in data["spark"]["conf"].items()}
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        where = overlay_path or conf_dir / "base.yaml"
        raise ConfigError(f"invalid configuration ({where} + overrides): {describe(exc)}") from None


def describe(exc: ValidationError) -> str:
    """pydantic's errors as one line: `key.path: what is wrong (got value)`, joined by `; `."""
    parts = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        got = "" if err["type"] in ("missing", "extra_forbidden") else f" (got {err.get('input')!r})"
        if err["type"] == "extra_forbidden":
            msg = "unknown setting"
        parts.append(f"{key}: {msg}{got}")
    return "; ".join(parts)
