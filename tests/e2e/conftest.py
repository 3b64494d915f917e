"""The generated shop shared by the end-to-end modules: generated, ingested, cleaned and featurised once."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest

from customer_value.cleaning.run import clean_all
from customer_value.config import load_config
from customer_value.features.run import run_features
from customer_value.ingest.run import ingest
from customer_value.synthetic.generate import generate
from tests.conftest import ROOT
from tests.synthetic.test_generate import DIRTY

SNAPSHOT = date(2025, 10, 1)


# The model trains on half the demo's snapshots, with two towers: the suite's time; `make demo` (docs/evaluation.md)
# measures the product's defaults.
TRAINING = ["training.snapshots=6", "training.snapshot_step_days=45", "training.network.towers=2"]


def shop_config(root: Path, customers: int = 3000, *extra: str):
    return load_config(ROOT / "conf" / "local.yaml", [
        f"storage.root={root}", f"synthetic.customers={customers}", "synthetic.customers_per_file=600",
        "pseudonymisation.demo_mode=true", "cleaning.max_reject_share=0.2", *DIRTY, *TRAINING, *extra])


@pytest.fixture(scope="session")
def shop(spark, tmp_path_factory):
    cfg = shop_config(tmp_path_factory.mktemp("shop"))
    generated = generate(spark, cfg)
    ingested = ingest(spark, cfg)
    counts = clean_all(spark, cfg)
    run_features(spark, cfg, SNAPSHOT, history=2)
    manifest = json.loads((Path(generated.landing) / "_manifest.json").read_text())
    return cfg, manifest, ingested, counts
