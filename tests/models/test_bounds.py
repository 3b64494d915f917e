"""The served model's outputs stay bounded whatever a customer's inputs: every numeric feature at 0, at its
training maximum, at 100× it or missing, alone or mixed (hypothesis), through the saved model and the scorer's
prediction and reasons. The network's statistics come from the real `fit_stats` on a training split that holds a
rare event (one row in 400, like `returns_7d` on the demo) and its weights are a fresh random start: what a trained
network does outside what it saw is no better defined than that. The counter-test runs the same rows through the
network as it was before the bounds (the raw deviation, no clipping, no bounds) and finds absurd amounts."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from customer_value.models.deep import load_saved_model, predict_arrays
from customer_value.models.network import SPEND, NetworkConfig, build_network, served
from customer_value.models.spec import MAX_SD, NUMERIC, SEQUENCE_CHANNELS, feature_spec, fit_stats
from customer_value.models.ziln import logit_bounds, spend_bounds
from customer_value.scoring.reasons import Attributor
from tests.models.test_interface import features_schema

ROWS = 400
NET = NetworkConfig(hidden=(32, 16), sequence_units=4, embedding_dim=2, dropout=0.0, towers=2)
CHOICES = ("zero", "max", "x100", "missing")


def _training_rows(spec, rng) -> pd.DataFrame:
    """Transformed training rows: each numeric input non-zero on a share of rows (one row for some: a rare
    event), sequences, categoricals and spend labels (70 % non-buyers, lognormal buyers)."""
    cols = {}
    for i, name in enumerate(spec.numeric_inputs):
        if name.endswith("__missing"):
            share = (1 / ROWS, 0.1)[i % 2]
            cols[name] = (rng.random(ROWS) < share).astype(float)
            continue
        share = (1 / ROWS, 0.05, 0.5)[i % 3]
        values = np.log1p(rng.gamma(1.0, 20.0, ROWS)) * (rng.random(ROWS) < share)
        cols[name] = values * (-1 if "trend" in name else 1)
    cols[spec.numeric_inputs[0]][0] = math.log(2.0)        # at least one non-zero
    n_ch = len(SEQUENCE_CHANNELS)
    for p in range(spec.sequence_length):
        present = rng.random(ROWS) < 0.6 / (p + 1)
        for c in range(n_ch):
            cols[f"seq_p{p:02d}_c{c}"] = np.where(present, np.log1p(rng.gamma(1.0, 30.0, ROWS)), 0.0)
        cols[f"seq_p{p:02d}_c{n_ch}"] = present.astype(float)
    for name in spec.categorical_inputs:
        cols[name] = rng.choice(["a", "b"], ROWS)
    cols["future_spend"] = np.where(rng.random(ROWS) < 0.3, rng.lognormal(3.5, 1.0, ROWS), 0.0)
    return pd.DataFrame(cols)


@pytest.fixture(scope="module")
def models(spark, tmp_path_factory):
    """(spec, the served model loaded as the scorer loads it, its bounds, the pre-bounds network)."""
    from customer_value.config import load_config
    from tests.conftest import ROOT

    cfg = load_config(ROOT / "conf" / "local.yaml")
    spec = feature_spec(cfg.features, {f.name: f.dataType.simpleString() for f in features_schema(cfg).fields})
    rng = np.random.default_rng(3)
    rows = _training_rows(spec, rng)
    spec = fit_stats(spark.createDataFrame(rows), spec)
    trained = build_network(spec, NET)
    x = arrays_of(spec, rows[spec.numeric_inputs].to_numpy(np.float32), rows[spec.sequence_inputs].to_numpy(np.float32))
    sigma = np.logaddexp(0.0, np.asarray(trained(x, training=False)[SPEND], np.float64)[..., 2]).ravel()
    bounds = spend_bounds(spec.stats["spend_labels"], sigma, 0.5, 1.0)
    path = tmp_path_factory.mktemp("bounded") / "saved_model"
    served(trained, spec, NET, bounds).save(str(path), include_optimizer=False)
    # the network as it was: the raw deviation (no floor), no clipping to the training range, no bounds
    old_stats = {k: v for k, v in spec.stats.items() if k not in ("numeric_min", "numeric_max")}
    old_stats["numeric_std"] = [float(s) or 1.0 for s in rows[spec.numeric_inputs].std(ddof=0)]
    old_spec = type(spec)(spec.columns, spec.sequence_length, old_stats)
    old = build_network(old_spec, NET)
    for layer in trained.layers:
        if layer.weights and "norm" not in layer.name:
            old.get_layer(layer.name).set_weights(layer.get_weights())
    model = load_saved_model(str(path))
    return spec, model, bounds, old, Attributor(model, spec, 2, spend_cap=bounds["spend_cap"])


def arrays_of(spec, numeric: np.ndarray, sequence: np.ndarray) -> dict[str, np.ndarray]:
    n = len(numeric)
    return {"numeric": numeric.astype(np.float32), "sequence": sequence.astype(np.float32),
            **{f"cat_{c}": np.arange(n, dtype=np.int32) % 3 for c in spec.categorical_inputs}}


def extreme_rows(spec, choices: list[list[str]], seq_choice: list[str]) -> dict[str, np.ndarray]:
    """Network inputs of rows whose every numeric feature is 0, its training maximum, 100× it, or missing, and
    whose order sequence is empty, at the training maxima, or at 100× them."""
    names = spec.numeric_inputs
    index = {n: i for i, n in enumerate(names)}
    high = np.asarray(spec.stats["numeric_max"])
    numeric = np.zeros((len(choices), len(names)))
    for r, row in enumerate(choices):
        for c, choice in zip(spec.of(NUMERIC), row):
            i = index[c.name]
            if choice == "max":
                numeric[r, i] = high[i]
            elif choice == "x100":      # 100 × the raw maximum, after the spec's sign·log1p
                numeric[r, i] = math.copysign(math.log1p(100 * math.expm1(abs(high[i]))), high[i] or 1.0)
            elif choice == "missing" and f"{c.name}__missing" in index:
                numeric[r, index[f"{c.name}__missing"]] = 1.0
    n_ch = len(SEQUENCE_CHANNELS)
    seq_max = max(spec.stats["sequence_mean"]) + 5 * max(spec.stats["sequence_std"])
    sequence = np.zeros((len(choices), len(spec.sequence_inputs)))
    for r, choice in enumerate(seq_choice):
        if choice != "zero":
            value = seq_max if choice == "max" else math.log1p(100 * math.expm1(seq_max))
            for p in range(spec.sequence_length):
                sequence[r, p * (n_ch + 1):(p + 1) * (n_ch + 1)] = [value] * n_ch + [1.0]
    return arrays_of(spec, numeric, sequence)


def violations(model, attributor, bounds, arrays) -> list[str]:
    """What is wrong with the scorer's outputs for these rows: non-finite values, amounts above the cap or
    below 0, the spend parameters outside their bounds, the reasons' expected spend above the cap."""
    cap = bounds["spend_cap"]
    out = predict_arrays(model, arrays, spend_cap=cap)
    problems = [f"{k} not finite" for k, v in out.items() if not np.isfinite(v).all()]
    for k in ("predicted_spend", "spend_p10", "spend_p90", "spend_if_buying_p10", "spend_if_buying_p90"):
        if (out[k] > cap * (1 + 1e-9)).any() or (out[k] < 0).any():
            problems.append(f"{k} outside [0, {cap:.0f}]: {out[k].max():.4g}")
    for k in ("buy_probability", "churn_probability"):
        if ((out[k] < 0) | (out[k] > 1)).any():
            problems.append(f"{k} outside [0, 1]")
    logits = np.asarray(model(arrays, training=False)[SPEND], np.float64)
    low, high = logit_bounds(bounds)
    slack = 1e-4 * (1 + np.abs(high - low))
    if ((logits < low - slack) | (logits > high + slack)).any():
        problems.append(f"spend parameters outside their bounds: {logits.min(axis=tuple(range(logits.ndim - 1)))}, "
                        f"{logits.max(axis=tuple(range(logits.ndim - 1)))}")
    expected, _ = attributor.expected(arrays)
    if not np.isfinite(expected).all() or (expected > cap * (1 + 1e-6)).any():
        problems.append(f"the reasons' expected spend outside [0, {cap:.0f}]: {expected.max():.4g}")
    return problems


