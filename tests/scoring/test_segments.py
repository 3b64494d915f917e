"""The segmentation is a function of the scores, not of how their table happened to be written: the same rows in
another partitioning and order give the same k-means centres, the same segment per customer and the same names."""

from __future__ import annotations

import numpy as np
from pyspark.sql import functions as F

from customer_value.config import load_config
from customer_value.scoring.segments import fit_segmentation
from tests.conftest import ROOT


def _scores(spark, n: int = 3000):
    """Scores without clear clusters (uniform and skewed columns): k-means has many nearby optima, so where its
    initial centres are sampled from decides which one it ends in."""
    rng = np.random.default_rng(5)
    rows = [(f"{i:08x}", float(v), float(c), int(r), int(f), int(t), float(m)) for i, (v, c, r, f, t, m) in enumerate(zip(
        rng.uniform(0, 1, n), rng.uniform(0, 1, n), rng.integers(1, 700, n), rng.poisson(2, n), rng.integers(1, 900, n),
        rng.lognormal(3, 1, n)))]
    return spark.createDataFrame(rows, "customer_id string, value_score double, churn_probability double, recency_days int, "
                                       "frequency_orders int, tenure_days int, monetary_mean double")


def test_segments_do_not_depend_on_the_partitioning_or_order_of_the_scores(spark):
    sc = load_config(ROOT / "conf" / "local.yaml").scoring
    scores = _scores(spark).cache()
    layouts = [scores.coalesce(1), scores.repartition(5).orderBy(F.rand(3)), scores.repartition(3, "monetary_mean")]
    fits = [fit_segmentation(layout, sc.segments, sc.tiers, sc.churn_risk_high) for layout in layouts]
    centres = [np.array(f.model.stages[-1].clusterCenters()) for f in fits]
    for other in centres[1:]:
        np.testing.assert_allclose(other, centres[0], rtol=1e-9, atol=1e-12)
    assigned = [{r.customer_id: r.segment for r in f.assign(scores).select("customer_id", "segment").collect()}
                for f in fits]
    assert assigned[1] == assigned[0] and assigned[2] == assigned[0]
    assert fits[1].names == fits[0].names and len(set(fits[0].names.values())) == sc.segments.k
