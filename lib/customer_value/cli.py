"""`customer-value <stage>`: the one command line of the platform. Job files in jobs/ call into it.

Every stage takes `--conf <overlay.yaml>` (base.yaml from the same folder is loaded under it) and any number of
`--set key.path=value` overrides, so `spark-submit jobs/<stage>.py --conf conf/cluster.yaml`,
`python jobs/<stage>.py` and `customer-value <stage>` all mean the same.
"""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path
from typing import List, Optional

import typer
from typing_extensions import Annotated

from customer_value.config import Config, load_config

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__, pretty_exceptions_show_locals=False)

ConfOption = Annotated[Path, typer.Option("--conf", help="Environment overlay, e.g. conf/local.yaml.")]
SetOption = Annotated[
    Optional[List[str]], typer.Option("--set", help="Override a setting: --set spark.master=local[4]")
]
DEFAULT_CONF = Path("conf/local.yaml")


def _config(conf: Path, overrides: Optional[List[str]]) -> Config:
    return load_config(conf, overrides or [])


@app.command()
def smoke(
    conf: ConfOption = DEFAULT_CONF,
    overrides: SetOption = None,
    work_dir: Annotated[Optional[str], typer.Option(help="Scratch folder for training data and model.")] = None,
) -> None:
    """Run the stack end to end once: Delta, delta-rs, Petastorm, Horovod, mapInPandas scoring."""
    from customer_value import smoke as smoke_pipeline
    from customer_value.spark import spark_session

    cfg = _config(conf, overrides)
    with spark_session(cfg) as spark:
        result = smoke_pipeline.run(spark, cfg, work_dir=work_dir)
    typer.echo("\nsmoke pipeline passed; tables:")
    for name, location in result.tables.items():
        typer.echo(f"  {name:<24} {location}")
    typer.echo(f"  {'model':<24} {result.model_path}")


