"""RFM rules: quintile scores, the segment map, and cell means shrunk to their segment, on tiny frames."""

from __future__ import annotations

from datetime import date
from functools import reduce

import pytest
from chispa import assert_approx_df_equality, assert_df_equality
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from customer_value.baselines.rfm import PROSPECT, fit_rfm, predict_rfm, rfm_scores, segment
from customer_value.evaluation.backtest import side_by_side
from customer_value.evaluation.metrics import evaluate

S = date(2025, 1, 1)
FEATURES = "customer_id string, snapshot_date date, recency_days int, frequency_orders long, monetary_total double"


def test_scores_are_quintiles_per_snapshot(spark):
    # ten buyers with recency = frequency = i and spend 10 * i; quintile edges 2, 4, 6, 8 (20, 40, 60, 80):
    # values 1-2 -> 1, 3-4 -> 2, ... 9-10 -> 5; recency reversed (1 day ago is best)
    rows = [(f"c{i:02d}", S, i, i, 10.0 * i) for i in range(1, 11)] + [("p", S, None, 0, 0.0)]
    out = rfm_scores(spark.createDataFrame(rows, FEATURES)).select("customer_id", "r_score", "f_score", "m_score")
    q = {i: (i + 1) // 2 for i in range(1, 11)}
    expected = spark.createDataFrame([(f"c{i:02d}", 6 - q[i], q[i], q[i]) for i in range(1, 11)] + [("p", 0, 0, 0)],
                                     "customer_id string, r_score int, f_score int, m_score int")
    assert_df_equality(out, expected, ignore_nullable=True, ignore_row_order=True)


def test_quintiles_do_not_mix_snapshots(spark):
    later = date(2025, 4, 1)
    rows = [(f"a{i}", S, i, i, float(i)) for i in range(1, 11)] + [(f"b{i}", later, i, 100 * i, 100.0 * i) for i in range(1, 11)]
    out = rfm_scores(spark.createDataFrame(rows, FEATURES))
    by = out.groupBy("snapshot_date").agg(F.collect_set("f_score").alias("f")).collect()
    assert all(sorted(r.f) == [1, 2, 3, 4, 5] for r in by)


@pytest.mark.parametrize("r, f, name", [
    (5, 5, "champions"), (5, 4, "champions"), (4, 5, "loyal"), (3, 4, "loyal"), (5, 2, "potential_loyalist"),
    (4, 3, "potential_loyalist"), (5, 1, "new"), (4, 1, "promising"), (3, 3, "need_attention"),
    (3, 1, "about_to_sleep"), (3, 2, "about_to_sleep"), (1, 5, "cannot_lose"), (2, 3, "at_risk"), (1, 4, "at_risk"),
    (2, 2, "hibernating"), (1, 1, "hibernating"), (0, 0, PROSPECT),
])
def test_segment_map(spark, r, f, name):
    assert spark.range(1).select(segment(F.lit(r), F.lit(f)).alias("s")).collect()[0].s == name


def test_every_scored_pair_has_a_segment(spark):
    pairs = spark.createDataFrame([(r, f) for r in range(1, 6) for f in range(1, 6)], "r int, f int")
    names = {row.s for row in pairs.select(segment(F.col("r"), F.col("f")).alias("s")).collect()}
    assert PROSPECT not in names and len(names) == 10


def test_cells_are_shrunk_to_their_segment(spark):
    scores = spark.createDataFrame([
        # cell (5,5,5): two customers; cell (5,5,4): one customer; same segment (champions)
        ("a", S, 5, 5, 5, "champions"), ("b", S, 5, 5, 5, "champions"), ("c", S, 5, 5, 4, "champions"),
        ("p", S, 0, 0, 0, PROSPECT),
    ], "customer_id string, snapshot_date date, r_score int, f_score int, m_score int, segment string")
    labels = spark.createDataFrame([("a", S, 10.0, False), ("b", S, 30.0, True), ("c", S, 50.0, False), ("p", S, 0.0, True)],
                                   "customer_id string, snapshot_date date, future_spend double, churned boolean")
    model = fit_rfm(scores, labels, shrinkage=2.0)
    new = spark.createDataFrame([
        ("x", S, 5, 5, 5, "champions"), ("y", S, 5, 5, 4, "champions"), ("z", S, 5, 5, 3, "champions"),
        ("w", S, 1, 1, 1, "hibernating"), ("q", S, 0, 0, 0, PROSPECT),
    ], "customer_id string, snapshot_date date, r_score int, f_score int, m_score int, segment string")
    out = predict_rfm(model, new)
    # champions: spend 30, churn 1/3; cell 555: n=2, 20, 1/2 -> (2*20 + 2*30)/4 = 25, (2*0.5 + 2/3)/4 = 5/12
    # cell 554: n=1, 50, 0 -> (50 + 60)/3 = 110/3, (0 + 2/3)/3 = 2/9; cell 553 unseen: the segment, 30, 1/3
    # hibernating never seen: overall mean over 4 customers, spend 90/4, churn 2/4; prospect: 0, 1
    expected = spark.createDataFrame([
        ("x", "champions", 25.0, 5 / 12), ("y", "champions", 110 / 3, 2 / 9), ("z", "champions", 30.0, 1 / 3),
        ("w", "hibernating", 22.5, 0.5), ("q", PROSPECT, 0.0, 1.0),
    ], "customer_id string, segment string, predicted_spend double, churn_probability double")
    assert_approx_df_equality(out, expected, 1e-9, ignore_nullable=True, ignore_row_order=True)


# ------------------------------------------------------------------ the same inputs give the same predictions

T1, T2 = date(2024, 7, 1), date(2024, 10, 1)


def _hashed(salt: int, modulo: int):
    """A pseudo-random whole number in [0, modulo) that depends on the customer alone, not on the partitioning
    (rand(seed) depends on the partition a row is in)."""
    return F.pmod(F.xxhash64(F.col("id"), F.lit(salt)), F.lit(modulo))


def _shop(spark, customers: int, days=(T1, T2, S)) -> tuple[DataFrame, DataFrame]:
    """Features and labels of `customers` customers at each day: spend in cents, one in ten a prospect, future
    spend with many significant digits (sums that depend on the order of their terms)."""
    ids = spark.range(customers)
    frames = []
    for i, day in enumerate(days):
        salt = 10 * i
        buyer = _hashed(salt, 10) > 0
        frames.append(ids.select(
            F.format_string("c%06d", "id").alias("customer_id"), F.lit(day).alias("snapshot_date"),
            F.when(buyer, _hashed(salt + 1, 365).cast("int")).alias("recency_days"),
            F.when(buyer, 1 + _hashed(salt + 2, 20)).otherwise(0).alias("frequency_orders"),
            F.when(buyer, _hashed(salt + 3, 500_000) / 100.0).otherwise(0.0).alias("monetary_total"),
            (_hashed(salt + 4, 1 << 40) / 7.0 ** 12).alias("future_spend"), _hashed(salt + 5, 4).alias("future_orders"),
            (_hashed(salt + 6, 3) == 0).alias("churned")))
    rows = reduce(DataFrame.unionByName, frames).cache()
    return (rows.select("customer_id", "snapshot_date", "recency_days", "frequency_orders", "monetary_total"),
            rows.select("customer_id", "snapshot_date", "future_spend", "future_orders", "churned"))


@pytest.fixture(scope="module")
def shop(spark) -> tuple[DataFrame, DataFrame]:
    return _shop(spark, 3_000)


def _partitioned(frame: DataFrame, partitions: int) -> DataFrame:
    return frame.repartition(1) if partitions == 1 else frame.repartition(partitions, "customer_id")


def _rfm_predictions(features: DataFrame, labels: DataFrame, partitions: int) -> DataFrame:
    train = F.col("snapshot_date") < S
    features, labels = _partitioned(features, partitions), _partitioned(labels, partitions)
    model = fit_rfm(rfm_scores(features.where(train)), labels.where(train), shrinkage=20.0)
    return predict_rfm(model, rfm_scores(features.where(~train)))


def test_scores_are_identical_however_spark_partitions_the_features(spark):
    # percentile_approx merges per-partition sketches, so its spend quintiles moved with the partitioning
    # (merged sketches are exact up to about 10,000 values: 15,000 customers, 13,500 of them buyers)
    features, _ = _shop(spark, 15_000, days=(S,))
    one, seven = (sorted(rfm_scores(_partitioned(features, k)).drop("segment").collect()) for k in (1, 7))
    assert one == seven


def test_predictions_are_identical_to_the_last_digit_however_spark_partitions_the_inputs(shop):
    # averages of doubles summed partition by partition moved in the last digits with the partitioning
    one, seven = (sorted(_rfm_predictions(*shop, k).collect()) for k in (1, 7))
    assert one == seven  # Row equality: doubles compared exactly


def test_metrics_of_rfm_predictions_are_identical_however_spark_returns_the_rows(shop):
    # Every customer of an RFM cell gets the same prediction: big ties, also at the top-decile cut, which the
    # old top-decile precision broke by row order. The same predictions, their rows returned in three orders.
    features, labels = shop
    scored = side_by_side(labels.where(F.col("snapshot_date") == S),
                          {"rfm": (_rfm_predictions(features, labels, 2), "v")}, S, 90).cache()
    orders = [scored.repartition(1), scored.repartition(7, "customer_id"), scored.orderBy(F.rand(3))]
    metrics = [{k: v.hex() for k, v in evaluate(frame.toPandas()).items()} for frame in orders]
    assert metrics[1:] == [metrics[0]] * 2
