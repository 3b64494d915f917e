"""Score: `spark-submit jobs/score.py --conf conf/local.yaml [--snapshot-date 2026-01-01] [--model customer_value/latest]`."""

import _bootstrap  # noqa: F401  (source checkouts: puts lib/ on the path)

from customer_value.cli import run_job

if __name__ == "__main__":
    run_job("score")
