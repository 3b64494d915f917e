"""`customer-value show-config` as a job: `spark-submit jobs/show_config.py --conf conf/local.yaml`."""

import _bootstrap  # noqa: F401  (source checkouts: puts lib/ on the path)

from customer_value.cli import run_job

if __name__ == "__main__":
    run_job("show-config")
