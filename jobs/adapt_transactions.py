"""Transactions adapter: `spark-submit jobs/adapt_transactions.py --conf conf/local.yaml --input tx.txt`."""

import _bootstrap  # noqa: F401  (source checkouts: puts lib/ on the path)

from customer_value.cli import run_job

if __name__ == "__main__":
    run_job("adapt-transactions")