@app.command()
def generate(
    conf: ConfOption = DEFAULT_CONF,
    overrides: SetOption = None,
    customers: Annotated[Optional[int], typer.Option(help="Number of customers (default: synthetic.customers).")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Random seed (default: synthetic.seed).")] = None,
) -> None:
    """Generate a synthetic shop: raw exports with planted faults in the landing folder, ground truth in Delta."""
    from customer_value.spark import spark_session
    from customer_value.synthetic.generate import generate as run_generate

    extra = [f"synthetic.customers={customers}"] if customers else []
    extra += [f"synthetic.seed={seed}"] if seed is not None else []
    cfg = _config(conf, [*(overrides or []), *extra])
    with spark_session(cfg) as spark:
        result = run_generate(spark, cfg)
    typer.echo(f"\ngenerated {cfg.synthetic.customers} customers, {result.rows} rows in {result.seconds:.1f} s "
               f"({result.rows / result.seconds:,.0f} rows/s) into {result.landing}")
    for source, s in result.manifest["summary"].items():
        planted = ", ".join(f"{k} {v}" for k, v in sorted(s["faults"].items())) or "none"
        typer.echo(f"  {source:<12} {s['rows']:>10,} rows in {s['files']} files; planted: {planted}")


@app.command("adapt-transactions")
def adapt_transactions(
    input_path: Annotated[Optional[str], typer.Option("--input", help="Transactions file (default: transactions.path).")] = None,
    conf: ConfOption = DEFAULT_CONF,
    overrides: SetOption = None,
) -> None:
    """Map a plain transactions file onto the landing layout (users, orders, order_items), per conf's mapping."""
    from customer_value.adapters.transactions import adapt, write_landing
    from customer_value.landing import landing_uri
    from customer_value.spark import spark_session

    cfg = _config(conf, overrides)
    path = input_path or cfg.transactions.path
    if not path:
        raise typer.BadParameter("no transactions file: pass --input or set transactions.path")
    landing = landing_uri(cfg)
    with spark_session(cfg) as spark:
        counts = write_landing(adapt(spark, path, cfg.transactions), landing)
    typer.echo(f"mapped {path} into {landing}: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()))


@app.command()
def ingest(conf: ConfOption = DEFAULT_CONF, overrides: SetOption = None) -> None:
    """Ingest new landing files into bronze and quarantine Delta tables (incremental, rerun-safe)."""
    from customer_value.ingest.run import ingest as run_ingest
    from customer_value.spark import spark_session

    cfg = _config(conf, overrides)
    with spark_session(cfg) as spark:
        run_ingest(spark, cfg)


@app.command("clean")
def clean_cmd(conf: ConfOption = DEFAULT_CONF, overrides: SetOption = None,
              full: Annotated[bool, typer.Option("--full", help="Recompute silver from all of bronze instead of "
                                                 "merging only the batches it has not seen.")] = False) -> None:
    """Clean bronze into silver (pseudonymised), with data-quality metrics and thresholds. By default only the
    bronze batches silver has not seen are merged (cleaning.incremental)."""
    from customer_value.cleaning.run import clean_all
    from customer_value.spark import spark_session

    cfg = _config(conf, overrides)
    with spark_session(cfg) as spark:
        clean_all(spark, cfg, full=full)


StageOption = Annotated[Optional[str], typer.Option(
    "--from", help="Start at this stage (generate, ingest, clean, features, train, score, monitor); earlier ones "
                   "are not run.")]
OnlyOption = Annotated[Optional[str], typer.Option("--only", help="Run this one stage.")]


@app.command()
def pipeline(
    conf: ConfOption = DEFAULT_CONF,
    overrides: SetOption = None,
    snapshot_date: Annotated[Optional[datetime], typer.Option(
        formats=["%Y-%m-%d"], help="Snapshot S (default: tomorrow of cleaning.as_of or today: all data up to "
                                   "today).")] = None,
    start: StageOption = None,
    only: OnlyOption = None,
    force: Annotated[bool, typer.Option("--force", help="Run the selected stages even where committed.")] = False,
    with_generate: Annotated[bool, typer.Option("--generate/--no-generate", help="Generate a synthetic shop first.")] = False,
    log_json: Annotated[bool, typer.Option("--log-json", help="One JSON object a line (the stages' output "
                                                              "wrapped as log events).")] = False,
) -> None:
    """Run the stages in order in one Spark session: [generate] -> ingest -> clean -> features -> train (when
    due) -> score -> monitor, skipping each whose inputs and settings are unchanged since it last committed.

    Features are computed for features.history_snapshots snapshots ending at S, with labels and the training set
    for those whose horizon has passed; the latest model scores S. A rerun after a failure resumes at the stage
    that failed. Each stage's run is recorded in ops.pipeline_runs. The monitor's verdict is printed; only
    `customer-value monitor` turns it into an exit code."""
    from customer_value import pipeline as pl
    from customer_value.scoring.run import scores_report
    from customer_value.spark import spark_session
    from customer_value.tables import Tables

    cfg = _config(conf, overrides)
    try:
        stages = pl.select(pl.STAGES, start, only, with_generate)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    run = pl.Run(snapshot_date.date() if snapshot_date else pl.default_snapshot(cfg))
    events = pl.Events(log_json)
    events.emit("pipeline_started", f"pipeline {run.run_id}: snapshot {run.snapshot}, stages "
                + " -> ".join(s.name for s in stages), run_id=run.run_id, snapshot=run.snapshot,
                stages=[s.name for s in stages])
    with spark_session(cfg) as spark:
        try:
            reports = pl.run_pipeline(spark, cfg, run, stages, force, events)
        except pl.PipelineError as e:
            events.emit("pipeline_failed", f"pipeline {run.run_id} failed: {e}\nrerun the same command to resume "
                        "at the failed stage", run_id=run.run_id, error=str(e))
            raise typer.Exit(1) from None
        scores = scores_report(spark, cfg, run.snapshot) if not log_json else None
    tables = Tables(cfg.storage)
    events.emit("pipeline_done", "\n" + "\n".join(pl.summary_lines(reports)), run_id=run.run_id,
                stages=[{"stage": r.stage, "status": r.status, "rows": r.rows, "seconds": round(r.seconds, 3)}
                        for r in reports])
    if scores is not None:
        print_scores(scores, heading=f"\ncustomer scores at {scores.snapshot} ({scores.model}):")
    if not log_json:
        typer.echo("\ntables:")
        for name in tables.names(["bronze", "quarantine", "silver", "gold", "ops"]):
            typer.echo(f"  {name:<24} {tables.location(name)}")


@app.command()
def features(
    conf: ConfOption = DEFAULT_CONF,
    overrides: SetOption = None,
    snapshot_date: Annotated[Optional[datetime], typer.Option(formats=["%Y-%m-%d"], help="Snapshot S (default: tomorrow, i.e. all data up to today).")] = None,
    history: Annotated[int, typer.Option(help="Snapshots to compute, features.snapshot_step_days apart, ending at S.")] = 1,
) -> None:
    """Point-in-time features (gold.customer_features) and, where the horizon has passed, labels and training set."""
    from customer_value.features.run import run_features
    from customer_value.spark import spark_session

    cfg = _config(conf, overrides)
    with spark_session(cfg) as spark:
        run_features(spark, cfg, snapshot_date.date() if snapshot_date else None, history)


SnapshotOption = Annotated[Optional[datetime], typer.Option(
    formats=["%Y-%m-%d"], help="Snapshot S (default: the latest whose horizon has passed).")]
HorizonOption = Annotated[Optional[int], typer.Option(help="Horizon H in days (default: features.horizon_days).")]


ModelOption = Annotated[Optional[str], typer.Option(
    "--model", help="A registered model to backtest beside the baselines: NAME/VERSION, NAME/champion or "
                    "NAME/latest.")]


@app.command()
def backtest(conf: ConfOption = DEFAULT_CONF, overrides: SetOption = None, snapshot_date: SnapshotOption = None,
             horizon_days: HorizonOption = None, model: ModelOption = None) -> None:
    """Fit the baselines on snapshots before S, score customers at S, compare with [S, S + H): predictions,
    metrics and an HTML report; with --model, a registered model beside them (refused if it learned from S on)."""
    from customer_value.evaluation.backtest import run_backtest
    from customer_value.models.deep import DeepModel
    from customer_value.spark import spark_session

    cfg = _config(conf, overrides)
    extra = [DeepModel.load(cfg, model)] if model else []
    with spark_session(cfg) as spark:
        result = run_backtest(spark, cfg, snapshot_date.date() if snapshot_date else None, horizon_days, extra)
    typer.echo(f"report: {result.report_dir}/report.html")


@app.command()
def train(conf: ConfOption = DEFAULT_CONF, overrides: SetOption = None, snapshot_date: SnapshotOption = None,
          horizon_days: HorizonOption = None) -> None:
    """Train the product's model (Petastorm -> Horovod -> Keras) on snapshots before S, backtest it at S beside
    the baselines and the serving champion, write models/<name>/<version>/, register it in MLflow and make it
    the champion only if it is at least as good (conf: promotion.rules), else the challenger."""
    from customer_value.spark import spark_session

    cfg = _config(conf, overrides)
    with spark_session(cfg) as spark:
        deep = train_and_register(spark, cfg, snapshot_date.date() if snapshot_date else None, horizon_days)
    typer.echo(f"model {deep.version}: {deep.registered.path}")


def train_and_register(spark, cfg: Config, snapshot=None, horizon_days=None):
    from customer_value.models.deep import train_and_backtest

    deep, result = train_and_backtest(spark, cfg, snapshot, horizon_days)
    typer.echo(f"report: {result.report_dir}/report.html")
    return deep


@app.command()
def score(conf: ConfOption = DEFAULT_CONF, overrides: SetOption = None,
          snapshot_date: Annotated[Optional[datetime], typer.Option(
              formats=["%Y-%m-%d"], help="Snapshot S (default: the latest in gold.customer_features).")] = None,
          model: Annotated[str, typer.Option("--model", help="NAME/VERSION, NAME/champion, NAME/challenger or "
                                                             "NAME/latest (default: training.model_name/champion, "
                                                             "the version the train stage promoted).")] = "") -> None:
    """Score every customer of S into gold.customer_scores: expected spend and interval, churn, value score,
    tier, segment, top reasons and action; gold.segment_summary and the view gold.customer_scores_named."""
    from customer_value.scoring.run import score_snapshot
    from customer_value.spark import spark_session

    cfg = _config(conf, overrides)
    with spark_session(cfg) as spark:
        result = score_snapshot(spark, cfg, snapshot_date.date() if snapshot_date else None, model or None)
    print_scores(result)


def print_scores(result, heading: str | None = None) -> None:
    typer.echo(heading or f"\nscored {result.customers:,} customers at {result.snapshot} with {result.model} "
                          f"in {result.seconds:.1f} s")
    typer.echo("tiers: " + ", ".join(f"{t} {result.tiers.get(t, 0):,}" for t in ("high", "mid", "low")))
    typer.echo(f"{'segment':<26}{'customers':>10}{'value':>7}{'churn':>7}{'spend share':>12}  top action")
    for r in result.summary:
        typer.echo(f"{(r['segment_name'] or str(r['segment'])):<26}{r['customers']:>10,}{r['mean_value_score']:>7.2f}"
                   f"{r['churn_rate']:>7.2f}{r['spend_share']:>12.1%}  {(r['top_actions'] or [''])[0]}")
    for name, location in result.tables.items():
        typer.echo(f"  {name:<24} {location}")


@app.command()
def monitor(conf: ConfOption = DEFAULT_CONF, overrides: SetOption = None,
            snapshot_date: Annotated[Optional[datetime], typer.Option(
                formats=["%Y-%m-%d"], help="Scored snapshot S (default: the latest in gold.customer_scores).")] = None,
            ) -> None:
    """Population stability of S's features and scores against the model's training snapshot -> gold.drift.
    Exit code monitor.retrain_exit_code (default 3) when the verdict is retrain, 0 otherwise."""
    from customer_value.scoring.run import monitor as run_monitor
    from customer_value.spark import spark_session

    cfg = _config(conf, overrides)
    with spark_session(cfg) as spark:
        result = run_monitor(spark, cfg, snapshot_date.date() if snapshot_date else None)
    print_monitor(result)
    if result.verdict == "retrain":
        raise typer.Exit(cfg.monitor.retrain_exit_code)


def print_monitor(result) -> None:
    for r in result.rows[:10]:
        typer.echo(f"  {r['column']:<28} PSI {r['psi']:.3f}  {r['status']}")
    outside = sorted(((r["outside_training_range"], r["column"]) for r in result.rows
                      if r.get("outside_training_range")), reverse=True)
    if outside:
        typer.echo("outside the model's training range (customers, clipped to it when scored): "
                   + ", ".join(f"{c} {n:,}" for n, c in outside[:8]) + (" ..." if len(outside) > 8 else ""))
    counts = {s: sum(r["status"] == s for r in result.rows) for s in ("retrain", "watch", "stable")}
    typer.echo(f"plot: {result.plot}")
    # the one line a scheduler branches on (with the exit code)
    typer.echo(f"monitor verdict: {result.verdict} snapshot={result.snapshot} model={result.model} "
               + " ".join(f"{k}={v}" for k, v in counts.items()))


@app.command()
def evaluate(conf: ConfOption = DEFAULT_CONF, overrides: SetOption = None, snapshot_date: SnapshotOption = None,
             horizon_days: HorizonOption = None) -> None:
    """Rebuild the report and gold.model_metrics from gold.backtest_predictions of (S, H)."""
    from customer_value.evaluation.backtest import evaluate_backtest, snapshot_and_horizon
    from customer_value.spark import spark_session

    cfg = _config(conf, overrides)
    snapshot, horizon = snapshot_and_horizon(cfg, snapshot_date.date() if snapshot_date else None, horizon_days)
    with spark_session(cfg) as spark:
        result = evaluate_backtest(spark, cfg, snapshot, horizon)
    typer.echo(f"report: {result.report_dir}/report.html")


@app.command("feature-catalogue")
def feature_catalogue(conf: ConfOption = DEFAULT_CONF, overrides: SetOption = None) -> None:
    """Print docs/features.md: every feature with its group, window and meaning."""
    from customer_value.features.catalogue import markdown

    typer.echo(markdown(_config(conf, overrides).features), nl=False)


@app.command("show-config")
def show_config(conf: ConfOption = DEFAULT_CONF, overrides: SetOption = None) -> None:
    """Print the validated configuration, after overlay and overrides."""
    typer.echo(_config(conf, overrides).model_dump_json(indent=2))


def _user_errors() -> tuple[type[BaseException], ...]:
    """Mistakes in what the user gave (configuration, flags, missing inputs, refused runs): one line, no
    traceback. Anything else is a bug and keeps its traceback."""
    from customer_value.adapters.transactions import TransactionsFileError
    from customer_value.cleaning.pseudonymise import MissingKeyError
    from customer_value.cleaning.quality import DataQualityError
    from customer_value.config import ConfigError
    from customer_value.evaluation.backtest import BacktestError
    from customer_value.models.deep import LeakError
    from customer_value.models.registry import ModelNotFound
    from customer_value.notebooks import NotebookFailed
    from customer_value.pipeline import PipelineError
    from customer_value.scoring.run import ScoringError
    from customer_value.spark import SparkSetupError
    from customer_value.tables import UnknownTableError

    return (ConfigError, BacktestError, LeakError, ModelNotFound, ScoringError, PipelineError, SparkSetupError,
            UnknownTableError, DataQualityError, MissingKeyError, NotebookFailed, TransactionsFileError)


def main(argv: Optional[List[str]] = None) -> None:
    """The console script. Exit codes: 0 done, 1 a stage or input failed, 2 a usage or configuration mistake,
    `monitor.retrain_exit_code` (3) a retrain verdict from `monitor`. CUSTOMER_VALUE_DEBUG=1 shows tracebacks."""
    import os

    import click

    # TensorFlow's C++ start-up lines (CUDA factories, TensorRT) on a CPU box are noise; set it to 0 to see them.
    # Before Spark starts: its Python workers inherit it.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")   # MLflow's database set-up lines on first use
    args = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in args if not a.startswith("-")), "")
    prog = f"customer-value {command}".strip()
    debug = os.environ.get("CUSTOMER_VALUE_DEBUG") == "1"
    try:
        # outside standalone mode click returns a typer.Exit's code instead of exiting: pass it on (monitor's
        # retrain code, the pipeline's 1)
        code = app(args=args, prog_name="customer-value", standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        sys.exit(1)
    except click.ClickException as e:        # a bad flag, value or command
        import typer.main

        if command not in typer.main.get_command(app).commands:
            prog = "customer-value"
        print(f"{prog}: {e.format_message()} (see `{prog} --help`)", file=sys.stderr)
        sys.exit(e.exit_code)
    except _user_errors() as e:
        if debug:
            raise
        from customer_value.config import ConfigError

        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"{prog}: {type(e).__name__}: {first}", file=sys.stderr)
        sys.exit(2 if isinstance(e, ConfigError) else 1)


def run_job(stage: str) -> None:
    """Entry for jobs/<stage>.py: the stage's command with this process's arguments."""
    main([stage, *sys.argv[1:]])


if __name__ == "__main__":
    main()
