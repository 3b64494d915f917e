"""RFM rules: the yardstick every marketing team already uses, turned into a spend prediction and a churn score.

Recency, frequency and monetary value are scored 1..5 by quintile within each snapshot (5 = most recent, most
frequent, highest spend); the classic R x F segment map names the cell. To compare it with models on the same
scale, each (R, F, M) cell is given the mean future spend and churn rate its customers had at the training
snapshots, shrunk towards the segment's mean when the cell is small. Customers with no completed order yet
(no RFM) form their own cell, `prospect`.

Quintile edges come from `percentile_approx` (one pass, no global sort, no single-partition window), so the
baseline scales like the feature job.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

# R and F score patterns -> segment, the widely used RFM segment map (first match wins).
SEGMENTS: tuple[tuple[str, str], ...] = (
    ("5[45]", "champions"),
    ("[34][45]", "loyal"),
    ("[45][23]", "potential_loyalist"),
    ("51", "new"),
    ("41", "promising"),
    ("33", "need_attention"),
    ("3[12]", "about_to_sleep"),
    ("[12]5", "cannot_lose"),
    ("[12][34]", "at_risk"),
    ("[12][12]", "hibernating"),
)
PROSPECT = "prospect"
QUINTILES = [0.2, 0.4, 0.6, 0.8]


def _score(value: Column, edges: Column, higher_is_better: bool = True) -> Column:
    """1..5: one plus the number of quintile edges the value exceeds (reversed when lower is better)."""
    above = F.aggregate(edges, F.lit(0), lambda acc, e: acc + F.when(value > e, 1).otherwise(0))
    return (F.lit(1) + above) if higher_is_better else (F.lit(5) - above)


def rfm_scores(features: DataFrame) -> DataFrame:
    """customer_id, snapshot_date, r/f/m scores (0 for prospects) and the segment, from gold.customer_features.

    Quintiles are taken per snapshot over the customers who have bought, so a score means the same thing
    (a fifth of the buyers) in every snapshot."""
    buyer = F.col("frequency_orders") > 0
    edges = features.where(buyer).groupBy("snapshot_date").agg(
        F.percentile_approx("recency_days", QUINTILES).alias("_r_edges"),
        F.percentile_approx("frequency_orders", QUINTILES).alias("_f_edges"),
        F.percentile_approx("monetary_total", QUINTILES).alias("_m_edges"),
    )
    scored = features.join(F.broadcast(edges), "snapshot_date", "left").select(
        "customer_id", "snapshot_date",
        F.when(buyer, _score(F.col("recency_days"), F.col("_r_edges"), higher_is_better=False)).otherwise(0).alias("r_score"),
        F.when(buyer, _score(F.col("frequency_orders"), F.col("_f_edges"))).otherwise(0).alias("f_score"),
        F.when(buyer, _score(F.col("monetary_total"), F.col("_m_edges"))).otherwise(0).alias("m_score"),
    )
    return scored.withColumn("segment", segment(F.col("r_score"), F.col("f_score")))


def segment(r: Column, f: Column) -> Column:
    """The segment name of an R and F score pair (prospect when there is no score)."""
    rf = F.concat(r.cast("string"), f.cast("string"))
    out = F.lit(PROSPECT)
    for pattern, name in reversed(SEGMENTS):
        out = F.when(rf.rlike(f"^{pattern}$"), F.lit(name)).otherwise(out)
    return out


@dataclass(frozen=True)
class RfmModel:
    """Per cell and per segment: training customers, mean future spend, churn rate."""
    cells: DataFrame
    segments: DataFrame
    shrinkage: float


def fit_rfm(scores: DataFrame, labels: DataFrame, shrinkage: float = 20.0) -> RfmModel:
    """Cell and segment means of what happened in the horizon after each training snapshot.

    `scores`: rfm_scores of the training snapshots; `labels`: gold.customer_labels of the same snapshots."""
    joined = scores.join(labels.select("customer_id", "snapshot_date", "future_spend", "churned"),
                         ["customer_id", "snapshot_date"])
    stats = [F.count(F.lit(1)).alias("n"), F.avg("future_spend").alias("spend"),
             F.avg(F.col("churned").cast("double")).alias("churn")]
    cells = joined.groupBy("r_score", "f_score", "m_score", "segment").agg(*stats)
    segments = joined.groupBy("segment").agg(*stats)
    return RfmModel(cells.cache(), segments.cache(), shrinkage)


def predict_rfm(model: RfmModel, scores: DataFrame) -> DataFrame:
    """customer_id, segment, predicted_spend, churn_probability for scored customers.

    A cell's mean is pulled towards its segment's by `shrinkage` pseudo-customers (few customers in a cell:
    mostly the segment's mean); a cell or segment never seen in training falls back to the overall mean."""
    seg = model.segments
    overall = seg.agg((F.sum(F.col("spend") * F.col("n")) / F.sum("n")).alias("o_spend"),
                      (F.sum(F.col("churn") * F.col("n")) / F.sum("n")).alias("o_churn"))
    k = F.lit(model.shrinkage)
    out = (scores
           .join(F.broadcast(model.cells.drop("segment")), ["r_score", "f_score", "m_score"], "left")
           .join(F.broadcast(seg.select("segment", F.col("spend").alias("s_spend"), F.col("churn").alias("s_churn"))),
                 "segment", "left")
           .crossJoin(F.broadcast(overall)))
    n = F.coalesce(F.col("n"), F.lit(0))
    prior_spend = F.coalesce(F.col("s_spend"), F.col("o_spend"))
    prior_churn = F.coalesce(F.col("s_churn"), F.col("o_churn"))
    return out.select(
        "customer_id", "segment",
        ((n * F.coalesce(F.col("spend"), F.lit(0.0)) + k * prior_spend) / (n + k)).alias("predicted_spend"),
        ((n * F.coalesce(F.col("churn"), F.lit(0.0)) + k * prior_churn) / (n + k)).alias("churn_probability"),
    )
