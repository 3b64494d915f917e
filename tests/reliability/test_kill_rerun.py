"""Fault injection: each stage started as a real process (`customer-value pipeline --only STAGE`) and SIGKILLed at
real points, one after another on the same store: just before its first Delta commit (the stage waits there when
the harness asks, its work done and nothing committed), then its rerun after its first commit, then that rerun's
rerun after three commits (during and after its writes, before the pipeline records it), and a last run to the end.
Each run after a kill must recover from what the dead one left (its lock, a half-written batch) and every output
table must end equal to a clean run's by an order-independent content checksum and by row count. Successive kills
on one store cost one full rerun per stage instead of one per kill point, and make each recovery itself
interrupted. Training is killed twice in the same way: one Horovod rank SIGKILLed mid-training (the stage must fail
by itself), then its rerun (which must resume from the checkpoint) during its backtest, once the backtest's model
was staged; the last run must backtest that staged model rather than train it again (it trains only the refit that
serves), register it as the first version, and its metrics match the clean run's within TOLERANCE. The harness writes what it injected and the outcome to reports/reliability.md
(`make reliability-doc` runs it and copies that to docs/reliability.md).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
from deltalake import DeltaTable

from customer_value.pipeline import STAGES
from customer_value.tables import FAULT_PAUSE_ENV
from tests.conftest import ROOT, run_folder
from tests.reference import CUSTOMERS, STAGES_RUN, command, run_stage, stage_env, wait_for

pytestmark = pytest.mark.slow
# columns that name the run rather than the data: batch ids and times of ingestion differ run to run
VOLATILE = {"_batch_id", "_ingested_at", "run_id", "cleaned_at", "started_at", "seconds", "fingerprint", "modified",
            "ingested_at", "computed_at", "created_at", "scored_at"}
BEFORE_FIRST_COMMIT = 0
KILL_POINTS = {"before its first commit": BEFORE_FIRST_COMMIT, "after its first commit": 1, "after three commits": 3}
# monitor makes one commit, then the pipeline's record: "after three" would be after the stage ended
STAGE_KILL_POINTS = {s: KILL_POINTS for s in ("ingest", "clean", "features", "score")} | {
    "monitor": {k: v for k, v in KILL_POINTS.items() if v < 3}}
STAGES_KILLED = tuple(STAGE_KILL_POINTS)
# what a run prints when it finds and repairs what a killed run left behind
RECOVERY = {r"taking over the lock of run": "took over the dead run's lock",
            r"removing rows of unfinished batches": "removed the rows of the dead run's unfinished batch",
            r"resuming from the checkpoints": "resumed training from the dead run's checkpoint",
            r"staged at .*: backtesting it instead of training again": "backtested the dead run's staged model",
            r"registered by an interrupted run.*backtesting it instead": "backtested the dead run's registered model"}
# A resumed training reads its rows in another order after the kill (a fresh reader) and so ends on other weights:
# its backtest may differ from the clean run's by this much (absolute); the baselines must not differ at all.
# Measured on this 600-customer shop: four clean trainings that differ only in their seed spread over spend Gini
# 0.627-0.691 and churn ROC-AUC 0.763-0.848; a resumed run shares its first epochs and differed from the clean run
# by 0.000-0.025 in Gini and 0.003-0.007 in ROC-AUC (0.02 failed once in CI). Whether it resumed at all is asserted
# on its loss, not here.
TOLERANCE = {"spend_gini": 0.05, "churn_roc_auc": 0.05}
REPORT = ROOT / "reports" / "reliability.md"


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


def _start(root: Path, stage: str, log: Path, **env: str) -> subprocess.Popen:
    """The stage as its own process group (driver, JVM, Python workers, Horovod ranks), its output in `log`."""
    with open(log, "w") as out:
        return subprocess.Popen(command(root, stage), cwd=ROOT, env={**stage_env(), **env}, start_new_session=True,
                                stdout=out, stderr=subprocess.STDOUT, text=True)


def _kill(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def kill_stage(root: Path, stage: str, after_commits: int, log: Path) -> bool:
    """Run the stage and SIGKILL it just before its first commit (`BEFORE_FIRST_COMMIT`: it waits there at the
    fault point) or once `after_commits` new Delta commits exist. False when the stage ended before that point."""
    marker = log.with_suffix(".paused")
    start = _commits(root)
    pause = {FAULT_PAUSE_ENV: str(marker)} if after_commits == BEFORE_FIRST_COMMIT else {}
    proc = _start(root, stage, log, **pause)
    reached = ((lambda: marker.exists()) if after_commits == BEFORE_FIRST_COMMIT
               else (lambda: _commits(root) - start >= after_commits))
    if not wait_for(proc, reached, timeout=600, poll=0.02):
        proc.wait()
        return False
    if after_commits == BEFORE_FIRST_COMMIT:
        assert _commits(root) == start, "the stage committed before its first commit's fault point"
    _kill(proc)
    return True


def recovered(output: str) -> list[str]:
    """What a run's output says it found and repaired of a killed run's leftovers."""
    return [what for pattern, what in RECOVERY.items() if re.search(pattern, output)]


def _after(reference: Path, stage: str) -> Path:
    """The clean run's store as `stage` left it: the copy taken before the next stage (a later stage may add to a
    table this one wrote: the train stage's backtest writes features at its own snapshots)."""
    later = STAGES_RUN[STAGES_RUN.index(stage) + 1:]
    return reference / (f"before-{later[0]}" if later else "store")


