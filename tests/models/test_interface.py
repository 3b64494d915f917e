"""The model interface with a hand-built model of known weights: through the feature spec, the SavedModel, a
Spark mapInPandas and the ZILN summaries, the predictions are what the weights say."""

from __future__ import annotations

import math
from datetime import date
from pathlib import Path
from statistics import NormalDist

import numpy as np
import pytest
from chispa import assert_approx_df_equality
from pyspark.sql import types as T

from customer_value.features.catalogue import catalogue
from customer_value.models.deep import DeepModel, score_frame
from customer_value.models.network import NetworkConfig, build_network
from customer_value.models.spec import CATEGORICAL, NUMERIC, SEQUENCE, SEQUENCE_CHANNELS, feature_spec
from customer_value.evaluation.models import PREDICTION_COLUMNS, standard_columns
from customer_value.evaluation.backtest import side_by_side

B_BUY, B_MU, B_SIGMA, B_CHURN = 0.4, 2.0, -0.5, -1.0


def features_schema(cfg) -> T.StructType:
    fields = [T.StructField("customer_id", T.StringType())]
    for d in catalogue(cfg.features):
        if d.group == "static":
            t = T.StringType()
        elif d.group == "sequence":
            t = T.ArrayType(T.DoubleType())
        else:
            t = T.DoubleType()
        fields.append(T.StructField(d.name, t))
    return T.StructType([*fields, T.StructField("snapshot_date", T.DateType())])


def features_frame(spark, cfg, rows: list[dict]):
    schema = features_schema(cfg)
    return spark.createDataFrame([tuple(r.get(f.name) for f in schema.fields) for r in rows], schema)


def hand_built(spec, tmp: Path) -> Path:
    """A network whose spend μ is b + log1p(frequency_orders) and everything else a bias."""
    n_num = len(spec.numeric_inputs)
    spec.stats = {"numeric_mean": [0.0] * n_num, "numeric_std": [1.0] * n_num,
                  "sequence_mean": [0.0] * len(SEQUENCE_CHANNELS), "sequence_std": [1.0] * len(SEQUENCE_CHANNELS),
                  "vocabularies": {c: ["a", "b"] for c in spec.categorical_inputs}}
    model = build_network(spec, NetworkConfig(sequence_branch="none", hidden=(4, 4), dropout=0.0))
    for w in model.weights:
        if "norm" not in w.name:
            w.assign(np.zeros(w.shape, np.float32))
    idx = spec.numeric_inputs.index("frequency_orders")
    model.get_layer("trunk_0").kernel[idx, 0].assign(1.0)
    model.get_layer("trunk_1").kernel[0, 0].assign(1.0)
    model.get_layer("spend_head").kernel[0, 1].assign(1.0)
    model.get_layer("spend_head").bias.assign([B_BUY, B_MU, B_SIGMA])
    model.get_layer("churn_head").bias.assign([B_CHURN])
    out = tmp / "artifact"
    model.save(str(out / "saved_model"))
    (out / "spec.json").write_text(spec.to_json())
    return out


def test_spec_roles_follow_the_catalogue(cfg):
    spec = feature_spec(cfg.features, {f.name: f.dataType.simpleString() for f in features_schema(cfg).fields})
    groups = {d.name: d.group for d in catalogue(cfg.features)}
    for c in spec.columns[1:]:
        want = {"static": CATEGORICAL, "sequence": SEQUENCE}.get(groups[c.name], NUMERIC)
        assert c.role == want, c
    assert {c.name for c in spec.columns} == {"customer_id", *groups}
    assert "recency_days__missing" in spec.numeric_inputs and "shop_season_index__missing" in spec.numeric_inputs


def test_known_weights_give_known_predictions(spark, cfg, tmp_path):
    spec = feature_spec(cfg.features, {f.name: f.dataType.simpleString() for f in features_schema(cfg).fields})
    artifact = hand_built(spec, tmp_path)
    s = date(2025, 6, 1)
    feats = features_frame(spark, cfg, [
        {"customer_id": "c0", "snapshot_date": s},
        {"customer_id": "c1", "frequency_orders": 1.0, "gender": "a", "seq_amount": [10.0], "snapshot_date": s},
        {"customer_id": "c2", "frequency_orders": 9.0, "gender": "zzz", "snapshot_date": s},
    ])
    got = score_frame(feats, str(artifact), spec)
    sigma = math.log1p(math.exp(B_SIGMA))
    p = 1 / (1 + math.exp(-B_BUY))

    def row(cid, freq):
        mu = B_MU + math.log1p(freq)

        def horizon(q):         # the q-quantile of the horizon's spend: 0 while q <= P(no purchase)
            return 0.0 if q <= 1 - p else math.exp(mu + NormalDist().inv_cdf((q - (1 - p)) / p) * sigma)
        return (cid, p * math.exp(mu + sigma**2 / 2), 1 / (1 + math.exp(-B_CHURN)), p, horizon(0.1), horizon(0.9),
                math.exp(mu - 1.2815515655446004 * sigma), math.exp(mu + 1.2815515655446004 * sigma))

    want = spark.createDataFrame([row("c0", 0.0), row("c1", 1.0), row("c2", 9.0)], got.schema)
    # float32 network vs float64 hand values; unseen categories ("zzz") and missing ones map to index 0 alike
    assert_approx_df_equality(got.orderBy("customer_id"), want.orderBy("customer_id"), precision=1e-4)
    # the interface's columns, as the backtest stores them
    assert standard_columns(got).columns == list(PREDICTION_COLUMNS)


