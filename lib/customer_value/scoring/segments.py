"""Customer segments: Spark ML K-means on standardised value, churn risk and behaviour, named from centroids.

Fitted once per model version, on the scores of its last training snapshot, and saved in the model's artifact
(`segments/`): every snapshot that version scores is cut by the same centroids, so a segment means the same
customers-like-these from day to day, and a new model version brings its own segmentation.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.clustering import KMeans
from pyspark.ml.feature import StandardScaler, VectorAssembler
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from customer_value.config import SegmentSettings, TierThresholds
from customer_value.scoring.score import in_fixed_order

VECTOR, SCALED = "_segment_vector", "_segment_scaled"
SEGMENT_COMMENT = {"comment": "K-means segment of the model version; names in gold.segments"}
DORMANT_CHURN = 0.9     # a low-value segment this sure to buy nothing in the horizon is dormant, not lapsing


@dataclass(frozen=True)
class Segmentation:
    model: PipelineModel
    names: dict[int, str]
    profile: pd.DataFrame          # per segment: customers and the mean of every feature on the fitting snapshot

    def assign(self, scored: DataFrame) -> DataFrame:
        """`segment` (int) for every row; the settings' feature columns must be present.

        The column's Spark ML attribute metadata (`ml_attr`, a nested object in the Delta schema) is replaced by a
        column comment: readers without a JVM (delta-rs 0.18) refuse a table whose schema holds a nested object.
        (An empty `metadata={}` would keep the old one: PySpark treats it as no metadata given.)"""
        out = self.model.transform(scored).drop(VECTOR, SCALED)
        return out.withColumn("segment", F.col("segment").alias("segment", metadata=SEGMENT_COMMENT))

    def save(self, folder: Path) -> None:
        """names.json last: the scorer takes its presence for a whole segmentation (a kill before it refits)."""
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "names.json").unlink(missing_ok=True)
        self.model.write().overwrite().save(str(folder / "kmeans"))
        self.profile.to_json(folder / "profile.json", orient="records", indent=1)
        tmp = folder / "names.json.tmp"
        tmp.write_text(json.dumps({str(k): v for k, v in self.names.items()}, indent=1))
        os.replace(tmp, folder / "names.json")

    @classmethod
    def load(cls, folder: Path) -> "Segmentation":
        names = {int(k): v for k, v in json.loads((folder / "names.json").read_text()).items()}
        return cls(PipelineModel.load(str(folder / "kmeans")), names, pd.read_json(folder / "profile.json"))


def fit_segmentation(scored: DataFrame, settings: SegmentSettings, tiers: TierThresholds,
                     churn_high: float) -> Segmentation:
    """K-means on the standardised `settings.features` of one snapshot's scores; names from the profiles."""
    cols = list(settings.features)
    pipeline = Pipeline(stages=[
        VectorAssembler(inputCols=cols, outputCol=VECTOR, handleInvalid="keep"),
        StandardScaler(inputCol=VECTOR, outputCol=SCALED, withMean=True, withStd=True),
        KMeans(featuresCol=SCALED, predictionCol="segment", k=settings.k, seed=settings.seed,
               maxIter=settings.max_iter),
    ])
    # k-means|| samples its initial centres partition by partition, so the fit follows the rows' partitioning
    # and order: in a fixed order the segments are a function of the scores alone, not of how the features
    # table happened to be written
    rows = in_fixed_order(scored, *cols).select(*cols).na.fill(0.0)
    model = pipeline.fit(rows)
    assigned = model.transform(rows)
    profile = (assigned.groupBy("segment").agg(F.count(F.lit(1)).alias("customers"),
                                                *(F.avg(c).alias(c) for c in cols))
               .orderBy("segment").toPandas())
    return Segmentation(model, name_segments(profile, tiers, churn_high), profile)


def name_segments(profile: pd.DataFrame, tiers: TierThresholds, churn_high: float) -> dict[int, str]:
    """A readable name per segment from its mean value score, churn probability and, where present, tenure
    and recency (in the model's input scale: sign·log1p, so only their order among segments is used).

    Why rules on centroids, not a lookup per customer: marketing acts on a handful of named groups; the names
    must follow the data (a shop with no loyal customers gets no "loyal" segment), and two segments that land
    in the same cell are told apart by a rank suffix rather than merged."""
    young = _lowest(profile, "tenure_days")
    names: dict[int, str] = {}
    for _, row in profile.iterrows():
        value, churn = float(row.get("value_score", 0.0)), float(row.get("churn_probability", 0.0))
        level = "high" if value > tiers.high else "mid" if value >= tiers.mid else "low"
        at_risk = churn >= churn_high
        if int(row["segment"]) == young and not at_risk and level != "low":
            name = "new promising"
        elif level == "high":
            name = "at-risk high value" if at_risk else "loyal high spenders"
        elif level == "mid":
            name = "at-risk mid value" if at_risk else "steady mid value"
        elif churn >= DORMANT_CHURN:
            name = "dormant"
        else:
            name = "lapsing low value" if at_risk else "occasional low value"
        names[int(row["segment"])] = name
    return _distinct(names, profile)


def _lowest(profile: pd.DataFrame, column: str) -> int | None:
    if column not in profile or profile.empty:
        return None
    return int(profile.loc[profile[column].idxmin(), "segment"])


def _distinct(names: dict[int, str], profile: pd.DataFrame) -> dict[int, str]:
    """Segments sharing a name get ' 1', ' 2', ... by descending mean value score."""
    value = dict(zip(profile["segment"].astype(int), profile.get("value_score", pd.Series(0.0, index=profile.index))))
    out = dict(names)
    for name in set(names.values()):
        same = sorted((s for s, n in names.items() if n == name), key=lambda s: -value.get(s, 0.0))
        if len(same) > 1:
            for rank, s in enumerate(same, start=1):
                out[s] = f"{name} {rank}"
    return out


def segments_frame(spark, segmentation: Segmentation, model_name: str, model_version: int) -> DataFrame:
    """gold.segments rows of one model version: segment, name, customers and the centroid profile as JSON."""
    rows = [(model_name, model_version, int(r["segment"]), segmentation.names[int(r["segment"])],
             int(r["customers"]), json.dumps({k: float(v) for k, v in r.items() if k not in ("segment", "customers")}))
            for _, r in segmentation.profile.iterrows()]
    return spark.createDataFrame(rows, "model_name string, model_version int, segment int, segment_name string, "
                                       "fitted_customers long, profile string")
