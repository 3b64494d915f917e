"""The deep model against BG/NBD on a plain transactions file, with the product's training configuration.

    make bench-transactions   (or: python bench/transactions_backtest.py [--customers 2500] [--set key=value ...])

Writes a CDNOW-style file of customers drawn from a BG/NBD + Gamma-Gamma process (the test suite's
`tests/e2e/test_backtest_transactions.py` draws the same file, with a smaller training configuration), then runs
it through the transactions adapter, ingest, clean and the backtest with the deep model (no events, reviews or
oracle), and prints each model's spend Gini, churn ROC-AUC and spend MAE and the deep model's gap to BG/NBD
with a paired bootstrap interval (the same customers resampled for both models).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

from deltalake import DeltaTable
from sklearn.metrics import roc_auc_score

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "lib"), str(ROOT)]
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "lib"), os.environ.get("PYTHONPATH")) if p)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from customer_value.adapters.transactions import adapt, write_landing  # noqa: E402
from customer_value.cleaning.run import clean_all  # noqa: E402
from customer_value.config import load_config  # noqa: E402
from customer_value.evaluation.backtest import CLV, RFM  # noqa: E402
from customer_value.evaluation.metrics import normalised_gini, paired_difference  # noqa: E402
from customer_value.ingest.run import ingest  # noqa: E402
from customer_value.landing import landing_uri  # noqa: E402
from customer_value.models.deep import DeepModel, train_and_backtest  # noqa: E402
from customer_value.spark import spark_session  # noqa: E402
from customer_value.tables import Tables  # noqa: E402
from tests.e2e.test_backtest_transactions import LAST, OPENED, transactions  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=2500)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    args = parser.parse_args()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "tx.txt").write_text(transactions(args.customers, args.seed))
        cfg = load_config(ROOT / "conf" / "local.yaml", [
            f"storage.root={root}", "transactions.separator=whitespace", "transactions.header=false",
            "transactions.date_format=yyyyMMdd", "transactions.columns.customer_id=c0",
            "transactions.columns.date=c1", "transactions.columns.quantity=c2", "transactions.columns.amount=c3",
            f"cleaning.shop_opened={OPENED}", f"cleaning.as_of={LAST}", "pseudonymisation.demo_mode=true",
            # the refit for serving changes none of the backtest's figures: not trained here
            "backtest.min_history_days=150", "training.refit=false", *args.overrides])
        with spark_session(cfg) as spark:
            write_landing(adapt(spark, str(root / "tx.txt"), cfg.transactions), landing_uri(cfg))
            ingest(spark, cfg)
            clean_all(spark, cfg)
            result = train_and_backtest(spark, cfg, date(2024, 10, 1), 90)[1]
        preds = DeltaTable(Tables(cfg.storage).location("gold.backtest_predictions")).to_pandas()
    m = result.metrics
    print(f"\n{args.customers:,} customers, training: {cfg.training.snapshots} snapshots every "
          f"{cfg.training.snapshot_step_days} days, {cfg.training.network.towers} towers, btyd_inputs "
          f"{cfg.training.btyd_inputs} ({time.perf_counter() - t0:.0f} s)")
    for model in (RFM, CLV, DeepModel.name):
        print(f"{model:<20} spend Gini {m[model]['spend_gini']:.3f}  churn ROC-AUC {m[model]['churn_roc_auc']:.3f}  "
              f"spend MAE {m[model]['spend_mae']:.1f}  predicted/actual total {m[model]['spend_total_ratio']:.3f}")
    deep, clv = (preds[preds.model == name].set_index("customer_id").sort_index() for name in (DeepModel.name, CLV))
    assert deep.index.equals(clv.index), "both models score the same customers"
    gini = paired_difference(normalised_gini, deep.actual_spend, deep.predicted_spend, clv.predicted_spend)
    roc = paired_difference(roc_auc_score, deep.churned, deep.churn_probability, clv.churn_probability)
    print(f"deep - BG/NBD: Gini {gini['difference']:+.3f} (95 % paired bootstrap {gini['low']:+.3f} .. "
          f"{gini['high']:+.3f}), ROC-AUC {roc['difference']:+.3f} ({roc['low']:+.3f} .. {roc['high']:+.3f})")


if __name__ == "__main__":
    main()
