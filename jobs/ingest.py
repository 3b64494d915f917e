"""Ingest: `spark-submit jobs/ingest.py --conf conf/local.yaml` (new landing files -> bronze, quarantine)."""

import _bootstrap  # noqa: F401  (source checkouts: puts lib/ on the path)

from customer_value.cli import run_job

if __name__ == "__main__":
    run_job("ingest")
