"""The served amount's blend with BG/NBD (`models.blend`): the weight chosen by spend MAE one horizon ahead, the
ranking kept, BG/NBD's amount read back exactly from the network's inputs, the reasons still adding up."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from customer_value.evaluation.metrics import normalised_gini
from customer_value.models.blend import baseline_columns, baseline_from_numeric, blended, fit_blend


def shop(seed: int, n: int = 4000):
    """Customers whose spend in the horizon follows a known rate: `truth` is their expectation, as a baseline
    that is the true process would give."""
    rng = np.random.default_rng(seed)
    truth = rng.gamma(0.6, 60.0, n)
    buys = rng.random(n) < 1 - np.exp(-truth / 40.0)
    actual = np.where(buys, rng.gamma(4.0, truth / 4.0 + 5.0), 0.0)
    return rng, truth, actual


def test_a_baseline_that_is_the_true_process_takes_weight_from_a_noisy_network():
    rng, truth, actual = shop(1)
    network = truth * rng.lognormal(0.0, 0.9, len(truth)) * 1.3        # right order, noisy amounts, too high
    got = fit_blend(network, truth, actual, int((actual > 0).sum()), max_gini_loss=1.0)
    table = {r["w"]: r for r in got["table"]}
    assert got["weight"] < 0.5
    assert table[got["weight"]]["mae"] < table[1.0]["mae"]
    # the chosen level matches the blend's total to the actual one
    assert got["level_scale"] * blended(network, truth, got["weight"]).sum() == pytest.approx(actual.sum())


def test_a_network_better_than_the_baseline_keeps_its_weight():
    rng, truth, actual = shop(2)
    baseline = truth * rng.lognormal(0.0, 1.2, len(truth))             # the worse one here
    got = fit_blend(truth, baseline, actual, int((actual > 0).sum()))
    assert got["weight"] >= 0.9


def test_the_ranking_the_network_earns_is_kept():
    """A baseline with a smaller MAE but a worse order: the weights that lose more Gini than allowed are not taken."""
    rng, truth, actual = shop(3)
    baseline = rng.permutation(truth)                      # the right amounts' spread, no order at all
    network = truth * np.random.default_rng(5).lognormal(0.0, 1.5, len(truth))       # the order, amounts far off
    free = fit_blend(network, baseline, actual, int((actual > 0).sum()), max_gini_loss=1.0)
    kept = fit_blend(network, baseline, actual, int((actual > 0).sum()), max_gini_loss=0.005)
    own = kept["table"][-1]
    assert free["weight"] < kept["weight"]
    chosen = next(r for r in kept["table"] if r["w"] == kept["weight"])
    assert chosen["gini"] >= own["gini"] - 0.005


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.floats(0.0, 2.0), st.floats(0.0, 1.0), st.floats(0.0, 2.0), st.floats(0.0, 0.05))
def test_the_choice_is_never_worse_than_the_network_alone(seed, noise, shuffled, network_noise, loss):
    """Whatever the two models' errors (the baseline's amounts noisy, part of its order lost, the network's
    amounts noisy), the chosen weight's MAE is at most the network's and its Gini within the allowed loss."""
    rng, truth, actual = shop(seed, 600)
    network = truth * rng.lognormal(0.0, network_noise, len(truth))
    baseline = truth * rng.lognormal(0.0, noise, len(truth))
    moved = np.flatnonzero(rng.random(len(truth)) < shuffled)
    baseline[moved] = baseline[rng.permutation(moved)]
    baseline[rng.random(len(truth)) < 0.2] = np.nan                    # no purchase yet: no BG/NBD figure
    got = fit_blend(network, baseline, actual, int((actual > 0).sum()), max_gini_loss=loss)
    own, chosen = got["table"][-1], next(r for r in got["table"] if r["w"] == got["weight"])
    assert own["w"] == 1.0
    assert chosen["mae"] <= own["mae"]
    assert chosen["gini"] >= own["gini"] - loss - 1e-12
    assert normalised_gini(actual, got["level_scale"] * blended(network, baseline, got["weight"])) == \
        pytest.approx(chosen["gini"])


def test_a_customer_without_a_purchase_gets_the_network_amount():
    np.testing.assert_allclose(blended(np.array([10.0, 20.0]), np.array([np.nan, 40.0]), 0.25), [10.0, 35.0])
    np.testing.assert_array_equal(blended(np.array([10.0, 20.0]), None, 0.25), [10.0, 20.0])


def test_the_baseline_is_read_back_from_the_inputs_the_spec_writes():
    names = ["recency_days", "btyd_expected_spend", "recency_days__missing", "btyd_expected_spend__missing"]
    columns = baseline_columns(names)
    assert columns == (1, 3) and baseline_columns(names[:1]) is None
    spend = np.array([0.0, 12.34, 5_000.0, 0.0])
    numeric = np.zeros((4, 4), np.float32)
    numeric[:, 1] = (np.sign(spend) * np.log1p(np.abs(spend))).astype(np.float32)   # as spec.transformed writes it
    numeric[3, 3] = 1.0                                                              # null: no purchase yet
    got = baseline_from_numeric(numeric, columns)
    np.testing.assert_allclose(got[:3], spend[:3], rtol=1e-6)
    assert np.isnan(got[3])


def test_predictions_serve_the_levelled_blend_under_the_cap():
    from customer_value.models.deep import predictions

    lg = np.array([[2.0, 5.0, 0.3], [1.0, 4.0, 0.5], [0.5, 9.0, 0.5]])
    ch = np.zeros((3, 1))
    numeric = np.array([[np.log1p(100.0), 0.0], [0.0, 1.0], [np.log1p(50.0), 0.0]], np.float32)
    network = predictions(lg, ch)["predicted_spend"]
    got = predictions(lg, ch, spend_cap=6000.0, level_scale=0.8, blend_weight=0.25, blend_columns=(0, 1),
                      numeric=numeric)["predicted_spend"]
    assert got[0] == pytest.approx(0.8 * (0.25 * network[0] + 0.75 * 100.0), rel=1e-6)
    assert got[1] == pytest.approx(0.8 * network[1])                                  # no BG/NBD figure
    assert got[2] == pytest.approx(min(6000.0, 0.8 * (0.25 * network[2] + 0.75 * 50.0)), rel=1e-6)
    with pytest.raises(ValueError, match="blend"):
        predictions(lg, ch, blend_weight=0.25, blend_columns=(0, 1))


def test_the_reasons_add_up_to_the_blend():
    """Where the served amount blends, the network's reasons scaled by w plus BG/NBD's share (on its own reason)
    add up to the served amount minus the reference's."""
    from customer_value.scoring.reasons import with_blend

    names = ["recency_days", "btyd_expected_spend"]
    numeric = np.array([[1.0, np.log1p(80.0), 0.0], [2.0, 0.0, 1.0]], np.float32)
    ref = np.array([0.0, np.log1p(30.0), 0.0], np.float32)
    amounts = np.array([[5.0, 3.0], [-2.0, 1.0]])
    got = with_blend(amounts, numeric, names, ref, 0.4, (1, 2), 1.5)
    np.testing.assert_allclose(got[0], [0.4 * 5.0, 0.4 * 3.0 + 1.5 * 0.6 * (80.0 - 30.0)], rtol=1e-5)
    np.testing.assert_allclose(got[1], amounts[1])                                    # no BG/NBD figure: unchanged
    np.testing.assert_array_equal(with_blend(amounts, numeric, names, ref, 1.0, (1, 2), 1.5), amounts)
