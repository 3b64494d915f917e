"""The selection protocol's record: each backtest's role in gold.model_metrics, and a test snapshot that says when
settings were chosen on it or after it (real Spark and Delta; the predictions are made up, the metrics real)."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from customer_value.config import load_config
from customer_value.evaluation.backtest import evaluate_backtest, selection_snapshots
from customer_value.tables import Tables
from tests.conftest import ROOT

H = 90
SELECTED = [date(2025, 1, 6), date(2025, 4, 6)]        # S − 2H and S − H
S = date(2025, 7, 5)


def _predictions(spark, tables: Tables, snapshot: date) -> None:
    """Two models' rows for 400 customers at `snapshot`, appended to gold.backtest_predictions."""
    rng = np.random.default_rng(snapshot.toordinal())
    n = 400
    actual = np.where(rng.random(n) < 0.4, rng.gamma(2.0, 50.0, n), 0.0)
    frames = []
    for model, noise in (("rfm_rules", 60.0), ("deep_ziln", 20.0)):
        frames.append(pd.DataFrame({
            "snapshot_date": snapshot, "horizon_days": H, "customer_id": [f"c{i}" for i in range(n)], "model": model,
            "model_version": "1", "predicted_spend": np.maximum(actual + rng.normal(0, noise, n), 0.0),
            "churn_probability": np.clip(np.where(actual > 0, 0.3, 0.7) + rng.normal(0, 0.2, n), 0.01, 0.99),
            "actual_spend": actual, "actual_orders": (actual > 0).astype("int64"), "churned": actual == 0}))
    rows = spark.createDataFrame(pd.concat(frames, ignore_index=True),
                                 "snapshot_date date, horizon_days int, customer_id string, model string, "
                                 "model_version string, predicted_spend double, churn_probability double, "
                                 "actual_spend double, actual_orders long, churned boolean")
    tables.write(rows, "gold.backtest_predictions", mode="append")


def _with_role(cfg, role: str):
    return cfg.model_copy(update={"backtest": cfg.backtest.model_copy(update={"role": role})})


def test_roles_are_recorded_and_a_test_snapshot_says_whether_it_was_touched(spark, cfg):
    tables = Tables(cfg.storage)
    for s in [*SELECTED, S]:
        _predictions(spark, tables, s)
    selection = _with_role(cfg, "selection")
    for s in SELECTED:
        assert evaluate_backtest(spark, selection, s, H).context["role"].startswith("selection")
    assert selection_snapshots(spark, tables, H) == SELECTED
    # S's horizon starts where S − H's ends: untouched, and the report names where the settings were chosen
    test = evaluate_backtest(spark, _with_role(cfg, "test"), S, H)
    assert test.context["role"] == "test: untouched (settings chosen on 2025-01-06, 2025-04-06)"
    metrics = tables.read(spark, "gold.model_metrics").toPandas()
    roles = metrics.groupby("snapshot_date").role.unique().map(list).to_dict()
    assert roles == {SELECTED[0]: ["selection"], SELECTED[1]: ["selection"], S: ["test"]}
    # a test at a snapshot whose horizon a selection reaches into is not untouched, and its selection row stays
    again = evaluate_backtest(spark, _with_role(cfg, "test"), SELECTED[1], H)
    assert again.context["role"] == "test, NOT untouched: settings were chosen on 2025-04-06"
    metrics = tables.read(spark, "gold.model_metrics").toPandas()
    at = metrics[metrics.snapshot_date == SELECTED[1]]
    assert sorted(at.role.unique()) == ["selection", "test"]
    assert len(at[at.role == "test"]) == len(at[at.role == "selection"])
    # a rerun of the same role replaces its rows, not adds
    evaluate_backtest(spark, _with_role(cfg, "test"), S, H)
    assert len(tables.read(spark, "gold.model_metrics").toPandas()) == len(metrics)
    with pytest.raises(ValueError, match="role"):
        load_config(ROOT / "conf" / "local.yaml", ["backtest.role=tuning"])


def test_a_selection_later_than_the_test_snapshot_touches_it(spark, cfg):
    tables = Tables(cfg.storage)
    later = S + timedelta(days=30)
    for s in (S, later):
        _predictions(spark, tables, s)
    evaluate_backtest(spark, _with_role(cfg, "selection"), later, H)
    assert evaluate_backtest(spark, _with_role(cfg, "test"), S, H).context["role"] == \
        f"test, NOT untouched: settings were chosen on {later}"
