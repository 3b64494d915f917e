"""Smoke pipeline: `spark-submit jobs/smoke.py --conf conf/local.yaml` or `python jobs/smoke.py`."""

import _bootstrap  # noqa: F401  (source checkouts: puts lib/ on the path)

from customer_value.cli import run_job

if __name__ == "__main__":
    run_job("smoke")
