"""The ZILN loss and its summaries against hand computations."""

import math

import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

from customer_value.models.ziln import expected_spend, spend_quantile, spend_quantile_if_buying, ziln_loss


def softplus(x):
    return math.log1p(math.exp(x))


def hand_loss(y, l0, mu, raw_sigma):
    p = 1 / (1 + math.exp(-l0))
    sigma = softplus(raw_sigma)
    if y == 0:
        return -math.log(1 - p)
    log_pdf = -math.log(y) - math.log(sigma) - 0.5 * math.log(2 * math.pi) - (math.log(y) - mu) ** 2 / (2 * sigma**2)
    return -math.log(p) - log_pdf


CASES = [(0.0, 0.3, 1.0, 0.2), (0.0, -2.0, 4.0, -1.0), (25.0, 0.5, 3.0, 0.1), (310.0, -1.2, 5.5, 0.7), (1.0, 2.0, 0.0, 0.0)]


def test_loss_matches_a_hand_computation():
    y = tf.constant([c[0] for c in CASES], tf.float32)
    logits = tf.constant([c[1:] for c in CASES], tf.float32)
    got = ziln_loss(y, logits).numpy()
    want = [hand_loss(*c) for c in CASES]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_loss_of_a_buyer_is_the_lognormal_likelihood():
    """Against scipy's lognormal density, not our own formula: a typo in either term would show."""
    y, l0, mu, raw = 40.0, 0.0, 3.2, 0.4
    sigma = softplus(raw)
    want = -math.log(0.5) - stats.lognorm(s=sigma, scale=math.exp(mu)).logpdf(y)
    got = float(ziln_loss(tf.constant([y]), tf.constant([[l0, mu, raw]]))[0])
    assert got == pytest.approx(want, rel=1e-5)


def test_expected_spend_and_quantiles():
    logits = np.array([[0.0, 3.0, 0.5], [2.0, 1.0, -0.3]])
    p = 1 / (1 + np.exp(-logits[:, 0]))
    sigma = np.log1p(np.exp(logits[:, 2]))
    np.testing.assert_allclose(expected_spend(logits), p * np.exp(logits[:, 1] + sigma**2 / 2), rtol=1e-12)
    for q in (0.1, 0.9):
        np.testing.assert_allclose(spend_quantile_if_buying(logits, q),
                                   stats.lognorm(s=sigma, scale=np.exp(logits[:, 1])).ppf(q), rtol=1e-9)
    # the whole distribution: zero below P(no purchase); above it the lognormal's quantile of the rest
    np.testing.assert_allclose(spend_quantile(logits, 0.1), [0.0, 0.0])
    q = 0.9
    inner = (q - (1 - p)) / p
    np.testing.assert_allclose(spend_quantile(logits, q), stats.lognorm(s=sigma, scale=np.exp(logits[:, 1])).ppf(inner),
                               rtol=1e-9)


def test_interval_covers_eighty_percent_of_simulated_buyers():
    rng = np.random.default_rng(3)
    mu, raw = 3.0, 0.2
    sigma = np.log1p(np.exp(raw))
    y = np.exp(rng.normal(mu, sigma, 200_000))
    lg = np.array([[0.0, mu, raw]])
    lo, hi = spend_quantile_if_buying(lg, 0.1)[0], spend_quantile_if_buying(lg, 0.9)[0]
    assert np.mean((y >= lo) & (y <= hi)) == pytest.approx(0.8, abs=0.005)


