"""Model artifacts and the MLflow registry.

An artifact is a folder `models/<name>/<version>/` under the storage root: the SavedModel, the feature spec
with its statistics, the training config and Delta versions, the backtest metrics beside the baselines', the
report and a model card. The version is the MLflow registry's: every training run is tracked (params,
per-epoch metrics, the backtest), the version's source is the artifact logged as a pyfunc model in its run
(`models.pyfunc`: MLflow's own `load_model` and `spark_udf` serve it), it is marked `ready` once its backtest is
written, and the aliases `champion` (what `score` serves) and `challenger` follow the promotion rules
(`models.promotion`); `name/latest` resolves to the newest ready version. The tracking store is a local SQLite
file by default, `$MLFLOW_TRACKING_URI` or `training.tracking_uri` on a cluster.
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
CHAMPION, CHALLENGER = "champion", "challenger"      # MLflow aliases: what scores, and what lost to it


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
    import mlflow
    from mlflow.tracking import MlflowClient

    _quiet()            # after the import: MLflow's first import sets its own loggers to INFO

    uri = tracking_uri(cfg)
    # MLflow's set_tracking_uri also exports $MLFLOW_TRACKING_URI "for subprocesses": this process's next
    # configuration (another storage root) and every CLI process it starts would then read this store's registry
    # as if a user had set it. The process-wide URI stays set (mlflow.start_run needs it); the variable is put back.
    names = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
    before = {k: os.environ.get(k) for k in names}
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    for k, v in before.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
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
    models/<name>/<version>/. Not yet `ready`: `mark_ready` follows once its backtest is written.

    The version's MLflow source is the artifact logged as a pyfunc model in its run (`models.pyfunc`), logged
    before the version exists: `models:/<name>/<version>` loads with MLflow's own tools from the moment it is
    registered. A version is never reused or overwritten: its folder already existing means this registry and
    this store are out of step (a registry reset beside an old store), and registering stops there, deleting
    nothing."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from customer_value import __version__
    from customer_value.models.pyfunc import log_model

    c = client(cfg)
    name = cfg.training.model_name
    try:
        c.create_registered_model(name, description="Expected spend (ZILN) and churn per customer, 90-day horizon.")
    except MlflowException as e:
        if "RESOURCE_ALREADY_EXISTS" not in str(e.error_code):
            raise
    with mlflow.start_run(run_id=run_id):
        source = log_model(staged, [f"customer-value=={__version__}"])
    mv = c.create_model_version(name, source=source, run_id=run_id)
    final = models_root(cfg) / name / str(mv.version)
    if final.exists():
        raise RuntimeError(f"{final} already exists, yet the registry at {tracking_uri(cfg)} just created version "
                           f"{mv.version} of {name}: the registry and the store are out of step. Nothing was "
                           f"deleted; point training.tracking_uri at this store's registry, or move that folder")
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staged, final)
    c.set_model_version_tag(name, mv.version, "path", str(final.resolve()))
    return RegisteredModel(name, int(mv.version), final, run_id)


def next_version(cfg: Config) -> int:
    """The number the registry will give the next version of `training.model_name`: one above every version it
    holds (MLflow numbers versions 1, 2, ... and never reuses one)."""
    versions = client(cfg).search_model_versions(f"name = '{cfg.training.model_name}'")
    return 1 + max((int(v.version) for v in versions), default=0)


# what an artifact holds once registered (the backtest's metrics, report and card come with `mark_ready`)
REGISTERED_PARTS = ("saved_model", "calibration.json", "spec.json", "training.json")


def decided(tags: dict[str, str]) -> bool:
    """Whether the promotion decision (`set_alias`: champion or challenger, and why) was recorded on a version."""
    return any(f"{alias}_because" in tags for alias in (CHAMPION, CHALLENGER))


def unfinished(cfg: Config, run_key: str) -> RegisteredModel | None:
    """The newest unfinished version whose artifact under this storage root is whole and was trained for
    `run_key` (the same S, horizon and training configuration): not yet ready (a train stage killed during its
    backtest left it), or ready with no promotion decision recorded (killed between `mark_ready` and
    `set_alias`). Its rerun backtests that version and decides, instead of training another and leaving this one
    behind, never ready or never compared. An artifact is whole or absent: it is staged, then moved into place in
    one rename."""
    name = cfg.training.model_name
    versions = client(cfg).search_model_versions(f"name = '{name}'")
    for mv in sorted((v for v in versions if v.tags.get("status") != READY or not decided(v.tags)),
                     key=lambda v: -int(v.version)):
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


def alias_version(cfg: Config, name: str, alias: str) -> int | None:
    """The version `alias` (`CHAMPION`, `CHALLENGER`) points at, or None."""
    from mlflow.exceptions import MlflowException

    try:
        return int(client(cfg).get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def set_alias(cfg: Config, model: RegisteredModel, alias: str, why: str) -> None:
    """Point `alias` at this version and record why on it (tag `<alias>_because`)."""
    c = client(cfg)
    c.set_registered_model_alias(model.name, alias, str(model.version))
    c.set_model_version_tag(model.name, str(model.version), f"{alias}_because", why[:4000])


def resolve(cfg: Config, ref: str) -> RegisteredModel:
    """`name/version`, `name/latest` (the newest ready version) or `name/champion` / `name/challenger` (MLflow's
    aliases, `models.promotion`) to the artifact. A registry without a champion yet (versions registered
    before the aliases existed) serves its newest ready version for `champion`, and says so."""
    name, _, version = ref.partition("/")
    if not name or not version:
        raise ModelNotFound(f"model reference {ref!r}: expected NAME/VERSION, NAME/champion or NAME/latest")
    c = client(cfg)
    if version in (CHAMPION, CHALLENGER):
        number = alias_version(cfg, name, version)
        if number is None and version == CHAMPION:
            latest = resolve(cfg, f"{name}/latest")
            print(f"[registry] {name} has no {CHAMPION} alias yet: serving its newest ready version "
                  f"{latest.version}", flush=True)
            return latest
        if number is None:
            raise ModelNotFound(f"model {name!r} has no {version} in the registry at {tracking_uri(cfg)}")
        version = str(number)
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
