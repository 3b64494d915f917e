"""Fault injection: each stage started as a real process (`customer-value pipeline --only STAGE`), SIGKILLed
before its first Delta commit, after its first and after several (during and after its writes, before the
pipeline records it), then rerun; every output table must equal a clean run's by an order-independent content
checksum and by row count. Training is killed twice: one Horovod rank SIGKILLed mid-training (the stage must fail
by itself, and the rerun resume from the checkpoint), and the whole stage during its backtest after the model was
registered; its backtest metrics must then match the clean run's within TOLERANCE. The harness writes what it
injected and the outcome to docs/reliability.md.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from deltalake import DeltaTable

from customer_value.pipeline import STAGES
from tests.conftest import ROOT
from tests.reliability.conftest import STAGES_RUN, command, stage_env, run_stage

pytestmark = pytest.mark.slow
# columns that name the run rather than the data: batch ids and times of ingestion differ run to run
VOLATILE = {"_batch_id", "_ingested_at", "run_id", "cleaned_at", "started_at", "seconds", "fingerprint", "modified",
            "ingested_at", "computed_at", "created_at", "scored_at"}
KILL_AFTER_COMMITS = {"before its first commit": 0, "after its first commit": 1, "after three commits": 3}
# monitor makes one commit, then the pipeline's record: "after three" would be after the stage ended. Ingest and
# features are killed mid-commits only (CI's time): before any commit they are like clean and score, whose
# "before" runs stay
KILL_POINTS = {"monitor": {k: v for k, v in KILL_AFTER_COMMITS.items() if v < 3},
               **{s: {k: v for k, v in KILL_AFTER_COMMITS.items() if v > 0} for s in ("ingest", "features")}}
STAGES_KILLED = ("ingest", "clean", "features", "score", "monitor")
# A resumed training reads its rows in another order after the kill (a fresh reader) and so ends on other weights:
# its backtest may differ from the clean run's by this much (absolute); the baselines must not differ at all.
# (measured: 0.004 and 0.001 after a rank was killed at epoch 2 of 8). A kill during the backtest leaves a trained,
# registered model: the rerun backtests that one, and its metrics must be the clean run's exactly.
TOLERANCE = {"spend_gini": 0.02, "churn_roc_auc": 0.02}
RESULTS: list[tuple[str, str, int, str]] = []
REPORT = ROOT / "docs" / "reliability.md"


def checksum(path: Path, *roots: Path) -> tuple[int, str]:
    """Row count and an order-independent digest of a Delta table's content: the sorted per-row hashes, hashed.
    Volatile columns are left out, paths are taken relative to the store (`roots`: a copied store's rows may name
    the store it was copied from), and floats are compared to 9 significant digits (a sum of doubles in another
    order differs in the last bits)."""
    frame = DeltaTable(str(path)).to_pandas()
    frame = frame[[c for c in sorted(frame.columns) if c not in VOLATILE]]
    prefixes = tuple(p for r in roots for p in (r.resolve().as_uri(), str(r.resolve())))

    def norm(v) -> str:
        if isinstance(v, float):
            return format(v, ".9g")
        text = str(v)
        for prefix in prefixes:
            text = text.replace(prefix, "<root>")
        return text

    rows = sorted(hashlib.sha256(repr(tuple(norm(v) for v in r)).encode()).hexdigest()
                  for r in frame.itertuples(index=False))
    return len(rows), hashlib.sha256("".join(rows).encode()).hexdigest()


def _commits(root: Path) -> int:
    return sum(1 for _ in root.glob("*/*/_delta_log/*.json"))


def kill_stage(root: Path, stage: str, after_commits: int) -> bool:
    """Start the stage, SIGKILL its process group once `after_commits` new Delta commits exist (0: as soon as the
    process is up, before any). False when the stage ended before the kill point."""
    start = _commits(root)
    proc = subprocess.Popen(command(root, stage), cwd=ROOT, env=stage_env(), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    if after_commits == 0:
        time.sleep(3)
    while after_commits and _commits(root) - start < after_commits and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    if proc.poll() is not None:
        return False
    os.killpg(proc.pid, signal.SIGKILL)      # the driver, its JVM and its Python workers
    proc.wait()
    return True


def _after(reference: Path, stage: str) -> Path:
    """The clean run's store as `stage` left it: the copy taken before the next stage (a later stage may add to a
    table this one wrote: the train stage's backtest writes features at its own snapshots)."""
    later = STAGES_RUN[STAGES_RUN.index(stage) + 1:]
    return reference / (f"before-{later[0]}" if later else "store")


def _outputs(root: Path, stage: str, reference: Path) -> dict[str, tuple[int, str]]:
    names = [o for o in next(s for s in STAGES if s.name == stage).outputs if "." in o]
    return {n: checksum(root / n.split(".")[0] / n.split(".")[1], root, reference) for n in names}


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    _write_report()


