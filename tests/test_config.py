"""Configuration: overlays, overrides and the errors a user sees."""

from __future__ import annotations

import pytest

from customer_value.config import ConfigError, load_config
from tests.conftest import ROOT

CONF = ROOT / "conf"


def test_overlay_is_merged_over_base():
    cfg = load_config(CONF / "local.yaml")
    assert cfg.environment == "local"
    assert cfg.spark.master == "local[2]"
    # from base, kept under the overlay's own spark.conf entries
    assert cfg.spark.conf["spark.sql.session.timeZone"] == "UTC"
    assert cfg.spark.conf["spark.sql.shuffle.partitions"] == "4"


def test_databricks_overlay_adds_no_jars_and_uses_the_catalog():
    cfg = load_config(CONF / "databricks.yaml")
    assert cfg.spark.delta_jars == "none"
    assert cfg.storage.catalog == "customer_value"


def test_overrides_win_and_spark_conf_keys_keep_their_dots():
    cfg = load_config(
        CONF / "local.yaml",
        ["spark.master=local[4]", "training.num_proc=3", "spark.conf.spark.sql.shuffle.partitions=16"],
    )
    assert cfg.spark.master == "local[4]"
    assert cfg.training.num_proc == 3
    assert cfg.spark.conf["spark.sql.shuffle.partitions"] == "16"


def test_unknown_key_is_rejected_with_its_name():
    with pytest.raises(ConfigError, match="strage"):
        load_config(CONF / "local.yaml", ["strage.root=/tmp"])


def test_invalid_value_names_the_field():
    with pytest.raises(ConfigError, match="num_proc"):
        load_config(CONF / "local.yaml", ["training.num_proc=0"])


def test_cluster_overlay_needs_its_storage_root_from_the_environment(monkeypatch):
    monkeypatch.delenv("CUSTOMER_VALUE_STORAGE_ROOT", raising=False)
    with pytest.raises(ConfigError, match="CUSTOMER_VALUE_STORAGE_ROOT"):
        load_config(CONF / "cluster.yaml")
    monkeypatch.setenv("CUSTOMER_VALUE_STORAGE_ROOT", "s3a://shop-lake/customer-value")
    assert load_config(CONF / "cluster.yaml").storage.root == "s3a://shop-lake/customer-value"


def test_missing_file_is_named():
    with pytest.raises(ConfigError, match="nope.yaml"):
        load_config(CONF / "nope.yaml")
