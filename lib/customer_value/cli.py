"""`customer-value <stage>`: the one command line of the platform. Job files in jobs/ call into it.

Every stage takes `--conf <overlay.yaml>` (base.yaml from the same folder is loaded under it) and any number of
`--set key.path=value` overrides, so `spark-submit jobs/<stage>.py --conf conf/cluster.yaml`,
`python jobs/<stage>.py` and `customer-value <stage>` all mean the same.
"""

from __future__ import annotations

import sys
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
        typer.echo(f"  {name:<18} {location}")
    typer.echo(f"  model              {result.model_path}")


@app.command("show-config")
def show_config(conf: ConfOption = DEFAULT_CONF, overrides: SetOption = None) -> None:
    """Print the validated configuration, after overlay and overrides."""
    typer.echo(_config(conf, overrides).model_dump_json(indent=2))


def main(argv: Optional[List[str]] = None) -> None:
    app(args=argv, prog_name="customer-value")


def run_job(stage: str) -> None:
    """Entry for jobs/<stage>.py: the stage's command with this process's arguments."""
    main([stage, *sys.argv[1:]])


if __name__ == "__main__":
    main()
