"""Integrated-gradient reasons: exact for a linear model, equal to the closed-form integral on a known network,
complete (they add up to the distance from the reference), and removing the top reason moves the value its way."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from customer_value.scoring.reasons import Attributor, complete, reason_groups, top_reasons
from tests.scoring import handmade


def arrays(numeric: np.ndarray, s) -> dict[str, np.ndarray]:
    n = len(numeric)
    rng = np.random.default_rng(0)
    return {"numeric": numeric.astype(np.float32), "cat_channel": np.ones(n, np.int32),
            "sequence": rng.random((n, len(s.sequence_inputs))).astype(np.float32)}


def some_customers(n=64, seed=3):
    rng = np.random.default_rng(seed)
    return np.column_stack([rng.normal(3, 1.5, n), rng.normal(2, 1, n), rng.integers(0, 2, n)]).astype(np.float32)


def test_groups_join_a_feature_and_its_missing_flag_and_each_sequence_channel():
    names, numeric, sequence = reason_groups(handmade.spec())
    assert names[:2] == ["spend", "recency"] and list(numeric) == [0, 1, 1]
    assert names[2:] == ["seq_days_before", "seq_amount", "seq_items", "seq_orders_present"]
    assert list(sequence) == [2, 3, 4, 5, 2, 3, 4, 5]


def test_exact_for_a_linear_model_at_one_step():
    """A 'model' whose expected spend is a + w·x: attributions are w_i (x_i − b_i), nothing else."""
    s = handmade.spec()
    w = np.array([2.0, -1.5, 4.0], np.float32)

    def linear(inputs, training=False):
        value = 50.0 + tf.linalg.matvec(inputs["numeric"], w)
        n = tf.shape(value)[0]
        return {"spend": tf.stack([tf.fill([n], 30.0), tf.math.log(value), tf.fill([n], -30.0)], axis=1),
                "churn": tf.zeros([n, 1])}

    x = some_customers()
    value, groups = Attributor(linear, s, steps=1).expected(arrays(x, s))
    ref = np.asarray(s.stats["numeric_mean"])
    per_input = w * (x - ref)
    np.testing.assert_allclose(value, 50.0 + x @ w, rtol=1e-4)
    np.testing.assert_allclose(groups[:, 0], per_input[:, 0], rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(groups[:, 1], per_input[:, 1] + per_input[:, 2], rtol=1e-3, atol=1e-3)
    assert np.abs(groups[:, 2:]).max() < 1e-4        # the sequence does not enter this model


@pytest.mark.parametrize("steps", [1, 2, 32])
def test_the_known_network_matches_the_closed_form_integral_and_is_complete(steps):
    """The known network is log-linear (E = exp(w·z + c)): the closed-form integral at any step count, one
    included, and the amounts add up to E(x) − E(reference)."""
    s = handmade.spec()
    x = some_customers()
    value, groups = Attributor(handmade.model(s), s, steps=steps).expected(arrays(x, s))
    z = handmade.normalised(x, s)
    np.testing.assert_allclose(value, handmade.expected_spend(z), rtol=1e-4)
    np.testing.assert_allclose(groups[:, :2], handmade.exact_reasons(z), rtol=2e-3, atol=1e-3)
    reference = handmade.expected_spend(np.zeros((1, 3)))[0]
    np.testing.assert_allclose(groups.sum(axis=1), value - reference, rtol=1e-4, atol=1e-3)


def test_completion_scales_where_it_can_and_spreads_the_rest():
    """Row 0: the quadrature's sum 4 against a gap of 6, scaled by 1.5 (ratios kept). Row 1: sum 0.1 of size
    3.9 against a gap of 5, a factor of 50: the residual 4.9 spread by size instead. Row 2: nothing to attribute."""
    an = tf.constant([[3.0, 1.0], [2.0, -1.9], [0.0, 0.0]])
    aseq = tf.zeros([3, 1])
    gap = tf.constant([6.0, 5.0, 0.0])
    got_n, got_s = (t.numpy() for t in complete(an, aseq, gap))
    np.testing.assert_allclose(got_n[0], [4.5, 1.5], rtol=1e-6)
    np.testing.assert_allclose(got_n[1], [2.0 + 4.9 * 2.0 / 3.9, -1.9 + 4.9 * 1.9 / 3.9], rtol=1e-5)
    np.testing.assert_allclose(got_n.sum(axis=1) + got_s.sum(axis=1), [6.0, 5.0, 0.0], atol=1e-5)


def test_removing_the_top_reason_moves_the_value_the_stated_way():
    s = handmade.spec()
    model = handmade.model(s)
    x = some_customers(200, seed=5)
    attributor = Attributor(model, s, steps=4)
    value, groups = attributor.expected(arrays(x, s))
    names, amounts = top_reasons(attributor.names, groups, 3)
    columns = {"spend": [0], "recency": [1, 2]}
    moved = x.copy()
    for i, name in enumerate(names[0]):
        moved[i, columns[name]] = np.asarray(s.stats["numeric_mean"])[columns[name]]   # back to the reference
    after, _ = attributor.expected(arrays(moved, s))
    sign = np.sign(amounts[0])
    assert (sign != 0).all()
    assert (np.sign(after - value) == -sign).all()   # a reason that raised the value: removing it lowers it


def test_top_reasons_are_ordered_by_size_and_keep_the_sign():
    names, amounts = top_reasons(["a", "b", "c", "d"], np.array([[1.0, -5.0, 3.0, 0.5], [0.0, 0.1, -0.2, 0.0]]), 3)
    assert [list(n) for n in zip(*names)] == [["b", "c", "a"], ["c", "b", "a"]]
    np.testing.assert_allclose(np.column_stack(amounts), [[-5.0, 3.0, 1.0], [-0.2, 0.1, 0.0]])


def test_a_fixed_feature_is_never_a_reason_and_the_rest_stay_complete():
    """A shop-level feature keeps the customer's own value as its reference: zero amount, and the others add up
    to E(x) − E(reference with that feature at x)."""
    s = handmade.spec()
    x = some_customers()
    attributor = Attributor(handmade.model(s), s, steps=2, fixed=["recency"])
    value, groups = attributor.expected(arrays(x, s))
    assert np.abs(groups[:, 1]).max() == 0.0
    z = handmade.normalised(x, s)
    base = z.copy()
    base[:, 0] = 0.0                       # spend at the reference; recency and its flag at the customer's own
    np.testing.assert_allclose(groups.sum(axis=1), value - handmade.expected_spend(base), rtol=1e-4, atol=1e-3)


def test_with_a_level_the_reasons_add_up_to_the_levelled_amount():
    """The artifact's level (`ziln.level_scale`) scales the published amount; the reasons scale with it, so they
    still add up to E(x) − E(reference), both levelled."""
    s = handmade.spec()
    x = some_customers()
    value, groups = Attributor(handmade.model(s), s, steps=4, level_scale=0.75).expected(arrays(x, s))
    z = handmade.normalised(x, s)
    np.testing.assert_allclose(value, 0.75 * handmade.expected_spend(z), rtol=1e-4)
    reference = 0.75 * handmade.expected_spend(np.zeros((1, 3)))[0]
    np.testing.assert_allclose(groups.sum(axis=1), value - reference, rtol=1e-4, atol=1e-3)