def _start(root: Path, stage: str) -> subprocess.Popen:
    return subprocess.Popen(command(root, stage), cwd=ROOT, env=stage_env(), start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.parametrize("stage", STAGES_KILLED)
def test_kill_any_stage_and_rerun(reference, tmp_path, stage):
    store = reference / "store"
    want = _outputs(_after(reference, stage), stage, store)
    failures = []
    for n, (point, commits) in enumerate(KILL_POINTS.get(stage, KILL_AFTER_COMMITS).items()):
        root = tmp_path / f"killed-{n}"
        shutil.copytree(reference / f"before-{stage}", root)
        killed = kill_stage(root, stage, commits)
        run_stage(root, stage)
        got = _outputs(root, stage, store)
        outcome = ("identical to the clean run" if got == want else
                   "DIFFERS: " + ", ".join(t for t in want if got.get(t) != want[t]))
        RESULTS.append((stage, f"SIGKILL {point}" if killed else f"SIGKILL {point} (the stage ended first)", 1, outcome))
        if got != want:
            failures.append(f"killed {point}: {outcome}")
    assert not failures, f"{stage}: {failures}"


# --- training ---------------------------------------------------------------------------------------------------

def _served(root: Path) -> tuple[Path, dict]:
    """The artifact `customer_value/latest` resolves to in this store's registry, and its backtest metrics."""
    from customer_value.config import load_config
    from customer_value.models import registry

    cfg = load_config(ROOT / "conf" / "local.yaml", [f"storage.root={root}"])
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    model = registry.resolve(cfg, f"{cfg.training.model_name}/latest")
    assert model.path.resolve().is_relative_to(root.resolve()), f"{model.path} is not this store's artifact"
    for part in ("saved_model", "calibration.json", "spec.json", "training.json", "metrics.json", "MODEL_CARD.md"):
        assert (model.path / part).exists(), f"{model.label}: {part} missing"
    return model.path, json.loads((model.path / "metrics.json").read_text())


def _compare_model(root: Path, store: Path) -> tuple[str, dict]:
    """The served model's backtest against the clean run's: the deep model within TOLERANCE, the baselines (no
    training involved) exactly; the backtest tables with the clean run's row counts."""
    _, want = _served(store)
    path, got = _served(root)
    deltas = {k: abs(got["deep_ziln"][k] - want["deep_ziln"][k]) for k in TOLERANCE}
    problems = [f"{k} differs by {d:.4f} > {TOLERANCE[k]}" for k, d in deltas.items() if d > TOLERANCE[k]]
    for model in set(want) - {"deep_ziln"}:
        for k, v in want[model].items():
            if abs(got[model][k] - v) > 1e-9 * max(1.0, abs(v)):
                problems.append(f"baseline {model}.{k}: {got[model][k]} != {v}")
    for table in ("gold/backtest_predictions", "gold/model_metrics"):
        if checksum(root / table, root)[0] != checksum(store / table, store)[0]:
            problems.append(f"{table}: row count differs")
    shown = ", ".join(f"{k} {got['deep_ziln'][k]:.3f} vs {want['deep_ziln'][k]:.3f}" for k in TOLERANCE)
    return ("; ".join(problems) if problems else f"within tolerance ({shown}); baselines identical"), \
        {"deltas": deltas, "version": path.name}


def _descendants(pid: int):
    import psutil

    return psutil.Process(pid).children(recursive=True)


def _rank(pid: int, rank: int):
    """The Horovod rank `rank` among the processes under `pid` (horovodrun sets HOROVOD_RANK in each)."""
    for p in _descendants(pid):
        try:
            if "customer_value.models.train" in " ".join(p.cmdline()) and p.environ().get("HOROVOD_RANK") == str(rank):
                return p
        except Exception:               # noqa: BLE001 - a process that ended while we looked
            continue
    return None


def _checkpoint_epoch(root: Path) -> int:
    states = list((root / "_work" / "training").glob("*/checkpoints/state.json"))
    try:
        return max(json.loads(f.read_text())["epoch"] for f in states) if states else 0
    except (ValueError, KeyError):       # read while being replaced
        return 0


def _wait(proc: subprocess.Popen, until, timeout: float = 900) -> bool:
    deadline = time.time() + timeout
    while proc.poll() is None and time.time() < deadline:
        if until():
            return True
        time.sleep(0.05)
    return False


def test_kill_a_horovod_rank_then_the_rerun_resumes_from_its_checkpoint(reference, tmp_path):
    store = reference / "store"
    root = tmp_path / "rank-killed"
    shutil.copytree(reference / "before-train", root)
    proc = _start(root, "train")
    assert _wait(proc, lambda: _checkpoint_epoch(root) >= 2), "training ended before its second checkpoint"
    rank = _rank(proc.pid, 1)
    assert rank is not None, "no Horovod rank 1 under the stage's process"
    epoch = _checkpoint_epoch(root)
    rank.kill()
    try:
        out = proc.communicate(timeout=600)[0]      # the stage must fail by itself, not hang on the dead rank
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise AssertionError("the train stage hung after one of its Horovod ranks was killed") from None
    assert proc.returncode != 0, out[-3000:]
    assert "rank 1 exited with code 137" in out and "Traceback" not in out, out[-3000:]

    rerun = run_stage(root, "train")
    assert "resuming from the checkpoints" in rerun, rerun[-3000:]
    outcome, info = _compare_model(root, store)
    training = json.loads((root / "models" / "customer_value" / info["version"] / "training.json").read_text())
    resumed_at = training["ranks"][0]["initial_epoch"]
    RESULTS.append(("train", f"SIGKILL of Horovod rank 1 after checkpoint {epoch} of 8 (the stage then failed by "
                             f"itself, exit {proc.returncode}); rerun resumed at epoch {resumed_at}", 1, outcome))
    assert resumed_at >= 2, training["ranks"][0]
    assert [r["epochs_run"] for r in training["ranks"]] == [8 - resumed_at] * 2, "only the remaining epochs ran"
    assert outcome.startswith("within tolerance"), outcome


def test_kill_training_during_its_backtest_after_registration(reference, tmp_path):
    store = reference / "store"
    root = tmp_path / "backtest-killed"
    shutil.copytree(reference / "before-train", root)
    proc = _start(root, "train")
    registered = root / "models" / "customer_value" / "1" / "saved_model"
    assert _wait(proc, registered.exists), "training ended before its model was registered"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    rerun = run_stage(root, "train")
    outcome, info = _compare_model(root, store)
    adopted = "backtesting it instead of training again" in rerun
    RESULTS.append(("train", "SIGKILL of the stage during its backtest, after the model was registered (not yet "
                             "ready); the rerun " + ("backtested that version instead of training again"
                                                     if adopted else "trained again") +
                    f" and served version {info['version']}", 1, outcome))
    assert adopted and "Horovod:" not in rerun, rerun[-3000:]
    assert info["version"] == "1", "the interrupted version is finished, not left behind unready"
    assert outcome.startswith("within tolerance") and max(info["deltas"].values()) < 1e-9, outcome


def _write_report() -> None:
    if {s for s, *_ in RESULTS} != {*STAGES_KILLED, "train"}:
        return              # a partial run (-k, a test that errored before its kills) keeps the last full table
    tolerance = ", ".join(f"{k} ± {v}" for k, v in TOLERANCE.items())
    lines = ["# Reliability", "",
             "Written by `tests/reliability/test_kill_rerun.py` (run with `make test`; the harness is behind the "
             "`slow` marker, which CI runs). Each stage runs as a real process (`customer-value pipeline --only "
             "STAGE`) on a generated shop of 600 customers. The process group (driver, JVM, Python workers, Horovod "
             "ranks) is SIGKILLed at the point given, then the same command is rerun. Every output table is then "
             "compared with a clean run's, by row count and by an order-independent checksum of its content. The "
             "checksum leaves out batch ids and run times.", "",
             "Training's output is a model, not a table. A resumed training reads its rows in another order after "
             "the kill, so it ends on other weights. Its backtest must match the clean run's within a stated "
             f"tolerance: {tolerance} (absolute). A kill during the backtest leaves a trained, registered version: "
             "the rerun backtests that version, and its metrics must equal the clean run's. The baselines' "
             "metrics must be identical. The backtest tables must have the clean run's row counts.", "",
             "| stage | fault injected | times | outcome |", "|---|---|---:|---|"]
    lines += [f"| {s} | {f} | {n} | {o} |" for s, f, n, o in RESULTS]
    lines += ["", "Also tested, with the outcome asserted rather than tabled:",
              "- two pipeline runs started at once on one store: one runs and the other stops with the lock's "
              "holder named (`tests/reliability/test_concurrent.py`);",
              "- two writers of one table without the lock (an object store, or another job): a second, real writer "
              "(delta-rs) commits while Spark's transaction is in flight; Spark's commit is refused by Delta and "
              "retried against the new state (a slice overwrite and clean's MERGE), or, out of retries "
              "(`storage.conflict_retries`), reported naming the table, which holds the other commit whole "
              "(`tests/reliability/test_concurrent.py`);",
              "- the checksum itself: a duplicated, lost or changed row changes it; row order, batch ids, the store's "
              "path and float noise do not (`tests/reliability/test_checksum.py`);",
              "- the hostile-input corpus `tests/data/bad/` through ingest and the transactions adapter "
              "(`tests/reliability/test_hostile_input.py`, docs/data.md);",
              "- secrets: a key in conf/ or `--set` refused, and a run's logs, files and tables scanned for the key "
              "and raw ids, MLflow's params, tags and artifacts included (`tests/reliability/test_secrets.py`, "
              "docs/privacy.md);",
              "- a clean killed before its batch marker reruns to the same silver (`tests/e2e/test_incremental.py`).",
              ""]
    REPORT.write_text("\n".join(lines))
