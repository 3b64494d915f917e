"""Clean: `spark-submit jobs/clean.py --conf conf/local.yaml` (bronze -> silver, ops.data_quality)."""

import _bootstrap  # noqa: F401  (source checkouts: puts lib/ on the path)

from customer_value.cli import run_job

if __name__ == "__main__":
    run_job("clean")
