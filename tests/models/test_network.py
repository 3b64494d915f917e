"""The network's wide path: with the trunk's heads silenced, the outputs are the normalised numeric inputs times
the wide kernels, exactly; without `wide` the model has no such path."""

from __future__ import annotations

import numpy as np
from pyspark.sql import functions as F

from customer_value.models.network import CHURN, SPEND, NetworkConfig, build_network
from customer_value.models.spec import SEQUENCE_CHANNELS
from tests.conftest import ROOT
from tests.models.test_data import small_spec


def spec_with_stats():
    spec = small_spec()
    n = len(spec.numeric_inputs)
    spec.stats = {"numeric_mean": [1.0] * n, "numeric_std": [2.0] * n,
                  "sequence_mean": [0.0] * len(SEQUENCE_CHANNELS), "sequence_std": [1.0] * len(SEQUENCE_CHANNELS),
                  "vocabularies": {c: ["a", "b"] for c in spec.categorical_inputs}}
    return spec


def test_the_wide_path_is_linear_in_the_normalised_inputs():
    spec = spec_with_stats()
    model = build_network(spec, NetworkConfig(hidden=(4,), sequence_units=2, embedding_dim=2, dropout=0.0, wide=True))
    for layer in (f"{SPEND}_head", f"{CHURN}_head"):
        model.get_layer(layer).set_weights([np.zeros_like(w) for w in model.get_layer(layer).get_weights()])
    rng = np.random.default_rng(1)
    w_spend, w_churn = rng.normal(size=(3, 3)).astype(np.float32), rng.normal(size=(3, 1)).astype(np.float32)
    model.get_layer(f"{SPEND}_wide").set_weights([w_spend])
    model.get_layer(f"{CHURN}_wide").set_weights([w_churn])
    x = rng.normal(size=(5, 3)).astype(np.float32)
    out = model({"numeric": x, "cat_channel": np.zeros(5, np.int32),
                 "sequence": rng.random((5, len(spec.sequence_inputs))).astype(np.float32)}, training=False)
    normalised = (x - 1.0) / 2.0
    np.testing.assert_allclose(out[SPEND].numpy(), normalised @ w_spend, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out[CHURN].numpy(), normalised @ w_churn, rtol=1e-5, atol=1e-6)
    plain = build_network(spec, NetworkConfig(hidden=(4,), sequence_units=2, embedding_dim=2, dropout=0.0))
    assert not [layer.name for layer in plain.layers if "wide" in layer.name]


def test_wide_inputs_pick_the_named_inputs_only():
    spec = spec_with_stats()
    model = build_network(spec, NetworkConfig(hidden=(4,), sequence_units=2, embedding_dim=2, dropout=0.0, wide=True,
                                              wide_inputs=("recency",)))
    assert model.get_layer(f"{SPEND}_wide").get_weights()[0].shape == (2, 3)    # recency and recency__missing
    pick = model.get_layer("wide_pick").get_weights()[0]
    np.testing.assert_array_equal(pick, [[0, 0], [1, 0], [0, 1]])
    assert not model.get_layer("wide_pick").trainable_weights


def test_auto_wide_is_on_only_where_the_training_split_has_no_behavioural_signal(spark):
    """`wide: auto` from the training split's statistics: every behaviour and review input constant (a shop that
    recorded no events or reviews) → the wide path; one customer with a page view → none; an explicit setting
    is kept either way."""
    from customer_value.config import load_config
    from customer_value.models.spec import (NUMERIC, FeatureColumn, FeatureSpec, behavioural_inputs, fit_stats,
                                            resolved_network, transformed)

    cols = [FeatureColumn("frequency_days", NUMERIC, "bigint", "zero"),
            FeatureColumn("page_views_30d", NUMERIC, "bigint", "zero"),
            FeatureColumn("rating_mean", NUMERIC, "double", "indicator")]
    spec = FeatureSpec(cols, 1)
    features = load_config(ROOT / "conf" / "local.yaml").features
    assert behavioural_inputs(features, spec) == ["page_views_30d", "rating_mean",
                                                          "rating_mean__missing"]

    def fitted(page_views):
        rows = spark.createDataFrame(
            [(f"c{i}", i % 4, views, None, [1.0], [2.0], [1.0]) for i, views in enumerate(page_views)],
            "customer_id string, frequency_days bigint, page_views_30d bigint, rating_mean double, "
            "seq_days_before array<double>, seq_amount array<double>, seq_items array<double>"
        ).withColumn("snapshot_date", F.lit("2025-01-01").cast("date"))
        s = fit_stats(transformed(rows, spec), FeatureSpec(cols, 1))
        s.stats["behaviour_inputs"] = behavioural_inputs(features, s)
        return s

    transactions_only, with_events = fitted([0] * 8), fitted([0] * 7 + [3])
    assert resolved_network({"wide": "auto"}, transactions_only) == {"wide": True}
    assert resolved_network({"wide": "auto"}, with_events) == {"wide": False}
    assert resolved_network({"wide": False}, transactions_only) == {"wide": False}
    assert resolved_network({"wide": True}, with_events) == {"wide": True}
    assert resolved_network({"wide": "auto"}, small_spec()) == {"wide": False}     # no statistics: no wide path
