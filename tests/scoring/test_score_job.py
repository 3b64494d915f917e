"""The score and monitor jobs end to end on real Spark, Delta and the MLflow registry, with a registered model of
known weights (`handmade`): known scores, reasons and tiers through the UDF; a rerun replaces; drift and the
monitor's exit code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date

import numpy as np
import pytest
from deltalake import DeltaTable
from pyspark.sql import functions as F

from customer_value.config import load_config
from customer_value.models import registry
from customer_value.scoring.run import monitor, score_snapshot
from customer_value.tables import Tables
from tests.conftest import ROOT
from tests.scoring import handmade

REF, S, SHIFTED = date(2025, 1, 1), date(2025, 4, 1), date(2025, 7, 1)
N = 300


def raw_features(seed: int, spend_factor: float = 1.0):
    rng = np.random.default_rng(seed)
    spend = rng.lognormal(3, 1.2, N) * spend_factor
    recency = np.where(rng.random(N) < 0.2, np.nan, rng.integers(1, 60, N).astype(float))
    return [(f"c{i:04d}", float(spend[i]), None if np.isnan(recency[i]) else float(recency[i]),
             ["web", "app", "shop"][i % 3], [float(i % 7), 3.0], [float(spend[i]), 12.0], [1.0, 2.0]) for i in range(N)]


def write_features(spark, tables, snapshot, rows):
    df = spark.createDataFrame(rows, "customer_id string, spend double, recency double, channel string, "
                                     "seq_days_before array<double>, seq_amount array<double>, seq_items array<double>")
    tables.write(df.withColumn("snapshot_date", F.lit(snapshot)), "gold.customer_features",
                 replace_where=f"snapshot_date = '{snapshot}'")


def expected(rows):
    spend = np.array([r[1] for r in rows])
    recency = np.array([np.nan if r[2] is None else r[2] for r in rows])
    t = np.column_stack([np.log1p(spend), np.nan_to_num(np.log1p(recency), nan=0.0), np.isnan(recency)])
    z = handmade.normalised(t)
    return z, handmade.expected_spend(z), handmade.churn_probability(z)


@pytest.fixture()
def scoring_cfg(tmp_path):
    return load_config(ROOT / "conf" / "local.yaml", [
        f"storage.root={tmp_path / 'tables'}", "training.model_name=handmade", "scoring.reason_steps=32",
        "scoring.segments.k=3", "scoring.segments.features=[value_score, churn_probability, spend]",
        "spark.conf.spark.sql.shuffle.partitions=2"])


def register_handmade(cfg, tmp_path):
    staged = tmp_path / "staged"
    handmade.model().save(str(staged / "saved_model"), include_optimizer=False)
    (staged / "spec.json").write_text(handmade.spec().to_json())
    (staged / "training.json").write_text(json.dumps({"training_set": {"snapshots": [str(REF)], "horizon_days": 90}}))
    client = registry.client(cfg)
    run = client.create_run(registry.experiment_id(cfg))
    model = registry.register(cfg, staged, run.info.run_id)
    registry.mark_ready(cfg, model)
    return model


def test_known_model_known_scores_reasons_tiers_and_a_rerun_that_replaces(spark, scoring_cfg, tmp_path):
    cfg = scoring_cfg
    tables = Tables(cfg.storage)
    register_handmade(cfg, tmp_path)
    rows = raw_features(1)
    write_features(spark, tables, REF, raw_features(0))
    write_features(spark, tables, S, rows)
    result = score_snapshot(spark, cfg, S)
    assert result.model == "handmade/1" and result.customers == N
    got = (tables.read(spark, "gold.customer_scores").where(F.col("snapshot_date") == F.lit(S))
           .orderBy("customer_id").toPandas())
    z, spend, churn = expected(rows)
    np.testing.assert_allclose(got.expected_spend, spend, rtol=1e-4)
    np.testing.assert_allclose(got.churn_probability, churn, rtol=1e-4)
    rank = (np.argsort(np.argsort(spend)) + 0.5) / N
    assert np.abs(got.value_score - rank).max() < 0.002
    assert (got.tier == np.where(got.value_score > 0.8, "high", np.where(got.value_score >= 0.6, "mid", "low"))).all()
    assert abs((got.tier == "high").mean() - 0.2) < 0.01
    exact = handmade.exact_reasons(z)
    for i, reasons in enumerate(got.top_reasons):
        top = {r["feature"]: r["amount"] for r in reasons[:2]}
        assert set(top) == {"spend", "recency"}
        np.testing.assert_allclose([top["spend"], top["recency"]], exact[i], rtol=2e-3, atol=1e-3)
    assert set(got.segment) == {0, 1, 2}
    named = spark.sql("SELECT segment_name FROM customer_scores_named WHERE snapshot_date = '2025-04-01'").toPandas()
    assert len(named) == N and named.segment_name.notna().all()
    summary = tables.read(spark, "gold.segment_summary").where(F.col("snapshot_date") == F.lit(S)).toPandas()
    # analysts read the tables without a JVM too (delta-rs): the same rows
    for name, n in (("gold.customer_scores", N), ("gold.segment_summary", len(summary))):
        assert len(DeltaTable(tables.location(name)).to_pandas()) == n, name
    assert summary.customers.sum() == N and abs(summary.spend_share.sum() - 1) < 1e-9
    assert (cfg.storage.root and (registry.models_root(cfg) / "handmade" / "1" / "segments" / "names.json").exists())

    score_snapshot(spark, cfg, S)       # a rerun replaces the snapshot, never duplicates it
    again = tables.read(spark, "gold.customer_scores").where(F.col("snapshot_date") == F.lit(S))
    assert again.count() == N and again.select("customer_id").distinct().count() == N
    np.testing.assert_allclose(again.orderBy("customer_id").toPandas().value_score, got.value_score)

    # the reference snapshot itself, scored: identical data, so every PSI is 0 (S, a fresh sample of 300
    # customers from the same distribution, is not a check of this: sampling alone gives PSIs of 0.06-0.15)
    score_snapshot(spark, cfg, REF)
    stable = monitor(spark, cfg, REF)
    psi = {r["column"]: r["psi"] for r in stable.rows}
    assert stable.verdict == "stable" and set(psi) == {"spend", "recency", "value_score", "churn_probability"}
    assert max(psi.values()) < 1e-6, psi
    write_features(spark, tables, SHIFTED, raw_features(2, spend_factor=8.0))
    score_snapshot(spark, cfg, SHIFTED)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "lib"), os.environ.get("PYTHONPATH", "")])}
    args = [sys.executable, "-m", "customer_value.cli", "monitor", "--conf", str(ROOT / "conf" / "local.yaml"),
            "--set", f"storage.root={cfg.storage.root}", "--set", "training.model_name=handmade"]
    shifted = subprocess.run([*args, "--snapshot-date", str(SHIFTED)], capture_output=True, text=True, env=env)
    assert shifted.returncode == cfg.monitor.retrain_exit_code, shifted.stdout + shifted.stderr
    assert "monitor verdict: retrain" in shifted.stdout
    drift = tables.read(spark, "gold.drift").where(F.col("snapshot_date") == F.lit(SHIFTED)).toPandas()
    assert drift.set_index("column").loc["spend", "psi"] > 0.25
    assert drift.set_index("column").loc["value_score", "status"] == "retrain"