def test_interval_scale_calibrates_coverage_on_held_out_buyers():
    """Buyers' log spend with heavier tails than the model's normal (Student t, 3 dof): the raw interval is too
    wide in the middle; the calibrated one holds 80 % of fresh buyers. Non-buyers are ignored."""
    from customer_value.models.ziln import interval_scale

    rng = np.random.default_rng(5)
    n = 50_000
    mu = rng.normal(3, 1, n)
    raw = np.full(n, 0.3)
    sigma = np.log1p(np.exp(raw))
    y = np.exp(mu + sigma * rng.standard_t(3, n) / np.sqrt(3))     # t3 scaled to unit variance
    y[rng.random(n) < 0.5] = 0.0
    lg = np.stack([np.zeros(n), mu, raw], axis=1)
    buyers = y > 0

    def coverage(k):
        lo, hi = spend_quantile_if_buying(lg, 0.1, k), spend_quantile_if_buying(lg, 0.9, k)
        return np.mean((y[buyers] >= lo[buyers]) & (y[buyers] <= hi[buyers]))

    assert coverage(1.0) > 0.85                     # the likelihood's σ: too wide for the middle
    k = interval_scale(lg[: n // 2], y[: n // 2])
    assert k < 0.9
    fresh = np.arange(n) >= n // 2
    lo, hi = spend_quantile_if_buying(lg, 0.1, k), spend_quantile_if_buying(lg, 0.9, k)
    held = np.mean(((y >= lo) & (y <= hi))[fresh & buyers])
    assert held == pytest.approx(0.8, abs=0.01)


def test_towers_loss_is_the_mean_of_each_towers_loss():
    y = tf.constant([c[0] for c in CASES], tf.float32)
    a = tf.constant([c[1:] for c in CASES], tf.float32)
    b = a * 0.5 + 0.1
    both = ziln_loss(y, tf.stack([a, b], axis=1)).numpy()
    np.testing.assert_allclose(both, (ziln_loss(y, a).numpy() + ziln_loss(y, b).numpy()) / 2, rtol=1e-6)
    # and the ensemble's expected spend is the mean of the towers' expectations
    lg = np.stack([a.numpy(), b.numpy()], axis=1)
    np.testing.assert_allclose(expected_spend(lg), (expected_spend(a.numpy()) + expected_spend(b.numpy())) / 2)


def test_mean_scale_shrinks_sigma_until_the_held_out_totals_agree():
    """Buyers' log spend with a narrower spread than the model's σ: the likelihood's mean overstates the total;
    the calibrated k matches the held-out total on fresh rows too, never exceeds 1, and is 1 where the model's
    mean is already too low."""
    from customer_value.models.ziln import mean_scale

    rng = np.random.default_rng(8)
    n = 40_000
    mu = rng.normal(3, 0.5, n)
    raw = np.full(n, 1.0)                            # σ = softplus(1) ≈ 1.31 in the model
    y = np.exp(mu + 0.6 * rng.standard_normal(n))    # ... 0.6 in the data
    y[rng.random(n) < 0.5] = 0.0
    lg = np.stack([np.zeros(n), mu, raw], axis=1)     # P(buy) = 0.5, right
    half = n // 2
    assert expected_spend(lg[:half]).sum() > 1.3 * y[:half].sum()
    k = mean_scale(lg[:half], y[:half])
    assert k == pytest.approx(0.6 / np.log1p(np.e), abs=0.05)
    assert expected_spend(lg[half:], k).sum() == pytest.approx(y[half:].sum(), rel=0.03)
    assert mean_scale(lg[:half], 3 * y[:half]) == 1.0          # never inflates
    assert mean_scale(lg[:50], y[:50]) == 1.0                  # too few rows to tell


def test_level_scale_is_actual_over_predicted_within_its_range():
    from customer_value.models.ziln import LEVEL_RANGE, level_scale

    assert level_scale(1330.0, 1000.0, 500) == pytest.approx(1000.0 / 1330.0)
    assert level_scale(875.0, 1000.0, 500) == pytest.approx(1000.0 / 875.0)
    assert level_scale(100.0, 1000.0, 500) == LEVEL_RANGE[1]          # never more than doubles...
    assert level_scale(1000.0, 100.0, 500) == LEVEL_RANGE[0]          # ...or halves
    assert level_scale(1330.0, 1000.0, 19) == 1.0                     # too few buyers to tell
    assert level_scale(0.0, 1000.0, 500) == 1.0                       # nothing predicted: nothing to scale
    assert level_scale(float("inf"), 1000.0, 500) == 1.0


def test_the_level_scales_the_expected_spend_under_the_cap_and_not_the_interval():
    from customer_value.models.deep import predictions

    lg = np.array([[2.0, 5.0, 0.3], [1.0, 9.0, 0.5]])
    ch = np.zeros((2, 1))
    plain, levelled = predictions(lg, ch, spend_cap=6000.0), predictions(lg, ch, spend_cap=6000.0, level_scale=0.8)
    assert levelled["predicted_spend"][0] == pytest.approx(0.8 * plain["predicted_spend"][0])
    assert plain["predicted_spend"][1] == 6000.0 and levelled["predicted_spend"][1] == pytest.approx(
        min(6000.0, 0.8 * predictions(lg, ch)["predicted_spend"][1]))
    for k in ("spend_p10", "spend_p90", "spend_if_buying_p10", "spend_if_buying_p90", "buy_probability",
              "churn_probability"):
        np.testing.assert_array_equal(levelled[k], plain[k])


def test_the_level_noise_is_the_spread_of_the_measured_level_over_resampled_customers():
    """The delta method's standard error of log(Σ actual ÷ Σ predicted) against a bootstrap of the customers."""
    from customer_value.models.ziln import level_noise

    rng = np.random.default_rng(4)
    predicted = rng.gamma(0.5, 40.0, 3000)
    actual = np.where(rng.random(3000) < 0.3, rng.gamma(2.0, predicted + 10.0), 0.0)
    draws = [np.log(actual[i].sum() / predicted[i].sum()) for i in
             (rng.integers(0, 3000, 3000) for _ in range(2000))]
    assert level_noise(predicted, actual) == pytest.approx(np.std(draws), rel=0.1)
    assert level_noise(predicted[:1], actual[:1]) == math.inf


def test_a_level_within_the_checks_noise_is_not_applied():
    """A model right on average is left alone when one horizon's buyers put its total a little off by chance; one
    really off is corrected, as before."""
    from customer_value.models.ziln import checked_level, level_scale

    rng = np.random.default_rng(5)
    expected = rng.gamma(0.5, 40.0, 2500)
    actual = np.where(rng.random(2500) < 0.25, rng.gamma(1.5, expected * 4 / 1.5), 0.0)    # mean: the expectation
    buyers = int((actual > 0).sum())
    right = checked_level(expected, actual, buyers)
    assert right["measured"] == level_scale(expected.sum(), actual.sum(), buyers) != 1.0
    assert right["z"] < 2.0 and right["level_scale"] == 1.0
    high = checked_level(1.3 * expected, actual, buyers)
    assert high["z"] > 2.0 and high["level_scale"] == high["measured"] == pytest.approx(right["measured"] / 1.3)
    assert checked_level(1.3 * expected, actual, buyers, min_z=0.0)["level_scale"] == high["measured"]