def _outputs(root: Path, stage: str, reference: Path) -> dict[str, tuple[int, str]]:
    names = [o for o in next(s for s in STAGES if s.name == stage).outputs if "." in o]
    return {n: checksum(root / n.split(".")[0] / n.split(".")[1], root, reference) for n in names}


@pytest.fixture()
def results(request, tmp_path_factory):
    """The report's rows this test adds, kept in the run's shared folder: the tests may run in different xdist
    workers, and the session's end (tests/conftest.py) writes the report from every worker's rows."""
    rows: list[tuple[str, str, str, str]] = []
    yield rows
    folder = run_folder(tmp_path_factory) / "reliability"
    folder.mkdir(exist_ok=True)
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.name)
    (folder / f"{name}.json").write_text(json.dumps(rows))


@pytest.mark.parametrize("stage", STAGES_KILLED)
def test_kill_any_stage_again_and_again_then_rerun(reference, tmp_path, stage, results):
    """Each kill point in turn on one store (the first run killed before its first commit, its rerun after one
    commit, that one's rerun after three), then a run to the end: each run after a kill must find the dead run's
    leftovers (at least its lock) and the last must leave every output equal to the clean run's."""
    store = reference / "store"
    want = _outputs(_after(reference, stage), stage, store)
    root = tmp_path / "killed"
    shutil.copytree(reference / f"before-{stage}", root)
    points = list(STAGE_KILL_POINTS[stage].items())
    logs = [tmp_path / f"run-{n}.log" for n in range(len(points) + 1)]
    killed = [kill_stage(root, stage, commits, logs[n]) for n, (_, commits) in enumerate(points)]
    logs[-1].write_text(run_stage(root, stage))
    got = _outputs(root, stage, store)
    outcome = ("identical to the clean run" if got == want else
               "DIFFERS: " + ", ".join(t for t in want if got.get(t) != want[t]))
    for n, ((point, _), k) in enumerate(zip(points, killed)):
        after = recovered(logs[n + 1].read_text())
        fault = (("SIGKILL " if n == 0 else "then its rerun SIGKILLed ") + point +
                 ("" if k else " (the stage ended first)"))
        results.append((stage, fault, "; ".join(after) or "nothing to recover", outcome))
    assert killed[0], f"{stage} never reached its first commit"
    assert all("took over the dead run's lock" in recovered(logs[n + 1].read_text())
               for n, k in enumerate(killed) if k), f"{stage}: a run after a kill did not take over the dead lock"
    assert got == want, f"{stage}: {outcome}"


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


