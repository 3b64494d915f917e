"""A network with known weights: the trunk's heads silenced, the wide path carrying exactly what a test sets.

expected spend = sigmoid(10) · exp(MU0 + w · z + σ²/2) with σ = softplus(-5), churn = sigmoid(C0 + v · z), where z
is the normalised numeric input: so every score, and every integrated-gradient reason, has a closed form."""

from __future__ import annotations

import numpy as np

from customer_value.models.network import CHURN, SPEND, NetworkConfig, build_network
from customer_value.models.spec import (CATEGORICAL, NUMERIC, SEQUENCE, SEQUENCE_CHANNELS, FeatureColumn,
                                        FeatureSpec)

MU0, C0, P_LOGIT, SIGMA_RAW = 3.0, -0.5, 10.0, -5.0


def spec() -> FeatureSpec:
    s = FeatureSpec([FeatureColumn("spend", NUMERIC, "double", "zero"),
                     FeatureColumn("recency", NUMERIC, "double", "indicator"),
                     FeatureColumn("channel", CATEGORICAL, "string", "unknown"),
                     *[FeatureColumn(c, SEQUENCE, "array", "pad") for c in SEQUENCE_CHANNELS]], sequence_length=2)
    s.stats = {"numeric_mean": [3.0, 2.0, 0.2], "numeric_std": [1.5, 1.0, 0.4],
               "sequence_mean": [1.0] * len(SEQUENCE_CHANNELS), "sequence_std": [1.0] * len(SEQUENCE_CHANNELS),
               "vocabularies": {"channel": ["web", "app"]}}
    return s


W = np.array([0.8, -0.5, 0.3], dtype=np.float32)        # μ's weights on the normalised spend, recency, missing flag
V = np.array([-0.6, 0.9, 0.4], dtype=np.float32)        # churn logit's weights


def model(s: FeatureSpec | None = None):
    s = s or spec()
    m = build_network(s, NetworkConfig(hidden=(4,), sequence_units=2, embedding_dim=2, dropout=0.0, wide=True))
    head = m.get_layer(f"{SPEND}_head")
    head.set_weights([np.zeros_like(head.get_weights()[0]), np.array([P_LOGIT, MU0, SIGMA_RAW], np.float32)])
    churn = m.get_layer(f"{CHURN}_head")
    churn.set_weights([np.zeros_like(churn.get_weights()[0]), np.array([C0], np.float32)])
    spend_wide = np.zeros((3, 3), np.float32)
    spend_wide[:, 1] = W
    m.get_layer(f"{SPEND}_wide").set_weights([spend_wide])
    m.get_layer(f"{CHURN}_wide").set_weights([V.reshape(3, 1)])
    return m


def normalised(numeric: np.ndarray, s: FeatureSpec | None = None) -> np.ndarray:
    st = (s or spec()).stats
    return (np.asarray(numeric, np.float64) - st["numeric_mean"]) / st["numeric_std"]


def expected_spend(z: np.ndarray) -> np.ndarray:
    sigma = np.log1p(np.exp(SIGMA_RAW))
    return 1 / (1 + np.exp(-P_LOGIT)) * np.exp(MU0 + z @ W + sigma**2 / 2)


def churn_probability(z: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-(C0 + z @ V)))


def exact_reasons(z: np.ndarray) -> np.ndarray:
    """The integral itself: along the straight path from z = 0, E(t) = E(0)·exp(t·a) with a = w·z, so the
    attribution of input i is w_i z_i (E(z) − E(0)) / a; per reason group [spend, recency (+ its flag)]."""
    a = z @ W
    per_input = W * z * ((expected_spend(z) - expected_spend(np.zeros_like(z))) / a)[:, None]
    return np.stack([per_input[:, 0], per_input[:, 1] + per_input[:, 2]], axis=1)
