"""Synthetic shop generator: `spark-submit jobs/generate.py --conf conf/local.yaml [--customers N] [--seed S]`."""

import _bootstrap  # noqa: F401  (source checkouts: puts lib/ on the path)

from customer_value.cli import run_job

if __name__ == "__main__":
    run_job("generate")
