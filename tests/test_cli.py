"""The command line and job files, as a user runs them (separate processes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, env=dict(os.environ))


def test_console_script_and_job_file_print_the_same_config():
    via_cli = _run(sys.executable, "-m", "customer_value.cli", "show-config", "--conf", "conf/databricks.yaml")
    assert via_cli.returncode == 0, via_cli.stderr
    assert json.loads(via_cli.stdout)["storage"]["catalog"] == "customer_value"


def test_job_file_runs_from_a_source_checkout_and_shows_its_options():
    proc = _run(sys.executable, "jobs/smoke.py", "--help")
    assert proc.returncode == 0, proc.stderr
    assert "--conf" in proc.stdout and "--set" in proc.stdout


def test_exit_codes_of_typer_exit_pass_through(tmp_path):
    """A command's own exit code (monitor's retrain code, the pipeline's failure) reaches the shell."""
    proc = _run(sys.executable, "-m", "customer_value.cli", "pipeline", "--only", "features", "--set",
                f"storage.root={tmp_path}", "--set", "spark.master=local[1]")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "stage 'features' failed" in proc.stdout


def test_bad_override_fails_with_a_clear_message():
    proc = _run(sys.executable, "-m", "customer_value.cli", "show-config", "--set", "training.num_proc=-1")
    assert proc.returncode != 0
    assert "num_proc" in proc.stderr


def test_every_command_documents_every_flag():
    """`--help` of each command lists each of its options with a help text (click's own rendering)."""
    import typer.main

    from customer_value.cli import app

    group = typer.main.get_command(app)
    for name, command in group.commands.items():
        assert command.help, f"{name} has no description"
        proc = _run(sys.executable, "-m", "customer_value.cli", name, "--help")
        assert proc.returncode == 0, proc.stderr
        for param in command.params:
            if param.param_type_name != "option" or param.name == "help":
                continue
            assert param.help, f"{name} {param.opts[0]}: no help text"
            assert param.opts[0] in proc.stdout, f"{name} --help does not show {param.opts[0]}"


MISTAKES = [
    # (arguments, exit code, what the one line must say)
    (["score", "--bogus"], 2, "customer-value score: No such option: --bogus"),
    (["score", "--snapshot-date", "2026-13-01"], 2, "does not match the format '%Y-%m-%d'"),
    (["scroe"], 2, "customer-value: No such command 'scroe'"),
    (["pipeline", "--from", "scroe"], 2, "--from 'scroe': not a stage"),
    (["pipeline", "--from", "clean", "--only", "score"], 2, "--from and --only exclude each other"),
    (["show-config", "--set", "training.num_proc=-1"], 2, "training.num_proc: Input should be greater than or equal to 1 (got -1)"),
    (["show-config", "--set", "training.nmu_proc=2"], 2, "training.nmu_proc: unknown setting"),
    (["show-config", "--set", "training.num_proc"], 2, "override 'training.num_proc' is not key=value"),
    (["show-config", "--conf", "conf/nope.yaml"], 2, "configuration file not found: conf/nope.yaml"),
]


@pytest.mark.parametrize("args, code, says", MISTAKES, ids=[" ".join(m[0]) for m in MISTAKES])
def test_a_mistake_gets_one_clear_line(args, code, says):
    proc = _run(sys.executable, "-m", "customer_value.cli", *args)
    assert proc.returncode == code, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_missing_input_names_what_to_run_first(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}     # this root's own registry
    proc = subprocess.run([sys.executable, "-m", "customer_value.cli", "score", "--set", f"storage.root={tmp_path}"],
                          cwd=ROOT, capture_output=True, text=True, env=env)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "ModelNotFound" in lines[0] and "run `customer-value train` first" in lines[0], proc.stderr
