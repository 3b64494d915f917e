"""The command line and job files, as a user runs them (separate processes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

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


def test_bad_override_fails_with_a_clear_message():
    proc = _run(sys.executable, "-m", "customer_value.cli", "show-config", "--set", "training.num_proc=-1")
    assert proc.returncode != 0
    assert "num_proc" in proc.stderr
