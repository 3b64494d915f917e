"""The backtest's pure frame steps: the fallback for customers a model cannot score, and the side-by-side rows."""

from __future__ import annotations

from datetime import date

import pandas as pd
from chispa import assert_df_equality

from customer_value.evaluation.backtest import canonical_rows, model_versions, side_by_side
from customer_value.evaluation.models import with_fallback

S = date(2025, 10, 1)
PRED = "customer_id string, predicted_spend double, churn_probability double"


def test_customers_without_a_prediction_get_the_fallback(spark):
    customers = spark.createDataFrame([("a",), ("b",)], "customer_id string")
    preds = spark.createDataFrame([("a", 10.0, 0.2)], PRED)
    out = with_fallback(preds, customers, 3.0, 0.9)
    assert_df_equality(out, spark.createDataFrame([("a", 10.0, 0.2), ("b", 3.0, 0.9)], PRED),
                       ignore_row_order=True, ignore_nullable=True)


def test_side_by_side_puts_actuals_beside_each_model_and_keeps_only_the_given_customers(spark):
    labels = spark.createDataFrame([("a", 50.0, 2, False), ("b", 0.0, 0, True), ("c", 5.0, 1, False)],
                                   "customer_id string, future_spend double, future_orders long, churned boolean")
    models = {
        "m1": (spark.createDataFrame([("a", 40.0, 0.1), ("b", 1.0, 0.8), ("c", 2.0, 0.5)], PRED), "v1"),
        "m2": (spark.createDataFrame([("a", 60.0, 0.3), ("b", 2.0, 0.6)], PRED), "v2"),
    }
    only = spark.createDataFrame([("a",), ("b",)], "customer_id string")
    out = side_by_side(labels, models, S, 90, only=only)
    # models without an interval get null intervals
    expected = spark.createDataFrame([
        (S, 90, "a", "m1", "v1", 40.0, 0.1, 50.0, 2, False, None, None, None, None),
        (S, 90, "b", "m1", "v1", 1.0, 0.8, 0.0, 0, True, None, None, None, None),
        (S, 90, "a", "m2", "v2", 60.0, 0.3, 50.0, 2, False, None, None, None, None),
        (S, 90, "b", "m2", "v2", 2.0, 0.6, 0.0, 0, True, None, None, None, None),
    ], "snapshot_date date, horizon_days int, customer_id string, model string, model_version string, "
       "predicted_spend double, churn_probability double, actual_spend double, actual_orders long, churned boolean, "
       "spend_p10 double, spend_p90 double, spend_if_buying_p10 double, spend_if_buying_p90 double")
    assert_df_equality(out, expected, ignore_row_order=True, ignore_nullable=True)


def test_rows_and_versions_read_back_do_not_depend_on_the_order_spark_returns_them():
    pdf = pd.DataFrame({"customer_id": ["b", "a", "a", "b", "a"], "model": ["m1", "m2", "m1", "m2", "m2"],
                        "model_version": ["v1", "v3", "v1", "v2", "v2"], "predicted_spend": [1.0, 2.0, 3.0, 4.0, 5.0]})
    shuffled = pdf.iloc[[4, 2, 0, 3, 1]]
    assert canonical_rows(shuffled).equals(canonical_rows(pdf))
    assert canonical_rows(pdf)[["customer_id", "model"]].values.tolist() == [
        ["a", "m1"], ["a", "m2"], ["a", "m2"], ["b", "m1"], ["b", "m2"]]
    # a table that mixes two fits of m2 says so, in one order, instead of naming whichever row came first
    assert model_versions(shuffled) == model_versions(pdf) == {"m1": "v1", "m2": "v2+v3"}
