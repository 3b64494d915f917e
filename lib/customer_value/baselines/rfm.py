"""RFM rules: the yardstick every marketing team already uses, turned into a spend prediction and a churn score.

Recency, frequency and monetary value are scored 1..5 by quintile within each snapshot (5 = most recent, most
frequent, highest spend); the classic R x F segment map names the cell. To compare it with models on the same
scale, each (R, F, M) cell is given the mean future spend and churn rate its customers had at the training
snapshots, shrunk towards the segment's mean when the cell is small. Customers with no completed order yet
(no RFM) form their own cell, `prospect`.

Same features and labels give the same predictions to the last bit, however Spark partitions them or orders
their rows; every aggregate is chosen for that:
- Quintile edges are exact discrete percentiles (`percentile_disc`: the value at rank ceil(q n), what
  `percentile_approx` returns when it is exact). It counts each distinct value, and counts add up the same in any
  order; `percentile_approx`'s sketches do not merge that way, so its edges moved with the partitioning. Still
  one pass, no global sort, no single-partition window, so the baseline scales like the feature job; its
  memory is the number of distinct values per snapshot, small for days and order counts, and bounded for spend
  by scoring it in cents (spend is money: whole cents are its resolution anyway).
- Cell, segment and overall means are exact sums divided by counts: spend summed in whole cents as integers (a sum of
  doubles depends on the order Spark adds the partitions in), churners counted as integers.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, GroupedData
from pyspark.sql import functions as F

from customer_value.features.groups import cents

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


def _edges(column: str) -> Column:
    """Exact quintile edges of a column in a group: percentile_disc at each of QUINTILES, an order-free aggregate
    (pyspark 3.5 has it in SQL only)."""
    return F.array(*[F.expr(f"percentile_disc({q}) WITHIN GROUP (ORDER BY `{column}`)") for q in QUINTILES])


def _money(value: Column) -> Column:
    """Spend in whole cents for scoring: its distinct values, which the exact quintiles count, stay bounded."""
    return F.round(value, 2)


def _score(value: Column, edges: Column, higher_is_better: bool = True) -> Column:
    """1..5: one plus the number of quintile edges the value exceeds (reversed when lower is better)."""
    above = F.aggregate(edges, F.lit(0), lambda acc, e: acc + F.when(value > e, 1).otherwise(0))
    return (F.lit(1) + above) if higher_is_better else (F.lit(5) - above)


def rfm_scores(features: DataFrame) -> DataFrame:
    """customer_id, snapshot_date, r/f/m scores (0 for prospects) and the segment, from gold.customer_features.

    Quintiles are taken per snapshot over the customers who have bought, so a score means the same thing
    (a fifth of the buyers) in every snapshot; spend is scored in whole cents (module docstring)."""
    buyer = F.col("frequency_orders") > 0
    features = features.withColumn("_money", _money(F.col("monetary_total")))
    edges = features.where(buyer).groupBy("snapshot_date").agg(
        _edges("recency_days").alias("_r_edges"),
        _edges("frequency_orders").alias("_f_edges"),
        _edges("_money").alias("_m_edges"),
    )
    scored = features.join(F.broadcast(edges), "snapshot_date", "left").select(
        "customer_id", "snapshot_date",
        F.when(buyer, _score(F.col("recency_days"), F.col("_r_edges"), higher_is_better=False)).otherwise(0).alias("r_score"),
        F.when(buyer, _score(F.col("frequency_orders"), F.col("_f_edges"))).otherwise(0).alias("f_score"),
        F.when(buyer, _score(F.col("_money"), F.col("_m_edges"))).otherwise(0).alias("m_score"),
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
    """Per cell and per segment: training customers `n`, mean future spend, churn rate, and the exact totals
    they come from (`spend_cents`, `churners`: integers), so coarser means are exact too."""
    cells: DataFrame
    segments: DataFrame
    shrinkage: float


def _means(groups: GroupedData) -> DataFrame:
    """n, spend_cents, churners and the means spend, churn of grouped customers, by exact (order-free) sums:
    spend in whole cents, as the features and labels sum money (`features.groups.cents`)."""
    return groups.agg(
        F.count(F.lit(1)).alias("n"),
        F.sum(cents("future_spend")).alias("spend_cents"),
        F.sum(F.col("churned").cast("long")).alias("churners"),
    ).withColumns({"spend": F.col("spend_cents") / 100.0 / F.col("n"),
                   "churn": F.col("churners") / F.col("n")})


def fit_rfm(scores: DataFrame, labels: DataFrame, shrinkage: float = 20.0) -> RfmModel:
    """Cell and segment means of what happened in the horizon after each training snapshot.

    `scores`: rfm_scores of the training snapshots; `labels`: gold.customer_labels of the same snapshots."""
    joined = scores.join(labels.select("customer_id", "snapshot_date", "future_spend", "churned"),
                         ["customer_id", "snapshot_date"])
    cells = _means(joined.groupBy("r_score", "f_score", "m_score", "segment"))
    segments = _means(joined.groupBy("segment"))
    return RfmModel(cells.cache(), segments.cache(), shrinkage)


def predict_rfm(model: RfmModel, scores: DataFrame) -> DataFrame:
    """customer_id, segment, predicted_spend, churn_probability for scored customers.

    A cell's mean is pulled towards its segment's by `shrinkage` pseudo-customers (few customers in a cell:
    mostly the segment's mean); a cell or segment never seen in training falls back to the overall mean."""
    seg = model.segments
    # from the exact totals: a sum of the segments' double means would depend on the order of the segment rows
    overall = seg.agg((F.sum("spend_cents") / 100.0 / F.sum("n")).alias("o_spend"),
                      (F.sum("churners") / F.sum("n")).alias("o_churn"))
    k = F.lit(model.shrinkage)
    cells = model.cells.select("r_score", "f_score", "m_score", "n", "spend", "churn")
    out = (scores
           .join(F.broadcast(cells), ["r_score", "f_score", "m_score"], "left")
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
