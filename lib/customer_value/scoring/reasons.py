"""Top reasons: which features raised or lowered a customer's expected spend, by how much, in money.

Method: integrated gradients (Sundararajan, Taly & Yan 2017) of the expected spend the scorer reports (the
towers' mean of P(buy)·exp(μ + (k·σ)²/2), `models.ziln.expected_spend`), from a reference customer to this one:

    attribution_i = (x_i − b_i) · mean over α of ∂E/∂x_i (b + α (x − b))

Why this method: it is exact for a linear model (the attribution is the weight times the input's distance from
the reference, nothing else), and for the network it is complete, the attributions add up to E(x) − E(b), so
the amounts are in the currency of the expected spend and a reason's sign says which way that feature moved
this customer's value. Gradients of the model the scorer already holds, batched with the prediction: no
second model, no sampling. The integral is a midpoint rule over `steps` points (1: the gradient at the
midpoint).

Completeness by construction: the expected spend is exponential along the path, and a midpoint rule with a few
points misses its integral by a third on the product's network at 2 points (half at 1; 3 % at 16:
`make bench-scoring` prints it). So the quadrature's attributions are scaled to add up to the exact E(x) − E(b),
from one more forward pass at the reference. That keeps the property for a linear model (the quadrature is exact
there: a factor of 1) and makes one point exact for a log-linear one (E = exp(w·x), the ZILN head's shape: every
point's gradient is proportional to w, so the ratios between features are exact and only the total needed
fixing). Where scaling is ill-conditioned (a factor outside [1/10, 10], or negative: the quadrature's sum near 0
or of the other sign), the residual is spread in proportion to each attribution's size instead.

Reference b: the training split's average customer: every numeric input at its training mean (0 after the
model's normalisation) and every position of the order sequence at the training mean of its channel, present.
Categorical inputs stay at the customer's own value (an embedding has no meaningful straight path), so they
never appear as a reason; so do shop-level context features (the season index: the same for every customer of
a snapshot, it says when, not who). Inputs are grouped to the feature they come from: a feature and its missing flag are
one reason; the order sequence is one reason per channel.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from customer_value.models.spec import SEQUENCE_CHANNELS, FeatureSpec

SEQUENCE_PRESENCE = "seq_orders_present"


def reason_groups(spec: FeatureSpec) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(group names, numeric input → group index, sequence input → group index)."""
    names: list[str] = []
    index: dict[str, int] = {}

    def group(name: str) -> int:
        if name not in index:
            index[name] = len(names)
            names.append(name)
        return index[name]

    numeric = np.array([group(n.removesuffix("__missing")) for n in spec.numeric_inputs], dtype=np.int64)
    channels = [*SEQUENCE_CHANNELS, SEQUENCE_PRESENCE]
    sequence = np.array([group(channels[i % len(channels)]) for i in range(len(spec.sequence_inputs))], dtype=np.int64)
    return names, numeric, sequence


def reference_inputs(spec: FeatureSpec) -> tuple[np.ndarray, np.ndarray]:
    """The reference customer's numeric and sequence inputs (before the model's normalisation)."""
    st = spec.stats
    numeric = np.asarray(st["numeric_mean"], dtype=np.float32)
    per_position = np.asarray([*st["sequence_mean"], 1.0], dtype=np.float32)
    return numeric, np.tile(per_position, spec.sequence_length)


MAX_SCALE = 10.0


def complete(an, aseq, gap):
    """Attributions [n, inputs] (numeric, sequence) made to add up to `gap` = E(x) − E(b) per row: scaled by
    gap / their sum where that factor is positive and within [1/MAX_SCALE, MAX_SCALE]; elsewhere the residual
    spread over the inputs in proportion to each attribution's size."""
    import tensorflow as tf

    total = tf.reduce_sum(an, axis=1) + tf.reduce_sum(aseq, axis=1)
    size = tf.reduce_sum(tf.abs(an), axis=1) + tf.reduce_sum(tf.abs(aseq), axis=1)
    factor = gap / tf.where(tf.abs(total) > 0, total, 1.0)
    scalable = (tf.abs(total) > 0) & (factor >= 1.0 / MAX_SCALE) & (factor <= MAX_SCALE)
    factor = tf.where(scalable, factor, 1.0)[:, None]
    spread = tf.where(scalable | (size <= 0), 0.0, (gap - total) / tf.where(size > 0, size, 1.0))[:, None]
    return an * factor + spread * tf.abs(an), aseq * factor + spread * tf.abs(aseq)


