"""The pipeline as data: each stage declares what it reads, what it writes and what decides its result, and a
stage whose fingerprint is already committed for this run is skipped.

    customer-value pipeline --conf conf/local.yaml [--snapshot-date S] [--from STAGE | --only STAGE] [--force]

Why a fingerprint and not "did it run today": a stage's output is a function of its inputs' state and its
settings. The fingerprint hashes the snapshot S, the stage's configuration sections and the current version of
every input (a Delta table's latest commit, the landing folder's file list, the registered model), so:
- a second run over the same inputs skips every stage;
- a rerun after a failure skips what committed and resumes at the stage that failed (it has no record);
- new landing files change ingest's fingerprint, ingest's commits change clean's, and so on down: exactly the
  stages whose inputs moved run again.
A stage is recorded in `ops.pipeline_runs` only after its own Delta commits, so a crash between the two reruns the
stage, which every stage allows (each write replaces its slice in one commit).

Training is "due" by `training.retrain_every_days`: its fingerprint holds the retraining period S falls in, not
the training set's version, so daily feature runs do not retrain every day.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Callable, Iterator, Sequence

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from customer_value.config import Config
from customer_value.tables import Tables, write_marker

RUNS_TABLE = "ops.pipeline_runs"
RUNS_SCHEMA = ("run_id string, snapshot_date date, stage string, fingerprint string, status string, rows bigint, "
               "seconds double, started_at timestamp, inputs string, error string")
LANDING, MODEL = "landing", "model"      # inputs that are not Delta tables
EPOCH = date(2000, 1, 3)                 # a Monday: retraining periods of 7 days start on Mondays


class PipelineError(RuntimeError):
    """A stage failed: names the stage, its inputs and outputs, and the cause (the stage's own message)."""


@dataclass(frozen=True)
class Run:
    """One pipeline run: the snapshot S its features and scores are for."""

    snapshot: date
    run_id: str = field(default_factory=lambda: "p" + uuid.uuid4().hex[:15])


@dataclass(frozen=True)
class Stage:
    """A step of the pipeline. `run` does the work and returns the rows it produced (for the progress line);
    `settings` are the configuration sections whose values decide its result (a change reruns it)."""

    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    settings: tuple[str, ...]
    run: Callable[[SparkSession, Config, Run], int]
    description: str = ""
    period: Callable[[Config, Run], object] | None = None     # a stage that is due once per period (training)


@dataclass
class StageReport:
    stage: str
    status: str            # ran | skipped | failed | not selected
    rows: int | None = None
    seconds: float = 0.0
    fingerprint: str = ""
    error: str | None = None


# --- the stages ------------------------------------------------------------------------------------------------

def _generate(spark, cfg, run):
    from customer_value.synthetic.generate import generate

    return generate(spark, cfg).rows


def _ingest(spark, cfg, run):
    from customer_value.ingest.run import ingest

    return sum(s["bronze"] for s in ingest(spark, cfg).per_source.values())


def _clean(spark, cfg, run):
    from customer_value.cleaning.run import clean_all

    return sum(c.rows_out for c in clean_all(spark, cfg).values())


def _features(spark, cfg, run):
    from customer_value.features.run import run_features

    also, also_labelled = _backtest_snapshots(spark, cfg, run)
    run_features(spark, cfg, run.snapshot, cfg.features.history_snapshots, reuse=True, also=also,
                 also_labelled=also_labelled)
    feats = Tables(cfg.storage).read(spark, "gold.customer_features")
    return feats.where(F.col("snapshot_date") == F.lit(run.snapshot)).count()


def _train(spark, cfg, run):
    from customer_value.models.deep import train_and_backtest

    deep, result = train_and_backtest(spark, cfg)
    print(f"model {deep.version}: {deep.registered.path}; report: {result.report_dir}/report.html", flush=True)
    training = json.loads((deep.registered.path / "training.json").read_text())
    split = training["training_set"]
    return int(split["train_rows"]) + int(split["validation_rows"])


def _score(spark, cfg, run):
    from customer_value.scoring.run import score_snapshot

    return score_snapshot(spark, cfg, run.snapshot).customers      # the pipeline reports the scores at its end


def _monitor(spark, cfg, run):
    from customer_value.scoring.run import monitor

    from customer_value.cli import print_monitor

    result = monitor(spark, cfg, run.snapshot)
    print_monitor(result)
    return len(result.rows)


def _backtest_snapshots(spark, cfg, run) -> tuple[list[date], list[date]]:
    """The snapshots whose features (and labels) the train stage's backtest will need, when training is due for
    this run's period: the features stage computes them with its own in one Spark job and one commit, and the
    backtest reads them (they carry the same inputs key). Nothing when training is not due, or the backtest's
    horizon is not the features' (its labels would be another horizon's).

    Due is the train stage's own test (its fingerprint not committed), a function of the store alone, so a
    features stage run alone (`--only features`) writes what it writes inside a whole run."""
    from customer_value.evaluation.backtest import backtest_snapshots
    from customer_value.models.deep import DeepModel

    tables, train = Tables(cfg.storage), _stage("train")
    if _done(spark, cfg, tables, train, _state(spark, cfg, tables, run, train)[1]):
        return [], []
    features, labelled, horizon = backtest_snapshots(spark, cfg, [DeepModel(cfg)])
    if horizon != cfg.features.horizon_days:
        return [], []
    return features, labelled


def _training_period(cfg: Config, run: Run) -> int:
    return (run.snapshot - EPOCH).days // cfg.training.retrain_every_days


SILVER = ("silver.customers", "silver.customer_history", "silver.orders", "silver.order_history",
          "silver.order_items", "silver.events", "silver.reviews", "silver.review_history")
BRONZE = tuple(f"bronze.{s}" for s in ("users", "orders", "order_items", "events", "reviews"))

STAGES: tuple[Stage, ...] = (
    Stage("generate", (), (LANDING, "synthetic.ground_truth"), ("synthetic", "landing"), _generate,
          "a synthetic shop's raw exports into the landing folder (with --generate only)"),
    Stage("ingest", (LANDING,), (*BRONZE, "ops.ingested_files"), ("landing",), _ingest,
          "new landing files into bronze and quarantine"),
    Stage("clean", BRONZE, SILVER, ("cleaning", "pseudonymisation"), _clean,
          "bronze into pseudonymised silver, with data-quality metrics"),
    Stage("features", SILVER, ("gold.customer_features",), ("features",), _features,
          "point-in-time features at S and its history snapshots (on a grid: written once, then reused), labels where the horizon has passed"),
    Stage("train", (), (MODEL,), ("training", "features", "backtest"), _train,
          "train, backtest and register the model, when due (training.retrain_every_days)",
          period=_training_period),
    Stage("score", ("gold.customer_features", MODEL), ("gold.customer_scores", "gold.segment_summary", "gold.segments"),
          ("scoring",), _score, "score every customer at S"),
    Stage("monitor", ("gold.customer_scores",), ("gold.drift",), ("monitor",), _monitor,
          "drift of S's features and scores against the model's training snapshot"),
)


def _stage(name: str) -> Stage:
    return next(s for s in STAGES if s.name == name)


def stage_names() -> list[str]:
    return [s.name for s in STAGES]


def select(stages: Sequence[Stage], start: str | None = None, only: str | None = None,
           generate: bool = False) -> list[Stage]:
    """The stages to consider, in order: from `start` on, or `only` that one; generate only when asked."""
    names = [s.name for s in stages]
    for flag, value in (("--from", start), ("--only", only)):
        if value is not None and value not in names:
            raise ValueError(f"{flag} {value!r}: not a stage; stages: {', '.join(names)}")
    if start and only:
        raise ValueError("--from and --only exclude each other")
    chosen = [s for s in stages if generate or s.name != "generate" or only == "generate" or start == "generate"]
    if only:
        return [s for s in chosen if s.name == only]
    if start:
        return chosen[[s.name for s in chosen].index(start):]
    return chosen


# --- state and fingerprints ------------------------------------------------------------------------------------

def input_state(spark: SparkSession, cfg: Config, tables: Tables, name: str) -> object:
    """What an input is now: a Delta table's latest version, the landing folder's files, the latest model."""
    if name == LANDING:
        from customer_value.ingest.files import list_landing
        from customer_value.ingest.run import SOURCES
        from customer_value.landing import landing_uri

        files = list_landing(landing_uri(cfg), list(SOURCES))
        return hashlib.sha256("\n".join(f"{f.path}\t{f.size}\t{f.modified}" for f in files).encode()).hexdigest()[:16]
    if name == MODEL:
        from customer_value.models import registry

        try:
            return registry.resolve(cfg, f"{cfg.training.model_name}/{registry.CHAMPION}").label
        except Exception:           # noqa: BLE001 - no model registered yet is a state, not an error
            return None
    if not tables.exists(spark, name):
        return None
    return tables.version(spark, name)


def output_present(spark: SparkSession, cfg: Config, tables: Tables, name: str) -> bool:
    if name == LANDING:
        from customer_value.landing import Location, landing_uri
        from customer_value.synthetic.generate import MANIFEST_FILE

        loc = Location.of(landing_uri(cfg)).child(MANIFEST_FILE)
        return loc.fs.get_file_info(loc.path).type.name == "File"
    if name == MODEL:
        return input_state(spark, cfg, tables, MODEL) is not None
    return tables.exists(spark, name)


def fingerprint(stage: Stage, cfg: Config, run: Run, inputs: dict[str, object]) -> str:
    """What decides the stage's result. A stage due once per period holds the period instead of S."""
    settings = {s: _section(cfg, s) for s in stage.settings}
    when = {"period": stage.period(cfg, run)} if stage.period else {"snapshot": str(run.snapshot)}
    body = {"stage": stage.name, **when, "inputs": inputs, "settings": settings}
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()[:24]


def _section(cfg: Config, name: str) -> object:
    value = getattr(cfg, name)
    return value.model_dump(mode="json") if hasattr(value, "model_dump") else value


def _state(spark: SparkSession, cfg: Config, tables: Tables, run: Run, stage: Stage) -> tuple[dict[str, object], str]:
    """The stage's inputs as they are now, and its fingerprint."""
    inputs = {name: input_state(spark, cfg, tables, name) for name in stage.inputs}
    return inputs, fingerprint(stage, cfg, run, inputs)


def _done(spark: SparkSession, cfg: Config, tables: Tables, stage: Stage, fp: str) -> bool:
    """The stage's result for this fingerprint is there (outputs present, fingerprint committed): it is skipped."""
    return all(output_present(spark, cfg, tables, o) for o in stage.outputs) and committed(spark, tables, stage.name, fp)


def committed(spark: SparkSession, tables: Tables, stage: str, fp: str) -> bool:
    if not tables.exists(spark, RUNS_TABLE):
        return False
    runs = tables.read(spark, RUNS_TABLE)
    return runs.where((F.col("stage") == stage) & (F.col("fingerprint") == fp) & (F.col("status") == "done")) \
        .limit(1).count() > 0


def record(spark: SparkSession, tables: Tables, run: Run, report: StageReport, started: datetime,
           inputs: dict[str, object]) -> None:
    row = (run.run_id, run.snapshot, report.stage, report.fingerprint, "done" if report.status == "ran" else "failed",
           report.rows, report.seconds, started, json.dumps(inputs, default=str), report.error)
    tables.write(spark.createDataFrame([row], RUNS_SCHEMA), RUNS_TABLE, mode="append")


# --- output: text or one JSON object a line --------------------------------------------------------------------

class Events:
    """The pipeline's own lines: text for people, or (`json_lines`) one JSON object a line for a log shipper,
    the stages' output then wrapped as `{"event": "log", "stage": ..., "message": ...}`."""

    def __init__(self, json_lines: bool, out=None) -> None:
        self.json_lines = json_lines
        self.out = out or sys.stdout

    def emit(self, event: str, text: str, **fields) -> None:
        if self.json_lines:
            ts = datetime.now(timezone.utc).isoformat(timespec="seconds")
            self.out.write(json.dumps({"ts": ts, "event": event, **fields}, default=str) + "\n")
        else:
            self.out.write(text + "\n")
        self.out.flush()

    @contextlib.contextmanager
    def stage_output(self, stage: str) -> Iterator[None]:
        if not self.json_lines:
            yield
            return
        events = self

        class Lines(io.TextIOBase):
            def __init__(self) -> None:
                self.buf = ""

            def write(self, s: str) -> int:
                self.buf += s
                while "\n" in self.buf:
                    line, self.buf = self.buf.split("\n", 1)
                    if line.strip():
                        events.emit("log", line, stage=stage, message=line)
                return len(s)

        lines = Lines()
        with contextlib.redirect_stdout(lines):
            yield
        if lines.buf.strip():
            self.emit("log", lines.buf, stage=stage, message=lines.buf)


# --- the runner ---------------------------------------------------------------------------------------------------

class PipelineLocked(PipelineError):
    """Another pipeline run holds this storage root's lock."""


LOCK_FILE = "_pipeline.lock"

# A test-only pause between stages: with this set to a folder, the runner writes `<folder>/<stage>.paused` before
# each stage it is about to run and waits for `<folder>/<stage>.resume`, so a test can copy the store as it was
# before that stage while one process (one JVM, warm from the stages before) runs them all. Unset in every real
# run.
STAGE_PAUSE_ENV = "CUSTOMER_VALUE_PAUSE_BEFORE_STAGES"


def pause_before_stage(stage: str, poll_s: float = 0.05, timeout_s: float = 3600.0) -> None:
    """Wait before `stage` while a test copies the store (`STAGE_PAUSE_ENV`); nothing when it is unset."""
    import os

    folder = os.environ.get(STAGE_PAUSE_ENV)
    if not folder:
        return
    write_marker(os.path.join(folder, f"{stage}.paused"), str(os.getpid()))
    resume = os.path.join(folder, f"{stage}.resume")
    deadline = time.monotonic() + timeout_s
    while not os.path.exists(resume):
        if time.monotonic() > deadline:
            raise PipelineError(f"stage {stage!r}: nobody resumed the run within {timeout_s:.0f} s ({resume})")
        time.sleep(poll_s)


def _alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:         # someone else's live process
        return True
    return True


@contextlib.contextmanager
def run_lock(cfg: Config, run: Run) -> Iterator[None]:
    """One pipeline run at a time per storage root: a second run started meanwhile stops at once with an error
    naming the holder, before it reads or writes anything. A lock left by a killed run (its process is gone) is
    taken over, so a rerun after a crash just works.

    Why a lock on top of Delta's own optimistic concurrency: Delta keeps every table consistent under concurrent
    writers (a conflicting commit fails, none is corrupt), but two runs of the same stage would still do the work
    twice and one of them fail half-way. The lock is an exclusive file create, atomic on local and POSIX-like
    shared file systems. On an object store (a root with `://`) there is no such create: there the scheduler
    serialises runs (the bundle's jobs have `max_concurrent_runs: 1`) and Delta's conflict checks are the backstop."""
    import os
    import socket

    root = cfg.storage.root
    if "://" in root:
        yield
        return
    path = os.path.join(os.path.abspath(root), "ops", LOCK_FILE)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    me = {"pid": os.getpid(), "host": socket.gethostname(), "run_id": run.run_id,
          "started": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                with open(path) as fh:
                    holder = json.load(fh)
            except (OSError, ValueError):
                holder = {}
            if holder.get("host") == me["host"] and isinstance(holder.get("pid"), int) and not _alive(holder["pid"]):
                os.unlink(path)                 # its run was killed: take over
                print(f"[pipeline] taking over the lock of run {holder.get('run_id', '?')} (pid {holder['pid']}, "
                      f"since {holder.get('started', '?')}): that process is gone", file=sys.stderr, flush=True)
                continue
            raise PipelineLocked(
                f"another pipeline run holds {path} (run {holder.get('run_id', '?')}, pid {holder.get('pid', '?')} "
                f"on {holder.get('host', '?')}, since {holder.get('started', '?')}): wait for it, or delete the file "
                "if no run is active") from None
        with os.fdopen(fd, "w") as fh:
            json.dump(me, fh)
        break
    try:
        yield
    finally:
        try:
            with open(path) as fh:
                if json.load(fh).get("run_id") == run.run_id:
                    os.unlink(path)
        except (OSError, ValueError):
            pass


def run_pipeline(spark: SparkSession, cfg: Config, run: Run, stages: Sequence[Stage], force: bool = False,
                 events: Events | None = None) -> list[StageReport]:
    """Run `stages` in order, skipping each whose fingerprint is committed (unless `force`); stop at the first
    failure (recorded, then raised as a PipelineError that names the stage, its inputs and outputs). One run at a
    time per storage root (`run_lock`)."""
    with run_lock(cfg, run):
        return _run_stages(spark, cfg, run, stages, force, events)


def _run_stages(spark: SparkSession, cfg: Config, run: Run, stages: Sequence[Stage], force: bool,
                events: Events | None) -> list[StageReport]:
    events = events or Events(False)
    tables = Tables(cfg.storage)
    reports: list[StageReport] = []
    for stage in stages:
        inputs, fp = _state(spark, cfg, tables, run, stage)
        if not force and _done(spark, cfg, tables, stage, fp):
            reports.append(StageReport(stage.name, "skipped", fingerprint=fp))
            events.emit("stage_skipped", f"== {stage.name}: skipped (committed for these inputs: {fp}) ==",
                        stage=stage.name, fingerprint=fp)
            continue
        pause_before_stage(stage.name)
        events.emit("stage_started", f"== {stage.name}: {stage.description} ==", stage=stage.name, fingerprint=fp,
                    inputs=inputs)
        started = datetime.now(timezone.utc).replace(tzinfo=None)
        t0 = time.perf_counter()
        try:
            with events.stage_output(stage.name):
                rows = stage.run(spark, cfg, run)
        except Exception as e:          # noqa: BLE001 - recorded and re-raised with the stage's context
            report = StageReport(stage.name, "failed", None, time.perf_counter() - t0, fp, f"{type(e).__name__}: {e}")
            reports.append(report)
            _record_quietly(spark, tables, run, report, started, inputs)
            where = (f"stage {stage.name!r} failed (inputs: {_describe(inputs) or 'none'}; "
                     f"outputs: {', '.join(stage.outputs)}): {report.error}")
            events.emit("stage_failed", f"== {where} ==", stage=stage.name, error=report.error, inputs=inputs,
                        outputs=list(stage.outputs))
            raise PipelineError(where) from e
        report = StageReport(stage.name, "ran", int(rows or 0), time.perf_counter() - t0, fp)
        record(spark, tables, run, report, started, inputs)
        reports.append(report)
        events.emit("stage_done", f"== {stage.name}: done, {report.rows:,} rows in {report.seconds:.1f} s ==",
                    stage=stage.name, rows=report.rows, seconds=round(report.seconds, 3))
    return reports


def _record_quietly(spark, tables, run, report, started, inputs) -> None:
    try:
        record(spark, tables, run, report, started, inputs)
    except Exception:                   # noqa: BLE001 - the stage's own error is the one to report
        pass


def _describe(inputs: dict[str, object]) -> str:
    return ", ".join(f"{k}@{v}" for k, v in inputs.items())


def summary_lines(reports: Sequence[StageReport]) -> list[str]:
    lines = [f"{'stage':<10}{'status':<10}{'rows':>12}{'seconds':>10}"]
    for r in reports:
        rows = f"{r.rows:,}" if r.rows is not None and r.status == "ran" else "-"
        lines.append(f"{r.stage:<10}{r.status:<10}{rows:>12}{r.seconds:>10.1f}")
    return lines


def default_snapshot(cfg: Config) -> date:
    """S when none is given: tomorrow of the shop's today (every event up to today is before S)."""
    return cfg.cleaning.today() + timedelta(days=1)
