"""RFM rules: quintile scores, the segment map, and cell means shrunk to their segment, on tiny frames."""

from __future__ import annotations

from datetime import date

import pytest
from chispa import assert_approx_df_equality, assert_df_equality
from pyspark.sql import functions as F

from customer_value.baselines.rfm import PROSPECT, fit_rfm, predict_rfm, rfm_scores, segment

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