class Attributor:
    """Expected spend and its integrated-gradient attributions for batches of a SavedModel's inputs."""

    def __init__(self, model, spec: FeatureSpec, steps: int = 4, mean_scale: float = 1.0,
                 fixed: Sequence[str] = (), spend_cap: float = math.inf, level_scale: float = 1.0) -> None:
        """`fixed`: features whose reference is the customer's own value, so they are never a reason (shop-level
        context such as the season: one value for every customer of a snapshot, not what sets them apart).
        `spend_cap`, `level_scale`: the artifact's cap on the expected spend and its level, applied here too so
        the reasons add up to the published amount."""
        import tensorflow as tf

        self.names, numeric_group, sequence_group = reason_groups(spec)
        # input -> reason group as 0/1 matrices: one matmul sums a batch's attributions per group
        self._to_groups_n = np.eye(len(self.names))[numeric_group]
        self._to_groups_s = np.eye(len(self.names))[sequence_group]
        self.ref_numeric, self.ref_sequence = reference_inputs(spec)
        self.steps = steps
        self.mean_scale, self.spend_cap, self.level_scale = mean_scale, spend_cap, level_scale
        cap = tf.constant(min(spend_cap, 3e38), tf.float32)
        level = tf.constant(level_scale, tf.float32)
        alphas = tf.constant((np.arange(steps, dtype=np.float32) + 0.5) / steps)
        k2 = tf.constant(mean_scale * mean_scale, tf.float32)
        ref_n, ref_s = tf.constant(self.ref_numeric), tf.constant(self.ref_sequence)
        keep_own = tf.constant([n.removesuffix("__missing") in set(fixed) for n in spec.numeric_inputs])

        def expected_of(logits):
            if logits.shape.rank == 2:
                logits = logits[:, None, :]
            p = tf.sigmoid(logits[..., 0])
            sigma = tf.maximum(tf.nn.softplus(logits[..., 2]), 1e-3)
            return tf.minimum(level * tf.reduce_mean(
                p * tf.exp(tf.minimum(logits[..., 1] + 0.5 * k2 * sigma * sigma, 80.0)), axis=1), cap)

        def expected(inputs):
            return expected_of(model(inputs, training=False)["spend"])

        @tf.function(reduce_retracing=True)
        def attribute(inputs):
            numeric, sequence = inputs["numeric"], inputs["sequence"]
            n = tf.shape(numeric)[0]
            base_n = tf.where(keep_own[None, :], numeric, ref_n[None, :])     # [n, inputs]
            dn, ds = numeric - base_n, sequence - ref_s
            a = tf.reshape(tf.repeat(alphas, n), [-1, 1])           # step-major: [steps * n, 1]
            others = {k: v for k, v in inputs.items() if k not in ("numeric", "sequence")}
            path = {k: tf.tile(v, tf.concat([[steps], tf.ones(tf.rank(v) - 1, tf.int32)], 0))
                    for k, v in others.items()}
            pn = tf.tile(base_n, [steps, 1]) + a * tf.tile(dn, [steps, 1])
            ps = tf.tile(ref_s[None, :], [steps * n, 1]) + a * tf.tile(ds, [steps, 1])
            with tf.GradientTape() as tape:
                tape.watch([pn, ps])
                e_path = expected({**path, "numeric": pn, "sequence": ps})
            gn, gs = tape.gradient(e_path, [pn, ps], unconnected_gradients=tf.UnconnectedGradients.ZERO)
            an = dn * tf.reduce_mean(tf.reshape(gn, [steps, n, -1]), axis=0)
            aseq = ds * tf.reduce_mean(tf.reshape(gs, [steps, n, -1]), axis=0)
            out = model(inputs, training=False)
            gap = expected_of(out["spend"]) - expected({**others, "numeric": base_n,
                                                        "sequence": tf.tile(ref_s[None, :], [n, 1])})
            an, aseq = complete(an, aseq, gap)
            return out["spend"], out["churn"], an, aseq

        self._attribute = attribute

    def __call__(self, arrays: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(spend logits, churn logits, attributions per reason group [n, groups]), float64: the model's own
        outputs at x come from the same traced call, so scoring with reasons runs the forward pass once."""
        spend, churn, an, aseq = (np.asarray(t, dtype=np.float64) for t in self._attribute(arrays))
        return spend, churn, an @ self._to_groups_n + aseq @ self._to_groups_s

    def expected(self, arrays: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(expected spend [n], attributions per reason group [n, groups])."""
        from customer_value.models.deep import predictions

        spend, churn, groups = self(arrays)
        return predictions(spend, churn, mean_scale=self.mean_scale, spend_cap=self.spend_cap,
                           level_scale=self.level_scale)["predicted_spend"], groups


def top_reasons(names: list[str], amounts: np.ndarray, top: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per row, the `top` groups with the largest |amount|, largest first: (names per rank, amounts per rank)."""
    k = min(top, amounts.shape[1])
    order = np.argsort(-np.abs(amounts), axis=1, kind="stable")[:, :k]
    labels = np.asarray(names, dtype=object)
    rows = np.arange(len(amounts))
    return [labels[order[:, r]] for r in range(k)], [amounts[rows, order[:, r]] for r in range(k)]


def with_blend(amounts: np.ndarray, numeric: np.ndarray, names: list[str], ref_numeric: np.ndarray,
               blend_weight: float, blend_columns: tuple[int, int] | None, level_scale: float) -> np.ndarray:
    """The network's attributions [n, groups] made those of the served amount where it blends with BG/NBD
    (`models.blend`: level · (w · network + (1 − w) · BG/NBD), the network alone where BG/NBD has no figure):
    the network's scaled by w on the rows that blend, and BG/NBD's share, level · (1 − w) · (BG/NBD's amount −
    the reference's), given to the reason of its input (`btyd_expected_spend`), so they still add up to the
    served amount minus the reference's. Unchanged where w = 1."""
    if blend_weight >= 1.0 or blend_columns is None:
        return amounts
    from customer_value.models.blend import BASELINE_INPUT, baseline_from_numeric

    base = baseline_from_numeric(numeric, blend_columns)
    ref = float(baseline_from_numeric(np.asarray(ref_numeric, np.float64)[None, :], blend_columns)[0])
    ref = 0.0 if math.isnan(ref) else ref
    blends = ~np.isnan(base)
    out = amounts * np.where(blends, blend_weight, 1.0)[:, None]
    out[:, names.index(BASELINE_INPUT)] += np.where(blends, level_scale * (1.0 - blend_weight) *
                                                    (np.nan_to_num(base) - ref), 0.0)
    return out
