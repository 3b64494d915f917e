"""The product model: `spark-submit jobs/train.py --conf conf/local.yaml` (train, backtest, register)."""

import _bootstrap  # noqa: F401  (source checkouts: puts lib/ on the path)

from customer_value.cli import run_job

if __name__ == "__main__":
    run_job("train")
