"""`customer-value feature-catalogue` as a job: `spark-submit jobs/feature_catalogue.py --conf conf/local.yaml`."""

import _bootstrap  # noqa: F401  (source checkouts: puts lib/ on the path)

from customer_value.cli import run_job

if __name__ == "__main__":
    run_job("feature-catalogue")