def test_every_feature_at_one_extreme_stays_inside_the_bounds(models):
    spec, model, bounds, _, attributor = models
    k = len(spec.of(NUMERIC))
    arrays = extreme_rows(spec, [[c] * k for c in CHOICES], ["zero", "max", "x100", "zero"])
    assert violations(model, attributor, bounds, arrays) == []
    # the scale's floor: no training value is more than MAX_SD deviations from the mean
    z = (np.asarray(spec.stats["numeric_max"]) - spec.stats["numeric_mean"]) / np.asarray(spec.stats["numeric_std"])
    assert np.abs(z).max() <= MAX_SD + 1e-9


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(data=st.data())
def test_any_mix_of_extremes_stays_inside_the_bounds(models, data):
    spec, model, bounds, _, attributor = models
    k = len(spec.of(NUMERIC))
    rows = data.draw(st.lists(st.lists(st.sampled_from(CHOICES), min_size=k, max_size=k), min_size=1, max_size=4))
    seq = data.draw(st.lists(st.sampled_from(("zero", "max", "x100")), min_size=len(rows), max_size=len(rows)))
    assert violations(model, attributor, bounds, extreme_rows(spec, rows, seq)) == []


def test_the_network_before_the_bounds_fails_the_same_check(models):
    """The counter-test: the same rows through the pre-bounds network (the raw deviation puts the rare event
    hundreds of deviations out; nothing clips it or the spend parameters) give amounts above the largest spend
    in the training labels (33 times it here) and spend parameters outside the bounds: the check fails."""
    spec, _, bounds, old, _ = models
    k = len(spec.of(NUMERIC))
    arrays = extreme_rows(spec, [[c] * k for c in CHOICES], ["zero", "max", "x100", "zero"])
    problems = violations(old, Attributor(old, spec, 2), {**bounds, "spend_cap": math.inf}, arrays)
    assert any("spend parameters outside their bounds" in p for p in problems), problems
    out = predict_arrays(old, arrays)
    assert out["predicted_spend"].max() > 10 * bounds["spend_cap"], out["predicted_spend"]
