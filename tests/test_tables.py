"""Table names to locations, and a real Delta round trip through them."""

from __future__ import annotations

import pytest
from chispa import assert_df_equality

from customer_value.config import StorageConfig
from customer_value.schemas import SMOKE_CUSTOMERS
from customer_value.tables import Tables, UnknownTableError


def test_path_tables_live_under_root_layer_table(tmp_path):
    tables = Tables(StorageConfig(root=str(tmp_path)))
    assert tables.location("smoke.customers") == f"{tmp_path}/smoke/customers"
    assert tables.identifier("smoke.customers") is None


def test_object_store_roots_are_kept_as_uris():
    tables = Tables(StorageConfig(root="s3a://lake/cv/"))
    assert tables.location("smoke.scores") == "s3a://lake/cv/smoke/scores"


def test_catalog_tables_are_three_part_names():
    tables = Tables(StorageConfig(root="/unused", catalog="main"))
    assert tables.identifier("smoke.customers") == "main.smoke.customers"


def test_unknown_table_is_an_error_listing_known_ones():
    with pytest.raises(UnknownTableError, match="smoke.customers"):
        Tables(StorageConfig(root="/x")).location("smoke.custmers")


def test_replace_where_overwrites_only_the_slice(spark, cfg):
    tables = Tables(cfg.storage)
    rows = [("a", "low", 1.0), ("b", "high", 2.0)]
    tables.write(spark.createDataFrame(rows, SMOKE_CUSTOMERS), "smoke.customers")
    tables.write(
        spark.createDataFrame([("c", "high", 3.0)], SMOKE_CUSTOMERS),
        "smoke.customers",
        replace_where="tier = 'high'",
    )
    expected = spark.createDataFrame([("a", "low", 1.0), ("c", "high", 3.0)], SMOKE_CUSTOMERS)
    assert_df_equality(tables.read(spark, "smoke.customers"), expected, ignore_row_order=True, ignore_nullable=True)
    assert tables.read(spark, "smoke.customers", version=0).count() == 2