def test_kill_a_horovod_rank_then_the_resumed_run_during_its_backtest(reference, tmp_path, results):
    """Training's two crashes on one store. (1) Horovod rank 1 SIGKILLed after the second checkpoint: the stage
    must fail by itself, naming the rank, not hang. (2) Its rerun must resume from the checkpoint and train only
    the remaining epochs; it is SIGKILLed during its backtest, once the backtest's model is staged (not yet
    registered). (3) The last run must backtest that staged model instead of training it again (only the refit
    for serving trains), register it whole as version 1, and its backtest must be within TOLERANCE of the clean
    run's, the baselines' identical."""
    store = reference / "store"
    root = tmp_path / "train-killed"
    shutil.copytree(reference / "before-train", root)
    first, second = tmp_path / "run-0.log", tmp_path / "run-1.log"

    proc = _start(root, "train", first)
    assert wait_for(proc, lambda: _checkpoint_epoch(root) >= 2), "training ended before its second checkpoint"
    rank = _rank(proc.pid, 1)
    assert rank is not None, "no Horovod rank 1 under the stage's process"
    epoch = _checkpoint_epoch(root)
    rank.kill()
    try:
        proc.wait(timeout=600)          # the stage must fail by itself, not hang on the dead rank
    except subprocess.TimeoutExpired:
        _kill(proc)
        raise AssertionError("the train stage hung after one of its Horovod ranks was killed") from None
    out, code = first.read_text(), proc.returncode
    assert code != 0, out[-3000:]
    assert "rank 1 exited with code 137" in out and "Traceback" not in out, out[-3000:]

    proc = _start(root, "train", second)
    models = root / "models" / "customer_value"
    assert wait_for(proc, lambda: any(models.glob("_staging-*/backtest/training.json"))), \
        "the resumed training ended before its model was staged"
    _kill(proc)
    resumed = second.read_text()
    assert "resuming from the checkpoints" in resumed, resumed[-3000:]

    last = run_stage(root, "train")
    outcome, info = _compare_model(root, store)
    training = json.loads((models / info["version"] / "backtest" / "training.json").read_text())
    resumed_at = training["ranks"][0]["initial_epoch"]
    results.append(("train", f"SIGKILL of Horovod rank 1 after checkpoint {epoch} of 8 (the stage then failed by "
                             f"itself, exit {code})", "; ".join(recovered(resumed)) +
                    f" (at epoch {resumed_at})", outcome))
    results.append(("train", "SIGKILL of the resumed run during its backtest, once the backtest's model was staged "
                             "(not yet registered)", "; ".join(recovered(last)) + f"; served version {info['version']}",
                    outcome))
    assert resumed_at >= 2, training["ranks"][0]
    assert [r["epochs_run"] for r in training["ranks"]] == [8 - resumed_at] * 2, "only the remaining epochs ran"
    # it went on from the checkpoint's weights: its first epoch's training loss is where the clean run's was at
    # that epoch, not where a fresh network starts (the clean run's first epoch: 7.6 against 3.9 by the third,
    # measured), which the metrics' tolerance alone could not tell apart
    clean = json.loads((store / "models" / "customer_value" / "1" / "backtest" / "training.json").read_text())
    clean_loss = clean["ranks"][0]["history"]["loss"]
    resumed_loss = training["ranks"][0]["history"]["loss"][0]
    assert resumed_loss < (clean_loss[0] + clean_loss[resumed_at]) / 2, (resumed_loss, clean_loss)
    # the last run trained only the refit for serving, not the backtest's model again
    assert "backtesting it instead of training again" in last and "Horovod:" not in last, last[-3000:]
    assert "refit for serving" in last, last[-3000:]
    assert info["version"] == "1", "the interrupted run's model is registered as the first version, nothing left behind"
    assert not list(models.glob("_staging-*")), "the staged model was moved into its version"
    assert outcome.startswith("within tolerance"), outcome


def write_report(results: list[tuple[str, str, str, str]]) -> None:
    """reports/reliability.md from every test's rows (in the order of the stages), where every stage is there."""
    if {s for s, *_ in results} != {*STAGES_KILLED, "train"}:
        return              # a partial run (-k, a test that errored before its kills) keeps the last full table
    order = [*STAGES_KILLED, "train"]
    results = sorted(results, key=lambda r: order.index(r[0]))      # stable: a stage's rows keep their order
    tolerance = ", ".join(f"{k} ± {v}" for k, v in TOLERANCE.items())
    lines = ["# Reliability", "",
             "Written by `tests/reliability/test_kill_rerun.py` into `reports/reliability.md`; `make "
             "reliability-doc` runs the harness and copies that table here (`make test-all` runs it too, behind the "
             f"`slow` marker). Each stage runs as a real process (`customer-value pipeline --only STAGE`) on a "
             f"generated shop of {CUSTOMERS} customers. The process group (driver, JVM, Python workers, Horovod ranks) "
             "is SIGKILLed at the points given, one after another on the same store: the first run just before its "
             "first Delta commit (a fault point the harness turns on: the stage has done its work and waits there, "
             "nothing committed), its rerun after its first commit, that rerun's rerun after three; then the same "
             "command runs to the end. Each run after a kill must find what the dead run left (the column 'the next "
             "run recovered' quotes its output). Every output table is then compared with a clean run's, by row "
             "count and by an order-independent checksum of its content. The checksum leaves out batch ids and run "
             "times.", "",
             "Training's output is a model, not a table. A resumed training reads its rows in another order after "
             "the kill, so it ends on other weights. Its first epoch's loss must continue from the checkpoint (nearer "
             "the clean run's at that epoch than a fresh network's), and its backtest must match the clean run's "
             f"within a stated tolerance: {tolerance} (absolute; clean runs of other seeds spread wider). A kill "
             "during the backtest leaves the backtest's model trained and staged (a version is registered whole, after its "
             "backtest and the refit that serves): the rerun backtests that model instead of training it again. The baselines' metrics must be identical. "
             "The backtest tables must have the clean run's row counts.", "",
             "| stage | fault injected | the next run recovered | outcome of the last run |", "|---|---|---|---|"]
    lines += [f"| {s} | {f} | {n} | {o} |" for s, f, n, o in results]
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
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text("\n".join(lines))
