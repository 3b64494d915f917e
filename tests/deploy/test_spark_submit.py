"""deploy/spark-submit.sh as a platform engineer runs it: every command resolves to a job file that runs that
command, a bad stage name gets one clear line, YARN and Kubernetes command lines carry the wheel or image and
the Delta jars, and one stage runs end to end through the wrapper on local Spark."""

from __future__ import annotations

import os
import re
import shlex
import subprocess

import pytest
import typer.main

from customer_value.cli import app
from tests.conftest import ROOT

WRAPPER = str(ROOT / "deploy" / "spark-submit.sh")


def commands() -> list[str]:
    return sorted(typer.main.get_command(app).commands)


def wrapper(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([WRAPPER, *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, **(env or {})})


@pytest.mark.parametrize("stage", commands())
def test_every_command_resolves_to_a_job_file_that_runs_it(stage):
    proc = wrapper("--job-path", stage)
    assert proc.returncode == 0, proc.stderr
    job = proc.stdout.strip()
    assert os.path.isfile(job)
    assert re.search(rf'run_job\("{re.escape(stage)}"\)', open(job).read()), job


def test_an_unknown_stage_gets_one_clear_line():
    proc = wrapper("scroe")
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("deploy/spark-submit.sh: no stage 'scroe'; stages: pipeline")


def test_yarn_ships_the_wheel_the_jars_and_the_packed_python():
    proc = wrapper("score", "--master", "yarn", "--dry-run", "--", "--conf", "conf/cluster.yaml",
                   env={"PYTHON_ARCHIVE": "hdfs:///envs/customer-value.tar.gz"})
    assert proc.returncode == 0, proc.stderr
    cmd = shlex.split(proc.stdout)
    flag = lambda name: cmd[cmd.index(name) + 1]  # noqa: E731
    assert flag("--master") == "yarn" and flag("--deploy-mode") == "cluster" and flag("--name") == "customer-value-score"
    assert re.fullmatch(r"\S*/delta-spark_2\.12-[\d.]+\.jar,\S*/delta-storage-[\d.]+\.jar", flag("--jars"))
    assert re.fullmatch(r"\S*/customer_value-[\d.]+-py3-none-any\.whl", flag("--py-files"))
    assert os.path.isfile(flag("--py-files"))
    assert flag("--archives") == "hdfs:///envs/customer-value.tar.gz#environment"
    assert "spark.executorEnv.PYSPARK_PYTHON=./environment/bin/python" in cmd
    assert cmd[-3:] == [str(ROOT / "jobs" / "score.py"), "--conf", "conf/cluster.yaml"]


def test_kubernetes_runs_everything_from_the_image():
    proc = wrapper("pipeline", "--master", "k8s://https://k8s.example.com:443", "--dry-run", "--",
                   "--conf", "conf/cluster.yaml", env={"IMAGE": "registry.example.com/customer-value:0.1.0"})
    assert proc.returncode == 0, proc.stderr
    cmd = shlex.split(proc.stdout)
    assert cmd[cmd.index("--deploy-mode") + 1] == "cluster"
    assert "spark.kubernetes.container.image=registry.example.com/customer-value:0.1.0" in cmd
    assert cmd[cmd.index("--jars") + 1] == ("local:///opt/customer-value/jars/delta-spark_2.12.jar,"
                                            "local:///opt/customer-value/jars/delta-storage.jar")
    assert cmd[-3:] == ["local:///opt/customer-value/jobs/pipeline.py", "--conf", "conf/cluster.yaml"]
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    for path in ("/opt/customer-value/jars/delta-spark_2.12.jar", "/opt/customer-value/jars/delta-storage.jar",
                 "/opt/customer-value/jobs", "/opt/customer-value/venv"):
        assert path in dockerfile, path
    missing = wrapper("pipeline", "--master", "k8s://https://k8s.example.com:443", "--dry-run",
                      env={"IMAGE": ""})
    assert missing.returncode != 0 and "IMAGE" in missing.stderr


@pytest.mark.slow          # two spark-submit JVMs and a wheel build: the slow tier (make test-all)
def test_a_stage_runs_end_to_end_through_the_wrapper_on_local_spark(tmp_path):
    """generate then ingest, each a spark-submit of its job file: the Delta jars and the wheel as a cluster
    gets them; the bronze tables are real Delta tables afterwards."""
    from deltalake import DeltaTable

    root = tmp_path / "tables"
    args = ["--conf", "conf/local.yaml", "--set", f"storage.root={root}", "--set", "synthetic.customers=150",
            "--set", "synthetic.customers_per_file=75"]
    gen = wrapper("generate", "--master", "local[2]", "--", *args)
    assert gen.returncode == 0, gen.stdout[-2000:] + gen.stderr[-3000:]
    ing = wrapper("ingest", "--master", "local[2]", "--", *args)
    assert ing.returncode == 0, ing.stdout[-2000:] + ing.stderr[-3000:]
    assert "[ingest] batch" in ing.stdout
    orders = DeltaTable(str(root / "bronze" / "orders")).to_pandas()
    assert len(orders) > 100
