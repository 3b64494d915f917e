"""Evaluate: `spark-submit jobs/evaluate.py --conf conf/local.yaml [--snapshot-date 2025-10-01] [--horizon-days 90]`."""

import _bootstrap  # noqa: F401  (source checkouts: puts lib/ on the path)

from customer_value.cli import run_job

if __name__ == "__main__":
    run_job("evaluate")
