"""The transactions adapter: a whitespace-separated, YYYYMMDD, header-less file (CDNOW-style) into the landing layout."""

from __future__ import annotations

from chispa import assert_df_equality

from customer_value.adapters.transactions import adapt, write_landing
from customer_value.config import load_config
from customer_value.synthetic.process import ITEM_COLUMNS, ORDER_COLUMNS, USER_COLUMNS
from tests.conftest import ROOT

CDNOW_LIKE = """\
00001   19970101  1   11.77
00002\t19970112  1   12.00
00002   19970112  5   77.00

00003   19970102  2   20.76
00003   19970326  2   abc
00004   1997013x  1   9.99
"""


def _cfg(tmp_path, *extra):
    return load_config(ROOT / "conf" / "local.yaml", [
        f"storage.root={tmp_path}", "transactions.separator=whitespace", "transactions.header=false",
        "transactions.date_format=yyyyMMdd", "transactions.columns.customer_id=c0",
        "transactions.columns.date=c1", "transactions.columns.quantity=c2", "transactions.columns.amount=c3", *extra])


def _read(spark, path):
    return spark.read.csv(path, header=True, inferSchema=False)


def test_whitespace_yyyymmdd_file_maps_to_users_orders_and_items(spark, tmp_path):
    src = tmp_path / "cdnow.txt"
    src.write_text(CDNOW_LIKE)
    cfg = _cfg(tmp_path)
    landing = str(tmp_path / "landing")
    counts = write_landing(adapt(spark, str(src), cfg.transactions), landing)
    assert counts == {"users": 4, "orders": 6, "order_items": 6}

    orders = spark.createDataFrame([
        ("t00001-19970101-1", "00001", "1997-01-01 00:00:00", "1997-01-01 00:00:00", "completed", None, "0.00", "11.77"),
        ("t00002-19970112-1", "00002", "1997-01-12 00:00:00", "1997-01-12 00:00:00", "completed", None, "0.00", "12.00"),
        ("t00002-19970112-2", "00002", "1997-01-12 00:00:00", "1997-01-12 00:00:00", "completed", None, "0.00", "77.00"),
        ("t00003-19970102-1", "00003", "1997-01-02 00:00:00", "1997-01-02 00:00:00", "completed", None, "0.00", "20.76"),
        # what does not parse is passed through for ingest to quarantine, never dropped
        ("t00003-19970326-1", "00003", "1997-03-26 00:00:00", "1997-03-26 00:00:00", "completed", None, "0.00", "abc"),
        ("t00004-1997013-1", "00004", "1997013x", "1997013x", "completed", None, "0.00", "9.99"),
    ], ", ".join(f"{c} string" for c in ORDER_COLUMNS))
    assert_df_equality(_read(spark, f"{landing}/orders"), orders, ignore_row_order=True, ignore_nullable=True)

    users = _read(spark, f"{landing}/users").select("user_id", "signup_date", "acquisition_channel", "email")
    expected_users = spark.createDataFrame([
        ("00001", "1997-01-01", "unknown", None), ("00002", "1997-01-12", "unknown", None),
        ("00003", "1997-01-02", "unknown", None), ("00004", "1997013x", "unknown", None),
    ], "user_id string, signup_date string, acquisition_channel string, email string")
    assert_df_equality(users, expected_users, ignore_row_order=True, ignore_nullable=True)
    assert _read(spark, f"{landing}/users").columns == USER_COLUMNS

    items = _read(spark, f"{landing}/order_items")
    assert items.columns == ITEM_COLUMNS
    unit = {r.order_id: (r.quantity, r.unit_price) for r in items.collect()}
    assert unit["t00002-19970112-2"] == ("5", "15.40")
    assert unit["t00003-19970326-1"] == ("2", "abc")


def test_csv_with_header_and_order_ids_groups_lines_into_orders(spark, tmp_path):
    src = tmp_path / "tx.csv"
    src.write_text("cust;when;value;invoice\nA;2024-03-01;10.50;I1\nA;2024-03-01;4.50;I1\nB;2024-03-02;7.00;I2\n")
    cfg = load_config(ROOT / "conf" / "local.yaml", [
        "transactions.separator=;", "transactions.columns.customer_id=cust", "transactions.columns.date=when",
        "transactions.columns.amount=value", "transactions.columns.order_id=invoice"])
    out = adapt(spark, str(src), cfg.transactions)
    totals = {r.order_id: r.total for r in out["orders"].collect()}
    assert totals == {"I1": "15.00", "I2": "7.00"}
    assert out["order_items"].count() == 3


def test_a_mapped_column_missing_from_the_file_is_named(spark, tmp_path):
    src = tmp_path / "tx.csv"
    src.write_text("customer,date,amount\nA,2024-03-01,1.0\n")
    cfg = load_config(ROOT / "conf" / "local.yaml", ["transactions.columns.customer_id=customer_id"])
    try:
        adapt(spark, str(src), cfg.transactions)
    except ValueError as exc:
        assert "customer_id" in str(exc) and "customer, date, amount" in str(exc)
    else:
        raise AssertionError("expected a ValueError naming the missing column")