def test_known_weights_within_float_tolerance(spark, cfg, tmp_path):
    """The float32 network against float64 hand values: relative 1e-5."""
    spec = feature_spec(cfg.features, {f.name: f.dataType.simpleString() for f in features_schema(cfg).fields})
    artifact = hand_built(spec, tmp_path)
    feats = features_frame(spark, cfg, [{"customer_id": f"c{i}", "frequency_orders": float(i),
                                         "snapshot_date": date(2025, 1, 1)} for i in range(50)])
    got = {r["customer_id"]: r for r in score_frame(feats, str(artifact), spec).collect()}
    sigma = math.log1p(math.exp(B_SIGMA))
    p = 1 / (1 + math.exp(-B_BUY))
    for i in range(50):
        mu = B_MU + math.log1p(i)
        assert got[f"c{i}"]["predicted_spend"] == pytest.approx(p * math.exp(mu + sigma**2 / 2), rel=1e-5)
        assert got[f"c{i}"]["spend_if_buying_p90"] == pytest.approx(math.exp(mu + 1.2815515655446004 * sigma),
                                                                    rel=1e-5)
        # of the horizon's spend: the (0.9 - P(no purchase)) / P(purchase) quantile given a purchase, or 0
        inner = (0.9 - (1 - p)) / p
        want = math.exp(mu + NormalDist().inv_cdf(inner) * sigma) if inner > 0 else 0.0
        assert got[f"c{i}"]["spend_p90"] == pytest.approx(want, rel=1e-5)


def test_the_workers_that_loaded_a_model_run_tensorflow_with_the_threads_asked_for(spark, cfg, tmp_path):
    """A Python worker keeps the thread count of the first model it loaded, and the count changes some float32
    results in their last bits: the backtest's predictions loaded with TensorFlow's default (one per core), so a
    score stage run after them in the same process served other digits than the same stage alone. Every loader in
    a worker sets `threads` (the scoring setting): asked with 1, every worker holding TensorFlow runs with 1."""
    import pandas as pd

    spec = feature_spec(cfg.features, {f.name: f.dataType.simpleString() for f in features_schema(cfg).fields})
    artifact = hand_built(spec, tmp_path)
    feats = features_frame(spark, cfg, [{"customer_id": f"c{i}", "frequency_orders": float(i),
                                         "snapshot_date": date(2025, 1, 1)} for i in range(40)]).repartition(4)
    assert score_frame(feats, str(artifact), spec, threads=1).count() == 40

    def threads(batches):
        import os
        import sys

        for _ in batches:
            pass
        tf = sys.modules.get("tensorflow")
        yield pd.DataFrame({"pid": [os.getpid()],
                            "threads": [tf.config.threading.get_intra_op_parallelism_threads() if tf else -1]})

    seen = spark.range(0, 8, numPartitions=8).mapInPandas(threads, "pid long, threads long").toPandas()
    loaded = seen[seen["threads"] >= 0].drop_duplicates("pid")
    assert len(loaded) > 0, "no worker that scored was reused"
    assert set(loaded["threads"]) == {1}, loaded


def test_models_side_by_side_with_and_without_intervals(spark):
    labels = spark.createDataFrame([("a", 10.0, 1, False), ("b", 0.0, 0, True)],
                                   "customer_id string, future_spend double, future_orders long, churned boolean")
    plain = spark.createDataFrame([("a", 5.0, 0.2), ("b", 1.0, 0.7)], "customer_id string, predicted_spend double, churn_probability double")
    with_interval = spark.createDataFrame([("a", 6.0, 0.1, 2.0, 20.0), ("b", 0.5, 0.9, 1.0, 9.0)],
                                          "customer_id string, predicted_spend double, churn_probability double, "
                                          "spend_p10 double, spend_p90 double")
    out = side_by_side(labels, {"plain": (plain, "v1"), "deep": (with_interval, "m/3")}, date(2025, 1, 1), 90)
    rows = {(r["model"], r["customer_id"]): r for r in out.collect()}
    assert rows[("plain", "a")]["spend_p10"] is None and rows[("deep", "a")]["spend_p90"] == 20.0
    assert rows[("deep", "b")]["model_version"] == "m/3" and rows[("deep", "b")]["actual_spend"] == 0.0
