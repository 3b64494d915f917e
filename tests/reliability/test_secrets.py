"""Secrets: the pseudonymisation key comes only from the environment (or a Databricks secret scope); a key in
conf/ or on the command line is refused without being echoed; and nothing a run writes or prints (logs, errors,
tables outside the raw layers, MLflow, reports) holds the key or a raw customer id."""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from deltalake import DeltaTable

from customer_value.config import SecretInConfigError, load_config
from tests.conftest import ROOT
from tests.reference import KEY
RAW_LAYERS = ("landing", "bronze", "quarantine", "synthetic")     # raw exports and their typed copies: ids by design
RAW_ID = re.compile(r"\bu\d{7,8}\b")


@pytest.fixture()
def key_in_env(monkeypatch):
    monkeypatch.setenv("CUSTOMER_VALUE_ID_KEY", KEY)


@pytest.mark.parametrize("override", ["pseudonymisation.key=abcdefghijklmnopqrstuvwxyz",
                                      "pseudonymisation.id_key=abcdefghijklmnopqrstuvwxyz",
                                      "training.tracking_token=abcdef", "storage.password=hunter22"])
def test_a_secret_on_the_command_line_is_refused_and_not_echoed(override):
    with pytest.raises(SecretInConfigError) as err:
        load_config(ROOT / "conf" / "local.yaml", [override])
    assert override.split("=", 1)[1] not in str(err.value)
    assert override.split("=", 1)[0] in str(err.value), "the message names the setting"


def test_a_secret_in_a_conf_file_is_refused(tmp_path):
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "base.yaml").write_text((ROOT / "conf" / "base.yaml").read_text())
    (conf / "mine.yaml").write_text("pseudonymisation:\n  key: abcdefghijklmnopqrstuvwxyz0123\n")
    with pytest.raises(SecretInConfigError, match=r"pseudonymisation\.key \(.*mine\.yaml\)") as err:
        load_config(conf / "mine.yaml")
    assert "abcdefghijklmnopqrstuvwxyz0123" not in str(err.value)


def test_the_key_itself_anywhere_in_the_configuration_is_refused(key_in_env, tmp_path):
    with pytest.raises(SecretInConfigError, match="storage.root") as err:
        load_config(ROOT / "conf" / "local.yaml", [f"storage.root={tmp_path}/{KEY}"])
    assert KEY not in str(err.value)
    load_config(ROOT / "conf" / "local.yaml", ["pseudonymisation.key_env=CUSTOMER_VALUE_ID_KEY",
                                               "pseudonymisation.secret_key=id-key"])   # where it is: fine


def test_the_cli_refuses_a_key_in_one_line_without_echoing_it():
    value = "abcdefghijklmnopqrstuvwxyz-" + secrets.token_hex(4)
    proc = subprocess.run([sys.executable, "-m", "customer_value.cli", "clean", "--conf", "conf/local.yaml",
                           "--set", f"pseudonymisation.key={value}"], cwd=ROOT, capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and value not in out and "Traceback" not in out, out
    assert "pseudonymisation.key" in out and len(out.strip().splitlines()) == 1, out


def _strings(frame: pd.DataFrame) -> list[str]:
    out = []
    for column in frame.columns:
        values = frame[column].dropna()
        if len(values) and not pd.api.types.is_datetime64_any_dtype(values):
            out += values.astype(str).tolist()
    return out


@pytest.mark.slow
def test_no_output_of_a_run_holds_the_key_or_a_raw_customer_id(reference):
    """A shop taken through every stage by the CLI (ingest to monitor, a small model trained with Horovod and
    tracked in MLflow) with a real key in the environment (the reliability tests' shared clean run); then every
    log line, every file (the MLflow store and its artifacts, the model, the reports), every Delta table and
    every MLflow param, tag and metric name is scanned."""
    root = reference / "store"
    logs = (reference / "logs.txt").read_text()
    raw_ids = set(DeltaTable(str(root / "bronze" / "users")).to_pandas()["user_id"])
    assert len(raw_ids) > 500

    assert KEY not in logs
    assert not RAW_ID.search(logs) and not any(i in logs for i in raw_ids), "a raw customer id in the logs"
    _scan_mlflow(root, raw_ids)
    tables = sorted(p.parent for p in root.rglob("_delta_log"))
    assert {"silver", "gold", "ops", "bronze"} <= {t.parent.name for t in tables}
    for table in tables:
        text = _strings(DeltaTable(str(table)).to_pandas())
        assert not any(KEY in t for t in text), table
        if table.relative_to(root).parts[0] not in RAW_LAYERS:
            assert not any(RAW_ID.search(t) for t in text), f"a raw customer id in {table}"
    for f in root.rglob("*"):
        if f.is_file() and f.suffix != ".parquet":
            data = f.read_bytes()
            assert KEY.encode() not in data, f
            if f.relative_to(root).parts[0] not in RAW_LAYERS:
                assert not RAW_ID.search(data.decode("latin-1")), f"a raw customer id in {f}"


def _scan_mlflow(root: Path, raw_ids: set[str]) -> None:
    """Every run's params, tags and metric names, and every registered version's tags, in the run's own tracking
    store (its artifacts are files under the store: the file scan covers them)."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{root.resolve()}/mlflow/mlflow.db"
    client = MlflowClient(uri, uri)
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    assert runs, "the scanned run trained and tracked a model"
    text = []
    for run in runs:
        text += [f"{k}={v}" for k, v in {**run.data.params, **run.data.tags}.items()] + list(run.data.metrics)
    for version in client.search_model_versions("name = 'customer_value'"):
        text += [f"{k}={v}" for k, v in version.tags.items()] + [version.source or ""]
    assert len(text) > 20, text
    blob = "\n".join(text)
    assert KEY not in blob, "the key in an MLflow param or tag"
    assert not RAW_ID.search(blob) and not any(i in blob for i in raw_ids), "a raw customer id in MLflow"
