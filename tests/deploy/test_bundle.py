"""The Databricks bundle validates offline, and the validation bites: a misspelt field deep in a job, an entry
point the wheel lacks, a configuration key that does not exist, an undeclared variable, a cycle, stages out of
the pipeline's order and an unknown stage each give one clear problem."""

from __future__ import annotations

import importlib.util
import shutil

import pytest
import yaml

from tests.conftest import ROOT

spec = importlib.util.spec_from_file_location("validate_bundle", ROOT / "deploy" / "validate_bundle.py")
vb = importlib.util.module_from_spec(spec)
spec.loader.exec_module(vb)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """This checkout's wheel, built once for the module (pip wheel takes seconds; every case reads the same)."""
    return vb.build_wheel(tmp_path_factory.mktemp("wheel"))


def test_the_bundle_validates_for_every_target():
    assert vb.validate() == []          # building its own wheel, as `make validate-bundle` does
    bundle = vb.load_bundle()
    assert set(bundle["targets"]) == {"dev", "prod"} and bundle["targets"]["dev"]["mode"] == "development"
    daily = bundle["resources"]["jobs"]["customer_value_daily"]
    assert vb.task_order("daily", daily["tasks"]) == ["ingest", "clean", "features", "score", "monitor"]
    assert "ml" in bundle["variables"]["spark_version"]["default"]


def edited(tmp_path, edit):
    """A copy of deploy/ with `edit(daily_job, weekly_job, bundle)` applied to its YAML."""
    deploy = tmp_path / "deploy"
    shutil.copytree(ROOT / "deploy", deploy, ignore=shutil.ignore_patterns("dist", "build"))
    daily_f, weekly_f = deploy / "resources" / "daily.yml", deploy / "resources" / "weekly_train.yml"
    daily, weekly = yaml.safe_load(daily_f.read_text()), yaml.safe_load(weekly_f.read_text())
    bundle = yaml.safe_load((deploy / "databricks.yml").read_text())
    edit(daily["resources"]["jobs"]["customer_value_daily"], weekly["resources"]["jobs"]["customer_value_weekly_train"],
         bundle)
    daily_f.write_text(yaml.safe_dump(daily))
    weekly_f.write_text(yaml.safe_dump(weekly))
    (deploy / "databricks.yml").write_text(yaml.safe_dump(bundle))
    return deploy


def task(job, key):
    return next(t for t in job["tasks"] if t["task_key"] == key)


def misspelt(daily, weekly, bundle):
    wt = task(daily, "score")["python_wheel_task"]
    wt["package_nam"] = wt.pop("package_name")


def entry_point(daily, weekly, bundle):
    task(weekly, "train")["python_wheel_task"]["entry_point"] = "customer_value"


def config_key(daily, weekly, bundle):
    task(daily, "clean")["python_wheel_task"]["parameters"][-2] = "storage.catalgo=x"


def config_value(daily, weekly, bundle):
    bundle["variables"]["horovod_ranks"]["default"] = -1
    bundle["targets"]["dev"]["variables"].pop("horovod_ranks")


def undeclared(daily, weekly, bundle):
    daily["job_clusters"][0]["new_cluster"]["num_workers"] = "${var.worker_count}"


def cycle(daily, weekly, bundle):
    task(daily, "ingest")["depends_on"] = [{"task_key": "monitor"}]


def order(daily, weekly, bundle):
    task(daily, "score")["depends_on"] = []
    task(daily, "features")["depends_on"] = [{"task_key": "score"}]
    task(daily, "monitor")["depends_on"] = [{"task_key": "features"}]


def unknown_stage(daily, weekly, bundle):
    params = task(daily, "monitor")["python_wheel_task"]["parameters"]
    params[params.index("--only") + 1] = "monitoring"


def bad_flag(daily, weekly, bundle):
    task(daily, "ingest")["python_wheel_task"]["parameters"].append("--resume")


@pytest.mark.parametrize("edit, expected", [
    (misspelt, "Unexpected field 'package_nam'"),
    (entry_point, "entry point 'customer_value' not in the wheel"),
    (config_key, "storage.catalgo"),
    (config_value, "num_proc"),
    (undeclared, "${var.worker_count} is used but not declared"),
    (cycle, "tasks form a cycle"),
    (order, "stages run in the order ['ingest', 'clean', 'score', 'features', 'monitor']"),
    (unknown_stage, "--only 'monitoring' is not a pipeline stage"),
    (bad_flag, "No such option: --resume"),
])
def test_each_kind_of_mistake_is_reported(tmp_path, wheel, edit, expected):
    problems = vb.validate(edited(tmp_path, edit), wheel)
    assert problems and any(expected in p for p in problems), problems
