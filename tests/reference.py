"""One clean run of every stage on a small generated shop, built once per test session and shared: the kill
harness compares its crash runs with it (starting each from the copy of the store taken before that stage), the
pipeline test checks the runner's records of it and reruns it, the secret scan reads everything it wrote. The
stages run in one real process through the CLI (`customer-value pipeline`, as a scheduled job runs them), with a
real random pseudonymisation key in its environment (never in its configuration); the runner waits before each
stage (`pipeline.STAGE_PAUSE_ENV`) while the store is copied. One process rather than one per stage: a stage in a
fresh JVM spends most of its time on a tiny shop warming that JVM up, and the kill harness's own runs are the
per-stage processes (`--only STAGE`)."""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

from customer_value.config import Config, load_config
from tests.conftest import ROOT
from tests.e2e.conftest import shop_config


def _run_key() -> str:
    """A real random key for this test run, the same in every xdist worker (one builds the reference run, all read
    it and rerun its stages): derived from xdist's random id of the run where there is one."""
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    if not run:
        return "k-" + secrets.token_hex(16)
    return "k-" + hashlib.sha256(f"customer-value test key {run}".encode()).hexdigest()[:32]


KEY = _run_key()
SNAPSHOT = "2025-10-01"
CUSTOMERS = 600
STAGES_RUN = ("ingest", "clean", "features", "train", "score", "monitor")
# a small, quick model: eight epochs without early stopping (a rank is killed after the second), three training
# snapshots, small batches; the baselines fitted on one snapshot (CI's time)
TRAINING = ["training.snapshots=3", "training.snapshot_step_days=45", "training.network.towers=1",
            "training.network.hidden=[16]", "training.epochs=8", "training.patience=8", "training.batch_size=64",
            "backtest.max_training_snapshots=1"]
SETTINGS = ["cleaning.max_reject_share=0.2", "features.history_snapshots=2", *TRAINING]


def command(root: Path, stage: str | None) -> list[str]:
    """The CLI's pipeline on the store at `root`: `stage` alone, or (None) every stage after generate."""
    return [sys.executable, "-m", "customer_value.cli", "pipeline", "--conf", "conf/local.yaml",
            *(["--only", stage] if stage else []),
            "--snapshot-date", SNAPSHOT, "--set", f"storage.root={root}",
            *[a for s in SETTINGS for a in ("--set", s)]]


def config(root: Path) -> Config:
    """The configuration `command` gives its stages, for a test that runs the pipeline in its own process."""
    return load_config(ROOT / "conf" / "local.yaml", [f"storage.root={root}", *SETTINGS])


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


def wait_for(proc: subprocess.Popen, until, timeout: float = 900, poll: float = 0.05) -> bool:
    """True once `until()` holds while `proc` runs; False when it ended or `timeout` passed first."""
    deadline = time.time() + timeout
    while proc.poll() is None and time.time() < deadline:
        if until():
            return True
        time.sleep(poll)
    return False


def build(spark, base: Path) -> Path:
    """`base` with `store` (the clean run), `before-STAGE` (the store as it was before STAGE ran) and `logs.txt`
    (the run's output)."""
    import io
    from datetime import date

    from customer_value import pipeline as pl

    root = base / "store"
    # the shop generated in this process (no JVM of its own to start) but through the pipeline's runner, as
    # `pipeline --generate` does: recorded in ops.pipeline_runs like every later stage
    generate = pl.select(pl.STAGES, only="generate")
    report, = pl.run_pipeline(spark, shop_config(root, CUSTOMERS), pl.Run(date.fromisoformat(SNAPSHOT)), generate,
                              events=pl.Events(False, io.StringIO()))
    assert report.status == "ran", report
    pauses = base / "pauses"
    pauses.mkdir()
    log = base / "logs.txt"
    with open(log, "w") as out:
        proc = subprocess.Popen(command(root, None), cwd=ROOT, env={**stage_env(), pl.STAGE_PAUSE_ENV: str(pauses)},
                                stdout=out, stderr=subprocess.STDOUT, text=True)
    try:
        for stage in STAGES_RUN:
            assert wait_for(proc, (pauses / f"{stage}.paused").exists), \
                f"the run ended or hung before {stage}:\n{log.read_text()[-3000:]}"
            # the lock belongs to this live run: a copy starts unlocked, as the store of a finished run
            shutil.copytree(root, base / f"before-{stage}", ignore=shutil.ignore_patterns(pl.LOCK_FILE))
            (pauses / f"{stage}.resume").touch()
        assert proc.wait(timeout=1800) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return base
