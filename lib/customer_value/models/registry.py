"""Model artifacts and the MLflow registry.

An artifact is a folder `models/<name>/<version>/` under the storage root: the SavedModel, the feature spec
with its statistics, the training config and Delta versions, the backtest metrics beside the baselines', the
report and a model card. The version is the MLflow registry's: every training run is tracked (params,
per-epoch metrics, the artifact), the model version is registered and marked `ready` once its backtest is
written, and `name/latest` resolves to the newest ready version. The tracking store is a local SQLite file
by default, `$MLFLOW_TRACKING_URI` or `training.tracking_uri` on a cluster.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from customer_value.config import Config
from customer_value.landing import under_root

EXPERIMENT = "customer_value"
READY = "ready"


class ModelNotFound(LookupError):
    pass


def _quiet() -> None:
    for name in ("mlflow", "alembic", "urllib3"):
        logging.getLogger(name).setLevel(logging.ERROR)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def models_root(cfg: Config) -> Path:
    return Path(under_root(cfg, cfg.training.models_dir))


def tracking_uri(cfg: Config) -> str:
    """training.tracking_uri, else $MLFLOW_TRACKING_URI, else SQLite beside the tables."""
    if cfg.training.tracking_uri:
        return cfg.training.tracking_uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    db = Path(under_root(cfg, "mlflow")).resolve()
    db.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{db}/mlflow.db"


def client(cfg: Config):
    _quiet()
    import mlflow
    from mlflow.tracking import MlflowClient

    uri = tracking_uri(cfg)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return MlflowClient(uri, uri)


def experiment_id(cfg: Config) -> str:
    c = client(cfg)
    exp = c.get_experiment_by_name(EXPERIMENT)
    if exp is not None:
        return exp.experiment_id
    location = Path(under_root(cfg, "mlflow")).resolve() / "artifacts"
    uri = tracking_uri(cfg)
    artifacts = location.as_uri() if uri.startswith("sqlite:") or "://" not in uri else None
    return c.create_experiment(EXPERIMENT, artifact_location=artifacts)


@dataclass(frozen=True)
class RegisteredModel:
    name: str
    version: int
    path: Path
    run_id: str

    @property
    def label(self) -> str:
        return f"{self.name}/{self.version}"


def register(cfg: Config, staged: Path, run_id: str) -> RegisteredModel:
    """Register the staged artifact as the next version of `training.model_name` and move it to
    models/<name>/<version>/. Not yet `ready`: `mark_ready` follows once its backtest is written."""
    from mlflow.exceptions import MlflowException

    c = client(cfg)
    name = cfg.training.model_name
    try:
        c.create_registered_model(name, description="Expected spend (ZILN) and churn per customer, 90-day horizon.")
    except MlflowException as e:
        if "RESOURCE_ALREADY_EXISTS" not in str(e.error_code):
            raise
    root = models_root(cfg) / name
    mv = c.create_model_version(name, source=str((root / "pending").resolve()), run_id=run_id)
    final = root / str(mv.version)
    if final.exists():
        shutil.rmtree(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staged, final)
    c.set_model_version_tag(name, mv.version, "path", str(final.resolve()))
    return RegisteredModel(name, int(mv.version), final, run_id)


# what an artifact holds once registered (the backtest's metrics, report and card come with `mark_ready`)
REGISTERED_PARTS = ("saved_model", "calibration.json", "spec.json", "training.json")


def unfinished(cfg: Config, run_key: str) -> RegisteredModel | None:
    """The newest registered version not yet ready whose artifact under this storage root is whole and was
    trained for `run_key` (the same S, horizon and training configuration): a train stage killed during its
    backtest left it. Its rerun backtests that version instead of training another and leaving this one behind,
    never ready. An artifact is whole or absent: it is staged, then moved into place in one rename."""
    name = cfg.training.model_name
    versions = client(cfg).search_model_versions(f"name = '{name}'")
    for mv in sorted((v for v in versions if v.tags.get("status") != READY), key=lambda v: -int(v.version)):
        path = models_root(cfg) / name / str(mv.version)
        if not all((path / part).exists() for part in REGISTERED_PARTS):
            continue
        try:
            training = json.loads((path / "training.json").read_text())
        except ValueError:
            continue
        if training.get("run_key") == run_key:
            return RegisteredModel(name, int(mv.version), path, mv.run_id)
    return None


def mark_ready(cfg: Config, model: RegisteredModel) -> None:
    client(cfg).set_model_version_tag(model.name, str(model.version), "status", READY)


def resolve(cfg: Config, ref: str) -> RegisteredModel:
    """`name/version` or `name/latest` (the newest ready version) to the artifact."""
    name, _, version = ref.partition("/")
    if not name or not version:
        raise ModelNotFound(f"model reference {ref!r}: expected NAME/VERSION or NAME/latest")
    c = client(cfg)
    versions = c.search_model_versions(f"name = '{name}'")
    if version == "latest":
        ready = [v for v in versions if v.tags.get("status") == READY]
        if not ready:
            raise ModelNotFound(f"no ready version of model {name!r} in the registry at {tracking_uri(cfg)}: "
                                "run `customer-value train` first")
        mv = max(ready, key=lambda v: int(v.version))
    else:
        match = [v for v in versions if str(v.version) == version]
        if not match:
            raise ModelNotFound(f"model {name!r} has no version {version} in the registry at {tracking_uri(cfg)}")
        mv = match[0]
    # the artifact under this configuration's own storage root first: a store copied or restored elsewhere (its
    # SQLite registry with it) serves, and writes beside, its own copy, not the folder the tag names
    local = models_root(cfg) / name / str(mv.version)
    path = local if (local / "saved_model").exists() else Path(mv.tags.get("path") or local)
    if not (path / "saved_model").exists():
        raise ModelNotFound(f"model {name}/{mv.version} is registered but its artifact is missing at {path}")
    return RegisteredModel(name, int(mv.version), path, mv.run_id)
