"""The registry's view of a train stage killed during its backtest: a registered, not yet ready version is taken
over by the rerun of the same (S, horizon, training config) only when its artifact is whole and was trained for
that run; a ready version, another run's, or a broken artifact never is. A real MLflow registry (SQLite)."""

from __future__ import annotations

import json
from pathlib import Path

from customer_value.config import load_config
from customer_value.models import registry
from tests.conftest import ROOT


def _staged(cfg, run_key: str, name: str) -> Path:
    staged = registry.models_root(cfg) / cfg.training.model_name / f"_staging-{name}"
    (staged / "saved_model").mkdir(parents=True)
    for part in ("calibration.json", "spec.json"):
        (staged / part).write_text("{}")
    (staged / "training.json").write_text(json.dumps({"run_key": run_key}))
    return staged


def _register(cfg, run_key: str, name: str) -> registry.RegisteredModel:
    c = registry.client(cfg)
    run = c.create_run(registry.experiment_id(cfg))
    return registry.register(cfg, _staged(cfg, run_key, name), run.info.run_id)


def test_only_a_whole_unfinished_version_of_the_same_run_is_taken_over(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = load_config(ROOT / "conf" / "local.yaml", [f"storage.root={tmp_path}"])
    assert registry.unfinished(cfg, "run-a") is None                    # no model registered at all

    first = _register(cfg, "run-a", "1")
    found = registry.unfinished(cfg, "run-a")
    assert found is not None and (found.version, found.run_id) == (first.version, first.run_id)
    assert found.path == first.path
    assert registry.unfinished(cfg, "run-b") is None                    # another S, horizon or config

    registry.mark_ready(cfg, first)
    assert registry.unfinished(cfg, "run-a").version == first.version   # ready, killed before its decision
    registry.set_alias(cfg, first, registry.CHAMPION, "the first version of this model")
    assert registry.unfinished(cfg, "run-a") is None                    # finished: a rerun trains anew

    second = _register(cfg, "run-a", "2")
    third = _register(cfg, "run-a", "3")
    assert registry.unfinished(cfg, "run-a").version == third.version   # the newest of several
    (third.path / "calibration.json").unlink()
    assert registry.unfinished(cfg, "run-a").version == second.version  # a broken artifact is passed over
    (second.path / "training.json").write_text("{not json")
    assert registry.unfinished(cfg, "run-a") is None


def test_two_storage_roots_in_one_process_keep_their_own_registries(tmp_path, monkeypatch):
    """MLflow exports the tracking URI it is given into $MLFLOW_TRACKING_URI; read back, that made the second
    root's stages (and every CLI process started afterwards) use the first root's registry. Seen failing so."""
    import os

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    a = load_config(ROOT / "conf" / "local.yaml", [f"storage.root={tmp_path / 'a'}"])
    b = load_config(ROOT / "conf" / "local.yaml", [f"storage.root={tmp_path / 'b'}"])
    first = _register(a, "run-a", "1")
    assert "MLFLOW_TRACKING_URI" not in os.environ and "MLFLOW_REGISTRY_URI" not in os.environ
    assert registry.tracking_uri(b) != registry.tracking_uri(a)
    assert registry.unfinished(b, "run-a") is None
    assert _register(b, "run-a", "1").version == first.version == 1


def test_a_champion_whose_artifact_is_gone_is_not_compared_and_the_new_version_stays_challenger(tmp_path, monkeypatch):
    """A champion that cannot be backtested beside the new version (its folder lost: a store restored without its
    models) is named, not silently replaced: the new version becomes the challenger with the reason, and the
    champion alias stays where it was. The version numbers the registry will give next are known beforehand."""
    import shutil
    from datetime import date

    from customer_value.models import promotion
    from customer_value.models.deep import _champion

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = load_config(ROOT / "conf" / "local.yaml", [f"storage.root={tmp_path}"])
    name = cfg.training.model_name
    assert registry.next_version(cfg) == 1
    first = _register(cfg, "run-a", "1")
    registry.mark_ready(cfg, first)
    registry.set_alias(cfg, first, registry.CHAMPION, "the first version of this model")
    assert registry.next_version(cfg) == 2
    shutil.rmtree(first.path)
    number, beside, skipped = _champion(cfg, date(2025, 10, 3), 90)
    assert number == first.version and beside is None and "artifact is missing" in skipped
    second = _register(cfg, "run-b", "2")
    assert second.version == 2 and registry.next_version(cfg) == 3
    registry.mark_ready(cfg, second)
    verdict = promotion.decide(cfg, second, {"deep_ziln": {"spend_gini": 0.9}}, "deep_ziln", number, skipped)
    assert not verdict.promote and "not compared with champion" in verdict.why() and "artifact is missing" in verdict.why()
    assert registry.alias_version(cfg, name, registry.CHAMPION) == first.version
    assert registry.alias_version(cfg, name, registry.CHALLENGER) == second.version
