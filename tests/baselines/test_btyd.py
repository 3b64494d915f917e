"""BG/NBD and Gamma-Gamma: parameter recovery on simulated data, the likelihoods and predictions against
first-principles numerical integration and an event-by-event simulation, invariants, and input checks."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import integrate, stats
from scipy.special import betaincinv, gammaincinv

from customer_value.baselines.btyd import (
    BgNbd,
    GammaGamma,
    aggregate,
    bgnbd_log_likelihood,
    expected_purchases,
    expected_spend_per_order,
    fit_bgnbd,
    fit_gamma_gamma,
    gamma_gamma_log_likelihood,
    probability_alive,
    probability_no_purchase,
    simulate_bgnbd,
    simulate_gamma_gamma,
)

# The CDNOW-like setting of Fader, Hardie & Lee (2005), in weeks.
TRUE_BG = BgNbd(r=0.25, alpha=4.4, a=0.8, b=2.4)
TRUE_GG = GammaGamma(p=6.0, q=3.7, gamma=15.0)
N_CUSTOMERS = 50_000


def rel_err(got: float, want: float) -> float:
    return abs(got - want) / abs(want)


@pytest.fixture(scope="module")
def cdnow_like():
    """50,000 simulated customers, each observed for 30 to 39 weeks after the first purchase."""
    rng = np.random.default_rng(20050101)
    T = rng.uniform(30, 39, N_CUSTOMERS)
    x, t_x = simulate_bgnbd(TRUE_BG, T, rng)
    return x, t_x, T


@pytest.fixture(scope="module")
def fitted(cdnow_like) -> BgNbd:
    return fit_bgnbd(*cdnow_like)


# ---------------------------------------------------------------------------------------------------------------
# 1-3. Parameter recovery, and fitting on aggregated counts
# ---------------------------------------------------------------------------------------------------------------


def test_bgnbd_recovers_the_simulation_parameters(fitted):
    # Across 40 seeds at this size the largest relative errors were 4% (r), 6% (alpha), 15% (a), 19% (b):
    # r/alpha are sharp, a/b (the dropout mix) much less so.
    tolerance = {"r": 0.10, "alpha": 0.10, "a": 0.25, "b": 0.25}
    for name, tol in tolerance.items():
        assert rel_err(getattr(fitted, name), getattr(TRUE_BG, name)) < tol, (name, fitted)


def test_bgnbd_fit_is_a_maximum_of_the_weighted_likelihood(cdnow_like, fitted):
    base = bgnbd_log_likelihood(fitted, *cdnow_like).sum()
    for name in ("r", "alpha", "a", "b"):
        for factor in (0.99, 1.01):
            moved = replace(fitted, **{name: getattr(fitted, name) * factor})
            assert bgnbd_log_likelihood(moved, *cdnow_like).sum() < base, (name, factor)


def test_fit_on_aggregated_counts_equals_fit_on_rows(cdnow_like):
    x, t_x, T = cdnow_like
    t_x, T = np.round(t_x), np.round(T)  # whole weeks, so many customers share a row
    (ux, ut_x, uT), counts = aggregate(x, t_x, T)
    assert len(counts) < len(x) / 10 and counts.sum() == len(x)

    on_rows = fit_bgnbd(x, t_x, T)
    on_counts = fit_bgnbd(ux, ut_x, uT, counts)
    for name in ("r", "alpha", "a", "b"):
        assert rel_err(getattr(on_counts, name), getattr(on_rows, name)) < 1e-4, (name, on_rows, on_counts)
    # The counts matter: the distinct rows alone are a different sample.
    unweighted = fit_bgnbd(ux, ut_x, uT)
    assert max(rel_err(getattr(unweighted, n), getattr(on_rows, n)) for n in ("r", "alpha", "a", "b")) > 0.1


def test_aggregate_counts_distinct_rows_and_keeps_dtypes():
    a = np.array([1, 2, 1, 1, 2, 3])
    b = np.array([0.5, 0.5, 0.5, 0.25, 0.5, 0.5])
    (ua, ub), counts = aggregate(a, b)
    assert ua.dtype == a.dtype and ub.dtype == b.dtype
    got = {(int(i), float(j)): int(c) for i, j, c in zip(ua, ub, counts)}
    assert got == {(1, 0.25): 1, (1, 0.5): 2, (2, 0.5): 2, (3, 0.5): 1}
    (ua, _), summed = aggregate(a, b, weights=np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0]))
    assert summed.tolist() == [4.0, 4.0, 7.0, 6.0]


def test_fit_does_not_depend_on_the_time_unit(cdnow_like):
    x, t_x, T = (v[:5000] for v in cdnow_like)
    weeks = fit_bgnbd(x, t_x, T)
    days = fit_bgnbd(x, 7 * t_x, 7 * T)
    assert rel_err(days.alpha, 7 * weeks.alpha) < 1e-4
    for name in ("r", "a", "b"):
        assert rel_err(getattr(days, name), getattr(weeks, name)) < 1e-4, name


def test_penalizer_rescues_a_fit_the_data_cannot_identify():
    # One customer cannot pin down four parameters: the likelihood keeps rising towards a boundary.
    with pytest.raises(ValueError, match="did not converge"):
        fit_bgnbd([1], [1.0], [1.0])
    fit = fit_bgnbd([1], [1.0], [1.0], penalizer=0.1)
    assert all(1e-3 < v < 1e3 for v in (fit.r, fit.alpha, fit.a, fit.b))


def test_gamma_gamma_recovers_the_simulation_parameters(cdnow_like):
    x = cdnow_like[0]
    rng = np.random.default_rng(7)
    m = simulate_gamma_gamma(TRUE_GG, x, rng)
    assert np.all(m[x == 0] == 0) and np.all(m[x > 0] > 0)
    fit = fit_gamma_gamma(x, m)  # the x == 0 rows (m == 0) are left out by the fit
    # ~21,000 customers with repeat orders. Across 40 seeds the largest relative errors were 10% (p), 4% (q),
    # 15% (gamma), 1.3% (population mean order value p * gamma / (q - 1)): p and gamma trade off along a ridge.
    tolerance = {"p": 0.2, "q": 0.1, "gamma": 0.3}
    for name, tol in tolerance.items():
        assert rel_err(getattr(fit, name), getattr(TRUE_GG, name)) < tol, (name, fit)
    mean = expected_spend_per_order(fit, 0, 0.0)
    assert rel_err(mean, TRUE_GG.p * TRUE_GG.gamma / (TRUE_GG.q - 1)) < 0.03
    assert fit == fit_gamma_gamma(x[x > 0], m[x > 0])


# ---------------------------------------------------------------------------------------------------------------
# 4. Likelihoods and predictions against numerical integration over the mixing distributions
# ---------------------------------------------------------------------------------------------------------------


def mix_bgnbd(params: BgNbd, f) -> float:
    """Integral of f(lam, p) over lam ~ Gamma(r, rate alpha), p ~ Beta(a, b), by scipy's adaptive dblquad.

    Integrated over the two distributions' quantiles (lam = G^-1(u), p = B^-1(v) on the unit square), which takes
    the densities' singularities at 0 (r < 1, a < 1) and the infinite range of lam out of the integrand.
    """

    def integrand(v, u):
        return f(gammaincinv(params.r, u) / params.alpha, betaincinv(params.a, params.b, v))

    return integrate.dblquad(integrand, 0, 1, 0, 1, epsabs=1e-13, epsrel=1e-10)[0]


def individual_likelihood(x, t_x, T):
    """L(lam, p | x, t_x, T) of FHL (2005): alive throughout, or dropped out right after the last purchase."""

    def f(lam, p):
        alive = (1 - p) ** x * lam**x * np.exp(-lam * T)
        dropped = p * (1 - p) ** (x - 1) * lam**x * np.exp(-lam * t_x) if x > 0 else 0.0
        return alive + dropped

    return f


CASES = [  # params, (x, t_x, T), horizon; a == 1 takes the quadrature path of expected_purchases
    (BgNbd(r=0.5, alpha=2.0, a=1.0, b=3.0), (2, 5.0, 10.0), 8.0),
    (BgNbd(r=0.5, alpha=2.0, a=1.0, b=3.0), (0, 0.0, 10.0), 8.0),
    (BgNbd(r=2.5, alpha=7.0, a=0.6, b=1.7), (4, 8.5, 12.0), 20.0),
    (BgNbd(r=2.5, alpha=7.0, a=0.6, b=1.7), (1, 0.5, 12.0), 20.0),
    (BgNbd(r=0.8, alpha=3.0, a=2.2, b=4.0), (3, 11.0, 12.0), 5.0),
    (BgNbd(r=0.8, alpha=3.0, a=1.0005, b=4.0), (2, 6.0, 12.0), 8.0),  # a near 1: quadrature path too
]


@pytest.mark.parametrize(("params", "row", "horizon"), CASES)
def test_bgnbd_log_likelihood_matches_numerical_integration(params, row, horizon):
    want = np.log(mix_bgnbd(params, individual_likelihood(*row)))
    assert bgnbd_log_likelihood(params, *row) == pytest.approx(want, abs=1e-6)


@pytest.mark.parametrize(("params", "row", "horizon"), CASES)
def test_predictions_match_numerical_integration(params, row, horizon):
    # From first principles: a customer alive at T buys like a new one (memoryless), and a customer with rate lam
    # and dropout p makes (1 - exp(-lam p t)) / p purchases in the next t on average (FHL 2005 eq. 7).
    x, t_x, T = row

    def alive_at_T(lam, p):  # the "still alive" part of the individual likelihood
        return (1 - p) ** x * lam**x * np.exp(-lam * T)

    evidence = mix_bgnbd(params, individual_likelihood(*row))
    alive = mix_bgnbd(params, alive_at_T)
    buys = mix_bgnbd(params, lambda lam, p: alive_at_T(lam, p) * -np.expm1(-lam * p * horizon) / p)
    # No purchase in the horizon: dropped out already, or alive and the next purchase comes later.
    none = evidence - mix_bgnbd(params, lambda lam, p: alive_at_T(lam, p) * -np.expm1(-lam * horizon))
    assert probability_alive(params, *row) == pytest.approx(alive / evidence, rel=1e-6)
    assert expected_purchases(params, horizon, *row) == pytest.approx(buys / evidence, rel=1e-6)
    assert probability_no_purchase(params, horizon, *row) == pytest.approx(none / evidence, rel=1e-6)


@pytest.mark.parametrize(
    ("params", "row", "horizon", "want"),
    [  # FHL eq. 10 evaluated by mpmath at 60 digits; scipy's own hyp2f1 returns nan on these (C - A - B whole)
        (BgNbd(r=1.0, alpha=1.0, a=1.0, b=2.0), (98, 0.0, 0.0), 10.0, 236.48338283423594),
        (BgNbd(r=1.5, alpha=1.0, a=1.5, b=2.0), (120, 4.99, 5.0), 200.0, 199.98351060920385),
        (BgNbd(r=0.5, alpha=2.0, a=2.5, b=1.0), (150, 49.9, 50.0), 2000.0, 99.043076932823304),
    ],
)
def test_expected_purchases_where_scipy_hyp2f1_fails(params, row, horizon, want):
    assert expected_purchases(params, horizon, *row) == pytest.approx(want, rel=1e-10)


@pytest.mark.parametrize("x", [0, 1, 7, 60])
def test_closed_form_and_quadrature_agree_where_they_meet(x):
    t_x, T = (0.0, 40.0) if x == 0 else (30.0, 40.0)
    # expected_purchases integrates instead of using FHL eq. 10 for |a - 1| < 1e-3: no jump there.
    horizons = np.array([10.0, 100.0, 3000.0])
    for side in (-1, 1):
        closed = expected_purchases(BgNbd(r=0.7, alpha=5.0, a=1 + side * 1.000001e-3, b=2.0), horizons, x, t_x, T)
        quad = expected_purchases(BgNbd(r=0.7, alpha=5.0, a=1 + side * 0.999999e-3, b=2.0), horizons, x, t_x, T)
        np.testing.assert_allclose(quad, closed, rtol=1e-7)
    # ... and for horizons short enough that eq. 10 would cancel, below |a-1| z (r+x) = 1e-4 (a+b+x-1),
    # z = h / (alpha+T+h). E is all but proportional to h there, so E(h+) / E(h-) = h+ / h- across the switch.
    params = BgNbd(r=0.7, alpha=5.0, a=1.5, b=2.0)
    z = 1e-4 * (params.a + params.b + x - 1) / (0.5 * (params.r + x))
    h = z * (params.alpha + T) / (1 - z) * np.array([1 - 1e-6, 1 + 1e-6])
    e = expected_purchases(params, h, x, t_x, T)
    assert e[1] / e[0] == pytest.approx(h[1] / h[0], rel=1e-8)


@pytest.mark.parametrize(("x", "m"), [(3, 20.0), (1, 4.0), (12, 31.5)])
def test_gamma_gamma_log_likelihood_matches_numerical_integration(x, m):
    params = GammaGamma(p=6.0, q=3.7, gamma=15.0)

    # The sum of x orders is Gamma(p x, rate nu), so their mean m has density x * Gamma(p x, rate nu).pdf(x m).
    def integrand(nu):
        mean_density = x * stats.gamma.pdf(x * m, params.p * x, scale=1 / nu)
        return mean_density * stats.gamma.pdf(nu, params.q, scale=1 / params.gamma)

    want = np.log(integrate.quad(integrand, 0, np.inf, epsabs=1e-15, epsrel=1e-12, limit=200)[0])
    assert gamma_gamma_log_likelihood(params, x, m) == pytest.approx(want, abs=1e-6)


# ---------------------------------------------------------------------------------------------------------------
# Predictions against an independent, event-by-event simulation
# ---------------------------------------------------------------------------------------------------------------


def simulate_events(params: BgNbd, T: np.ndarray, horizon: float, rng: np.random.Generator):
    """Purchase by purchase: calibration (x, t_x), whether alive at T, and purchases in (T, T + horizon]."""
    n = len(T)
    lam = rng.gamma(params.r, 1 / params.alpha, n)
    p = rng.beta(params.a, params.b, n)
    now, x, t_x, future = np.zeros(n), np.zeros(n, dtype=int), np.zeros(n), np.zeros(n, dtype=int)
    alive_at_T = np.ones(n, dtype=bool)
    going = lam > 0
    while going.any():
        i = np.flatnonzero(going)
        now[i] += rng.exponential(size=len(i)) / lam[i]
        past, ahead = now[i] <= T[i], (now[i] > T[i]) & (now[i] <= T[i] + horizon)
        x[i[past]] += 1
        t_x[i[past]] = now[i[past]]
        future[i[ahead]] += 1
        drops = rng.random(len(i)) < p[i]
        alive_at_T[i[drops & past]] = False
        going[i[drops | (now[i] > T[i] + horizon)]] = False
    return x, t_x, alive_at_T, future


def test_predictions_match_simulated_futures():
    rng = np.random.default_rng(11)
    T, horizon = rng.uniform(30, 39, 100_000), 26.0
    x, t_x, alive, future = simulate_events(TRUE_BG, T, horizon, rng)
    p_alive = probability_alive(TRUE_BG, x, t_x, T)
    expected = expected_purchases(TRUE_BG, horizon, x, t_x, T)
    p_none = probability_no_purchase(TRUE_BG, horizon, x, t_x, T)
    silent_long = (x > 0) & (T - t_x > 10)
    groups = {"all": x >= 0, "no repeat": x == 0, "recent buyers": (x > 0) & ~silent_long,
              "long silent": silent_long, "frequent": x >= 5}
    for name, g in groups.items():
        assert g.sum() > 2000, name
        se = future[g].std() / np.sqrt(g.sum())
        assert abs(future[g].mean() - expected[g].mean()) < 4 * se, name
        for outcome, predicted in ((alive, p_alive), (future == 0, p_none)):
            se = outcome[g].std() / np.sqrt(g.sum()) + 1e-3
            assert abs(outcome[g].mean() - predicted[g].mean()) < 4 * se, name
    # simulate_bgnbd (a different algorithm) gives the same calibration data.
    x2, t_x2 = simulate_bgnbd(TRUE_BG, T, rng)
    for a, b in ((x, x2), (t_x, t_x2), (x == 0, x2 == 0)):
        se = np.hypot(a.std(), b.std()) / np.sqrt(len(T))
        assert abs(a.mean() - b.mean()) < 4 * se


def test_expected_spend_matches_simulated_customers():
    rng = np.random.default_rng(5)
    n, params = 200_000, TRUE_GG
    x = rng.integers(1, 8, n)
    nu = rng.gamma(params.q, 1 / params.gamma, n)
    m = rng.gamma(params.p * x, 1 / nu) / x
    truth = params.p / nu  # each customer's own mean order value
    expected = expected_spend_per_order(params, x, m)
    low = m < np.median(m)
    for g in (x == 1, x == 7, low, ~low, (x >= 5) & low):
        se = truth[g].std() / np.sqrt(g.sum())
        assert abs(truth[g].mean() - expected[g].mean()) < 4 * se
    assert expected_spend_per_order(params, 0, np.nan) == pytest.approx(params.p * params.gamma / (params.q - 1))


# ---------------------------------------------------------------------------------------------------------------
# 5. Invariants
# ---------------------------------------------------------------------------------------------------------------

positive = st.floats(0.01, 50.0)
histories = st.tuples(st.integers(0, 500), st.floats(0.0, 1.0), st.floats(0.0, 2000.0))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(r=positive, alpha=st.floats(0.01, 1000.0), a=positive, b=positive, history=histories,
       horizon=st.floats(1e-6, 5000.0), more=st.floats(0.0, 5000.0), later=st.floats(0.0, 5000.0))
def test_prediction_invariants(r, alpha, a, b, history, horizon, more, later):
    params = BgNbd(r=r, alpha=alpha, a=a, b=b)
    x, share, T = history
    t_x = share * T if x > 0 else 0.0

    alive = probability_alive(params, x, t_x, T)
    assert 0 <= alive <= 1  # 0 only by underflow, for histories like 500 purchases long ago
    if x == 0:
        assert alive == 1
    elif t_x > 0:
        assert probability_alive(params, x, t_x, T + later) <= alive

    assert expected_purchases(params, 0.0, x, t_x, T) == 0
    assert probability_no_purchase(params, 0.0, x, t_x, T) == 1
    n1 = probability_no_purchase(params, horizon, x, t_x, T)
    assert 1 - alive <= n1 <= 1 and probability_no_purchase(params, horizon + more, x, t_x, T) <= n1
    e1 = expected_purchases(params, horizon, x, t_x, T)
    e2 = expected_purchases(params, horizon + more, x, t_x, T)
    assert np.isfinite(e1) and np.isfinite(e2)
    assert 0 <= e1 <= e2 * (1 + 1e-8)
    # A live customer buys at most at their rate, whose posterior mean is (r + x) / (alpha + T).
    assert e1 <= alive * horizon * (r + x) / (alpha + T) * (1 + 1e-8)


def test_predictions_broadcast_and_move_the_right_way():
    params = TRUE_BG
    horizons = np.array([0.0, 1.0, 10.0, 100.0, 1000.0])
    e = expected_purchases(params, horizons, 3, 20.0, 30.0)
    assert e.shape == (5,) and e[0] == 0 and np.all(np.diff(e) > 0)
    p = probability_alive(params, 3, 20.0, np.array([20.0, 30.0, 60.0, 300.0]))
    assert p[0] < 1 and np.all(np.diff(p) < 0)
    # More purchases in the same time, or a more recent last purchase, mean more expected purchases.
    assert expected_purchases(params, 10.0, 6, 20.0, 30.0) > expected_purchases(params, 10.0, 3, 20.0, 30.0)
    assert expected_purchases(params, 10.0, 3, 29.0, 30.0) > expected_purchases(params, 10.0, 3, 20.0, 30.0)


def test_simulate_bgnbd_output_is_consistent():
    rng = np.random.default_rng(3)
    T = rng.uniform(0, 50, 10_000)
    x, t_x = simulate_bgnbd(TRUE_BG, T, rng)
    assert x.dtype == np.int64 and x.shape == T.shape
    assert np.all((t_x <= T) & (t_x >= 0)) and np.all((t_x == 0) == (x == 0))


# ---------------------------------------------------------------------------------------------------------------
# 6. Bad input
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("x", "t_x", "T", "message"),
    [
        ([1, 2], [3.0, 6.0], [5.0, 5.0], "t_x .* must not exceed T"),
        ([1, -1], [3.0, 0.0], [5.0, 5.0], "x must be >= 0"),
        ([1.5, 1], [3.0, 1.0], [5.0, 5.0], "whole numbers"),
        ([1, 1], [-1.0, 1.0], [5.0, 5.0], "t_x must be >= 0"),
        ([1, 1], [1.0, np.nan], [5.0, 5.0], "missing or infinite"),
        ([], [], [], "empty"),
        ([1, 2], [1.0], [5.0, 5.0], "same length"),
        ([0, 0], [0.0, 0.0], [5.0, 5.0], "no repeat purchases"),
    ],
)
def test_fit_bgnbd_rejects_bad_input(x, t_x, T, message):
    with pytest.raises(ValueError, match=message):
        fit_bgnbd(x, t_x, T)


def test_other_bad_input_is_rejected():
    with pytest.raises(ValueError, match="t_x .* must not exceed T"):
        bgnbd_log_likelihood(TRUE_BG, 1, 6.0, 5.0)
    with pytest.raises(ValueError, match="weights"):
        fit_bgnbd([1, 2], [1.0, 1.0], [2.0, 2.0], weights=[1.0, -1.0])
    with pytest.raises(ValueError, match="penalizer"):
        fit_bgnbd([1, 2], [1.0, 1.0], [2.0, 2.0], penalizer=-1.0)
    with pytest.raises(ValueError, match="horizon"):
        expected_purchases(TRUE_BG, -1.0, 1, 1.0, 2.0)
    with pytest.raises(ValueError, match="horizon"):
        probability_no_purchase(TRUE_BG, np.nan, 1, 1.0, 2.0)
    with pytest.raises(ValueError, match="positive"):
        BgNbd(r=0.0, alpha=1.0, a=1.0, b=1.0)
    with pytest.raises(ValueError, match="x >= 1 and m > 0"):
        fit_gamma_gamma([0, 2], [0.0, -3.0])
    with pytest.raises(ValueError, match="empty"):
        fit_gamma_gamma([], [])
    with pytest.raises(ValueError, match="x >= 1"):
        gamma_gamma_log_likelihood(TRUE_GG, 0, 10.0)
    with pytest.raises(ValueError, match="q > 1"):
        expected_spend_per_order(GammaGamma(p=1.0, q=0.9, gamma=1.0), 1, 10.0)


def test_bgnbd_log_likelihood_by_hand():
    # x = 0: only "alive all along", L = (alpha / (alpha + T))^r = (2 / 12)^0.5 = 0.4082483
    # x = 1, t_x = 4, T = 10 (r = 0.5, alpha = 2, a = 1, b = 3), FHL eq. 6:
    #   A = Gamma(r + x) alpha^r / (Gamma(r) (alpha + T)^(r + x)) = 0.5 * sqrt(2) / 12^1.5 = 0.0170103
    #   B(a, b + x) / B(a, b) = (1/4) / (1/3) = 0.75;  B(a + 1, b + x - 1) / B(a, b) = (1/12) / (1/3) = 0.25
    #   ((alpha + T) / (alpha + t_x))^(r + x) = 2^1.5 = 2.8284271
    #   L = A * (0.75 + 0.25 * 2.8284271) = 0.0170103 * 1.4571068 = 0.02478589
    params = BgNbd(r=0.5, alpha=2.0, a=1.0, b=3.0)
    got = bgnbd_log_likelihood(params, np.array([0.0, 1.0]), np.array([0.0, 4.0]), np.array([10.0, 10.0]))
    assert np.exp(got) == pytest.approx([0.40824829, 0.02478589], rel=1e-6)
