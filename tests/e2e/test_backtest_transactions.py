"""The backtest on a plain transactions file, through the adapter: customers drawn from a BG/NBD process with
known parameters, written as a CDNOW-style file, then adapt -> ingest -> clean -> backtest. No events, no
reviews, no ground truth table: the baselines and the deep model, and BG/NBD finds the parameters the file was drawn from."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pytest

from customer_value.adapters.transactions import adapt, write_landing
from customer_value.cleaning.run import clean_all
from customer_value.config import load_config
from customer_value.evaluation.backtest import CLV, RFM
from customer_value.models.deep import DeepModel, train_and_backtest
from customer_value.ingest.run import ingest
from customer_value.landing import landing_uri
from tests.conftest import ROOT
from tests.e2e.conftest import TRAINING

pytestmark = pytest.mark.slow
OPENED, LAST = date(2023, 1, 1), date(2024, 12, 31)
TRUE = {"r": 0.6, "alpha": 40.0, "a": 0.7, "b": 3.0}      # per day
SPEND = {"p": 4.0, "q": 3.0, "gamma": 60.0}


def transactions(n: int, seed: int = 3) -> str:
    """CDNOW-style lines `customer yyyymmdd quantity amount`; first purchases spread over the first 200 days."""
    rng = np.random.default_rng(seed)
    end = (LAST - OPENED).days + 1
    lines = []
    for c in range(n):
        lam, p = rng.gamma(TRUE["r"], 1 / TRUE["alpha"]), rng.beta(TRUE["a"], TRUE["b"])
        nu = rng.gamma(SPEND["q"], 1 / SPEND["gamma"])
        t, first = rng.uniform(0, 200), True
        while t < end:
            day = OPENED + timedelta(days=int(t))
            lines.append(f"{c:05d} {day:%Y%m%d} {rng.integers(1, 4)} {rng.gamma(SPEND['p'], 1 / nu):.2f}")
            if not first and rng.random() < p:   # BG/NBD: dropout after a repeat purchase, not the first
                break
            t, first = t + rng.exponential(1 / lam), False
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def result(spark, tmp_path_factory):
    root = tmp_path_factory.mktemp("transactions")
    (root / "tx.txt").write_text(transactions(2500))
    cfg = load_config(ROOT / "conf" / "local.yaml", [
        f"storage.root={root}", "transactions.separator=whitespace", "transactions.header=false",
        "transactions.date_format=yyyyMMdd", "transactions.columns.customer_id=c0", "transactions.columns.date=c1",
        "transactions.columns.quantity=c2", "transactions.columns.amount=c3", f"cleaning.shop_opened={OPENED}",
        f"cleaning.as_of={LAST}", "pseudonymisation.demo_mode=true", "backtest.min_history_days=150",
        # the refit for serving changes none of the backtest's figures (tests/e2e/test_backtest.py covers it)
        "training.refit=false", *TRAINING])
    write_landing(adapt(spark, str(root / "tx.txt"), cfg.transactions), landing_uri(cfg))
    ingest(spark, cfg)
    clean_all(spark, cfg)
    deep, backtest = train_and_backtest(spark, cfg, date(2024, 10, 1), 90)
    # no events, no reviews: `training.network.wide: auto` chose the wide path
    assert deep.training["plan"]["network"]["wide"] is True
    return backtest


def test_no_oracle_and_every_model_better_than_random(result):
    assert set(result.metrics) == {RFM, CLV, DeepModel.name}
    assert result.training_snapshots == [date(2023, 10, 7), date(2024, 1, 5), date(2024, 4, 4), date(2024, 7, 3)]
    # seen with this code: spend Gini 0.821 (BG/NBD) / 0.766 (RFM) / 0.818 (deep), churn ROC-AUC 0.872 / 0.851 /
    # 0.873 on 2,500 customers; floors 0.03 below, about three standard errors at this size. The file is drawn
    # from BG/NBD itself (the baseline is the true model here, 12 k training rows); the deep model, given
    # BG/NBD's own predictions as inputs, ties it (docs/evaluation.md). It must stay ahead of the RFM cells.
    floors = {CLV: {"spend_gini": 0.79, "churn_roc_auc": 0.84}, RFM: {"spend_gini": 0.735, "churn_roc_auc": 0.82},
              DeepModel.name: {"spend_gini": 0.788, "churn_roc_auc": 0.843}}
    for model, mine in floors.items():
        for metric, floor in mine.items():
            assert result.metrics[model][metric] > floor, (model, metric, result.metrics[model][metric])
    deep, rfm = result.metrics[DeepModel.name], result.metrics[RFM]
    assert deep["churn_roc_auc"] > rfm["churn_roc_auc"] + 0.01 and deep["spend_gini"] > rfm["spend_gini"] + 0.03


def test_the_money_holds_up_against_the_true_process(result):
    """Issue 26's money: the predicted total within 0.9-1.1 of the actual and the spend MAE no worse than BG/NBD's,
    the true process of this file. The level check at S − H chose how much of BG/NBD's amount to serve
    (`models.blend`) and left a level within its noise alone (`ziln.checked_level`). Before both: 1.33 and MAE
    60.8 against 50.7 (the product config, docs/evaluation.md)."""
    deep, clv = result.metrics[DeepModel.name], result.metrics[CLV]
    assert 0.9 <= deep["spend_total_ratio"] <= 1.1, deep["spend_total_ratio"]
    assert deep["spend_mae"] <= clv["spend_mae"] + 1e-9, (deep["spend_mae"], clv["spend_mae"])


def test_bgnbd_recovers_the_process_behind_the_file(result):
    # the mean purchase rate r / alpha and the mean dropout a / (a + b) are what 2,500 customers pin down
    # well (the individual values trade off along a ridge)
    fit = result.clv.bgnbd
    r, alpha, a, b = fit.r, fit.alpha, fit.a, fit.b
    assert r / alpha == pytest.approx(TRUE["r"] / TRUE["alpha"], rel=0.1)
    assert a / (a + b) == pytest.approx(TRUE["a"] / (TRUE["a"] + TRUE["b"]), rel=0.1)
    gg = result.clv.gamma_gamma   # mean spend per order in the population: p * gamma / (q - 1)
    assert gg.p * gg.gamma / (gg.q - 1) == pytest.approx(SPEND["p"] * SPEND["gamma"] / (SPEND["q"] - 1), rel=0.1)
