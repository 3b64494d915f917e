"""One local Spark session with real Delta for the whole suite, and a configuration pointed at a temp folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from customer_value.config import Config, load_config
from customer_value.spark import build_spark

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def base_cfg(tmp_path_factory) -> Config:
    root = tmp_path_factory.mktemp("tables")
    return load_config(
        ROOT / "conf" / "local.yaml",
        [f"storage.root={root}", "spark.conf.spark.sql.shuffle.partitions=2", "spark.conf.spark.default.parallelism=2"],
    )


@pytest.fixture(scope="session")
def spark(base_cfg):
    session = build_spark(base_cfg)
    yield session
    session.stop()


@pytest.fixture()
def cfg(tmp_path) -> Config:
    """A configuration whose tables live in this test's own temp folder."""
    return load_config(ROOT / "conf" / "local.yaml", [f"storage.root={tmp_path / 'tables'}"])


@pytest.fixture(scope="session")
def reference(spark, tmp_path_factory) -> Path:
    """The shared clean run of every stage through the CLI (tests/reference.py): built once, read by the kill
    harness, the pipeline test and the secret scan. Tests copy what they change."""
    from tests import reference as ref

    return ref.build(spark, tmp_path_factory.mktemp("reference"))
