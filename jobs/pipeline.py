"""All stages in order: `spark-submit jobs/pipeline.py --conf conf/local.yaml [--generate]`."""

import _bootstrap  # noqa: F401  (source checkouts: puts lib/ on the path)

from customer_value.cli import run_job

if __name__ == "__main__":
    run_job("pipeline")
