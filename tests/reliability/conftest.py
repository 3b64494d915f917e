"""One clean run of every stage on a small generated shop, shared by the reliability tests: the kill harness
compares its crash runs with it (starting each from the copy of the store taken before that stage), the secret
scan reads everything it wrote. The stages run as real processes through the CLI, with a real random
pseudonymisation key in their environment (never in their configuration)."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from customer_value.synthetic.generate import generate
from tests.conftest import ROOT
from tests.e2e.conftest import shop_config

KEY = "k-" + secrets.token_hex(16)
SNAPSHOT = "2025-10-01"
STAGES_RUN = ("ingest", "clean", "features", "train", "score", "monitor")
# a small, quick model: eight epochs without early stopping (a rank is killed after the second), three training
# snapshots, small batches; the baselines fitted on one snapshot (CI's time)
TRAINING = ["training.snapshots=3", "training.snapshot_step_days=45", "training.network.towers=1",
            "training.network.hidden=[16]", "training.epochs=8", "training.patience=8", "training.batch_size=64",
            "backtest.max_training_snapshots=1"]


def command(root: Path, stage: str) -> list[str]:
    return [sys.executable, "-m", "customer_value.cli", "pipeline", "--conf", "conf/local.yaml", "--only", stage,
            "--snapshot-date", SNAPSHOT, "--set", f"storage.root={root}",
            "--set", "cleaning.max_reject_share=0.2", "--set", "features.history_snapshots=2",
            *[a for t in TRAINING for a in ("--set", t)]]


def stage_env() -> dict[str, str]:
    env = dict(os.environ, CUSTOMER_VALUE_ID_KEY=KEY)
    env.pop("MLFLOW_TRACKING_URI", None)           # the store's own SQLite registry
    return env


def run_stage(root: Path, stage: str) -> str:
    """The stage's output (stdout and stderr); it must succeed."""
    proc = subprocess.run(command(root, stage), cwd=ROOT, env=stage_env(), capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    return proc.stdout + proc.stderr


@pytest.fixture(scope="session")
def reference(spark, tmp_path_factory) -> Path:
    """A folder with `store` (the clean run), `before-STAGE` (the store as it was before STAGE ran) and `logs.txt`
    (every stage's output)."""
    base = tmp_path_factory.mktemp("reference")
    root = base / "store"
    generate(spark, shop_config(root, 600))
    logs = []
    for stage in STAGES_RUN:
        shutil.copytree(root, base / f"before-{stage}")
        logs.append(run_stage(root, stage))
    (base / "logs.txt").write_text("\n".join(logs))
    return base
