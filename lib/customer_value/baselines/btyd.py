"""BG/NBD purchase counts and Gamma-Gamma spend per order ("buy till you die"), fitted by maximum likelihood.

The classic probabilistic CLV baseline that the learned models have to beat:

* BG/NBD (Fader, Hardie & Lee 2005, "Counting your customers the easy way"): while alive a customer buys as a
  Poisson process with rate lambda ~ Gamma(r, alpha); after each repeat purchase they drop out for good with
  probability p ~ Beta(a, b).
* Gamma-Gamma (Fader & Hardie, "The Gamma-Gamma model of monetary value"): order values are Gamma(p, nu) with
  nu ~ Gamma(q, gamma) per customer, independent of the purchase process.

Hand-written on numpy/scipy because no maintained CLV library fits the pinned stack *and* fits on weighted rows.
We fit on millions of customers by collapsing identical (x, t_x, T) rows into counts (`aggregate`) and passing the
counts as weights, so fit time grows with the number of distinct rows, not with the number of customers.

Notation: `x` is the number of repeat purchases (the first purchase is not counted), `t_x` the time of the last
repeat purchase (0 if none) and `T` the time from the first purchase to the end of the calibration period, both
measured from the first purchase in whatever unit the caller uses (our features use days); `m` is the mean value
of the x repeat purchases. Fits optimise the log of the parameters, so they stay positive without constraints.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize
from scipy.special import betaln, digamma, expit, gammaln, hyp2f1, roots_legendre

__all__ = [
    "BgNbd",
    "GammaGamma",
    "aggregate",
    "bgnbd_log_likelihood",
    "expected_purchases",
    "expected_spend_per_order",
    "fit_bgnbd",
    "fit_gamma_gamma",
    "gamma_gamma_log_likelihood",
    "probability_alive",
    "probability_no_purchase",
    "simulate_bgnbd",
    "simulate_gamma_gamma",
]

# Log-parameters are kept within this distance of the starting point; a fit that ends on that box did not find a
# maximum (the likelihood keeps rising as a parameter runs off to 0 or infinity), so it is reported as failed.
_LOG_BOX = np.log(1e8)
# Largest gradient of the mean negative log-likelihood (per unit of weight, in log-parameters) accepted as a maximum.
_GRAD_TOL = 1e-6
# Within this distance of a = 1 (or of a + b = 1 for x == 0) FHL eq. 10 is 0/0; expected_purchases integrates instead,
# as it does where the closed form cancels too much (see _CANCELLATION).
_NEAR_POLE = 1e-3
_CANCELLATION = 1e-4
_NODES, _NODE_WEIGHTS = roots_legendre(64)


@dataclass(frozen=True)
class BgNbd:
    """BG/NBD parameters: purchase rate lambda ~ Gamma(shape r, rate alpha), dropout p ~ Beta(a, b).

    alpha is in the caller's time unit (r / alpha is the mean purchase rate); r, a and b have no unit.
    """

    r: float
    alpha: float
    a: float
    b: float

    def __post_init__(self) -> None:
        _check_positive(self, ("r", "alpha", "a", "b"))


@dataclass(frozen=True)
class GammaGamma:
    """Gamma-Gamma parameters: order value ~ Gamma(shape p, rate nu), nu ~ Gamma(shape q, rate gamma).

    gamma is in the caller's currency; the population mean order value p * gamma / (q - 1) exists only for q > 1.
    """

    p: float
    q: float
    gamma: float

    def __post_init__(self) -> None:
        _check_positive(self, ("p", "q", "gamma"))


def _check_positive(params: object, names: tuple[str, ...]) -> None:
    for name in names:
        value = getattr(params, name)
        if not (np.isfinite(value) and value > 0):
            raise ValueError(f"{type(params).__name__}.{name} must be a positive finite number, got {value!r}")


# --------------------------------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------------------------------


def _rfm(x, t_x, T) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x, t_x, T as broadcast float arrays, or a ValueError that says which rule the data break."""
    x, t_x, T = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (x, t_x, T)))
    for name, v in (("x", x), ("t_x", t_x), ("T", T)):
        if not np.all(np.isfinite(v)):
            raise ValueError(f"{name} has missing or infinite values")
        if np.any(v < 0):
            raise ValueError(f"{name} must be >= 0, got a minimum of {v.min()}")
    if np.any(x != np.floor(x)):
        raise ValueError("x (the number of repeat purchases) must be whole numbers")
    if np.any(t_x > T):
        i = int(np.argmax(t_x > T))
        raise ValueError(
            f"t_x (time of the last repeat purchase) must not exceed T (time since the first purchase); "
            f"first bad row {i}: t_x={t_x.flat[i]}, T={T.flat[i]}"
        )
    return x, t_x, T


def _x_m(x, m) -> tuple[np.ndarray, np.ndarray]:
    x, m = np.broadcast_arrays(np.asarray(x, dtype=float), np.asarray(m, dtype=float))
    if np.any(~np.isfinite(x)) or np.any(x < 0) or np.any(x != np.floor(x)):
        raise ValueError("x (the number of repeat purchases) must be whole numbers >= 0")
    return x, m


def _horizon(horizon) -> np.ndarray:
    t = np.asarray(horizon, dtype=float)
    if not np.all(np.isfinite(t)) or np.any(t < 0):
        raise ValueError("horizon must be finite and >= 0")
    return t


def _fit_weights(columns: dict[str, np.ndarray], weights) -> np.ndarray:
    """Checks that the columns are 1-D, of one length and not empty; the weights as an array (default 1)."""
    n = None
    for name, c in columns.items():
        if c.ndim != 1:
            raise ValueError(f"{name} must be a 1-D array, got shape {c.shape}")
        if n is not None and len(c) != n:
            raise ValueError(f"all inputs must have the same length; {name} has {len(c)}, expected {n}")
        n = len(c)
    if not n:
        raise ValueError("cannot fit on empty input (no rows)")
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=float)
    if w.shape != (n,):
        raise ValueError(f"weights must be a 1-D array of length {n}, got shape {w.shape}")
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError("weights must be finite and >= 0")
    if not np.any(w > 0):
        raise ValueError("all weights are zero: nothing to fit")
    return w


def _minimise(objective: Callable[[np.ndarray], tuple[float, np.ndarray]], theta0: np.ndarray,
              bounds: list[tuple[float, float]], what: str) -> np.ndarray:
    """Minimise with L-BFGS-B (analytic gradient); polish with Nelder-Mead if it stops short; check the result.

    The tolerances are tight on purpose: a fit on aggregated counts must land on the same point as a fit on the
    rows themselves, and L-BFGS-B's default ftol stops early on flat likelihoods.
    """
    options = {"maxiter": 5000, "ftol": 1e-15, "gtol": 1e-10}
    res = minimize(objective, theta0, jac=True, method="L-BFGS-B", bounds=bounds, options=options)
    theta = res.x
    if not _stationary(objective, theta):
        polish = minimize(lambda th: objective(th)[0], theta, method="Nelder-Mead", bounds=bounds,
                          options={"xatol": 1e-10, "fatol": 1e-15, "maxiter": 20000, "maxfev": 20000})
        theta = minimize(objective, polish.x, jac=True, method="L-BFGS-B", bounds=bounds, options=options).x
    value, grad = objective(theta)
    lo, hi = np.array(bounds).T
    if np.any(np.isclose(theta, lo, rtol=0, atol=1e-6)) or np.any(np.isclose(theta, hi, rtol=0, atol=1e-6)):
        raise ValueError(
            f"{what} fit did not converge: a parameter ran off towards 0 or infinity (log-parameters {theta}); "
            f"the data do not identify the model, try more data or a penalizer > 0"
        )
    if not (np.isfinite(value) and np.max(np.abs(grad)) <= _GRAD_TOL):
        raise ValueError(
            f"{what} fit did not converge: largest gradient {np.max(np.abs(grad)):.3g} at log-parameters {theta} "
            f"(optimiser said: {res.message})"
        )
    return theta


def _stationary(objective: Callable[[np.ndarray], tuple[float, np.ndarray]], theta: np.ndarray) -> bool:
    value, grad = objective(theta)
    return bool(np.isfinite(value) and np.max(np.abs(grad)) <= _GRAD_TOL)


def _box(theta0: np.ndarray) -> list[tuple[float, float]]:
    return [(float(t - _LOG_BOX), float(t + _LOG_BOX)) for t in theta0]


# --------------------------------------------------------------------------------------------------------------
# BG/NBD
# --------------------------------------------------------------------------------------------------------------


def _bgnbd_ll_grad(r: float, alpha: float, a: float, b: float, x: np.ndarray, t_x: np.ndarray, T: np.ndarray,
                   grad: bool) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
    """Per-row log-likelihood (FHL 2005 eq. 6) and, if asked, its derivatives in r, alpha, a, b.

    L = B(a, b+x)/B(a, b) * Gamma(r+x) alpha^r / Gamma(r) * [(alpha+T)^-(r+x) + [x>0] a/(b+x-1) (alpha+t_x)^-(r+x)],
    the bracket summed in log space (logaddexp) so long histories (large x, T) do not underflow.
    """
    died = x > 0
    xs = np.where(died, x, 1.0)  # keeps b + x - 1 > 0 in the branch that x == 0 rows do not use
    a1 = gammaln(r + x) - gammaln(r) + r * np.log(alpha)
    a2 = betaln(a, b + x) - betaln(a, b)
    a3 = -(r + x) * np.log(alpha + T)  # still alive at T
    a4 = np.where(died, np.log(a) - np.log(b + xs - 1) - (r + x) * np.log(alpha + t_x), -np.inf)  # dropped at t_x
    lse = np.logaddexp(a3, a4)
    ll = a1 + a2 + lse
    if not grad:
        return ll, None
    w3 = np.exp(a3 - lse)  # share of the likelihood from "still alive"
    w4 = np.exp(a4 - lse)  # share from "dropped out after the last purchase" (0 for x == 0)
    d_r = digamma(r + x) - digamma(r) + np.log(alpha) - w3 * np.log(alpha + T) - w4 * np.log(alpha + t_x)
    d_alpha = r / alpha - (r + x) * (w3 / (alpha + T) + w4 / (alpha + t_x))
    d_ab = digamma(a + b) - digamma(a + b + x)
    d_a = d_ab + w4 / a
    d_b = d_ab + digamma(b + x) - digamma(b) - w4 / (b + xs - 1)
    return ll, (d_r, d_alpha, d_a, d_b)


def bgnbd_log_likelihood(params: BgNbd, x, t_x, T) -> np.ndarray:
    """Log-likelihood of each customer's (x, t_x, T) under the BG/NBD model (FHL 2005 eq. 6).

    Per row so callers can weight, sum or compare customers; t_x is ignored where x == 0.
    """
    x, t_x, T = _rfm(x, t_x, T)
    return _bgnbd_ll_grad(params.r, params.alpha, params.a, params.b, x, t_x, T, grad=False)[0]


def fit_bgnbd(x, t_x, T, weights=None, *, penalizer: float = 0.0) -> BgNbd:
    """Maximum-likelihood BG/NBD parameters; `weights` count how many customers each row stands for.

    Maximises sum(w * ll) / sum(w) - penalizer * (log(r)^2 + log(a)^2 + log(b)^2). The penalty (0 = plain maximum
    likelihood) keeps r, a and b from running off to 0 or infinity on data with little heterogeneity or few
    dropouts, where the likelihood has no interior maximum; it is on the logs so it pulls towards 1 from both
    sides (a square on the parameters themselves would push a to 0, one of the runaway directions), and alpha is
    left out so the penalty does not depend on the time unit. Raises ValueError on empty or invalid input (negative or
    fractional x, negative times, t_x > T), when there are no repeat purchases at all, and when the optimiser
    does not reach a maximum.
    """
    if not (np.isfinite(penalizer) and penalizer >= 0):
        raise ValueError(f"penalizer must be a finite number >= 0, got {penalizer!r}")
    cols = {name: np.asarray(v, dtype=float) for name, v in (("x", x), ("t_x", t_x), ("T", T))}
    w = _fit_weights(cols, weights)
    x, t_x, T = _rfm(x, t_x, T)
    keep = w > 0  # rows that stand for no customer cost time and change nothing
    x, t_x, T, w = x[keep], t_x[keep], T[keep], w[keep]
    total, purchases, exposure = w.sum(), np.dot(w, x), np.dot(w, T)
    if purchases == 0 or exposure == 0:
        raise ValueError("no repeat purchases (or no time observed) in the data: BG/NBD cannot be fitted")

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        r, alpha, a, b = np.exp(theta)
        ll, d = _bgnbd_ll_grad(r, alpha, a, b, x, t_x, T, grad=True)
        shrunk = theta * [1.0, 0.0, 1.0, 1.0]  # log r, log a, log b; not alpha
        value = -np.dot(w, ll) / total + penalizer * np.dot(shrunk, shrunk)
        g = np.array([-np.dot(w, di) / total for di in d]) * np.exp(theta) + 2 * penalizer * shrunk
        return float(value), g

    # Start at r = a = b = 1 with the population's mean purchase rate r / alpha; alpha carries the time unit.
    theta0 = np.log([1.0, exposure / purchases, 1.0, 1.0])
    r, alpha, a, b = np.exp(_minimise(objective, theta0, _box(theta0), "BG/NBD"))
    return BgNbd(r=float(r), alpha=float(alpha), a=float(a), b=float(b))


def _log_odds_dropped(params: BgNbd, x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> np.ndarray:
    """log P(dropped | data) - log P(alive | data); -inf for x == 0 (BG/NBD customers only drop after a purchase)."""
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    died = x > 0
    xs = np.where(died, x, 1.0)
    odds = np.log(a) - np.log(b + xs - 1) + (r + x) * np.log1p((T - t_x) / (alpha + t_x))
    return np.where(died, odds, -np.inf)


def probability_alive(params: BgNbd, x, t_x, T) -> np.ndarray:
    """P(customer still alive at T | x, t_x, T): 1 for x == 0, falling the longer the silence since t_x."""
    x, t_x, T = _rfm(x, t_x, T)
    return expit(-_log_odds_dropped(params, x, t_x, T))


def _alive_growth_closed(r: float, alpha: float, a, b, x, T, t) -> np.ndarray:
    """E[purchases in (T, T+t] | alive at T] by FHL eq. 10 without its P(alive) denominator.

    Uses Euler's transformation 2F1(A, B; C; z) = (1-z)^(C-A-B) 2F1(C-A, C-B; C; z), which folds the factor
    ((alpha+T)/(alpha+T+t))^(r+x) = (1-z)^(r+x) into the function:
        (a+b+x-1)/(a-1) * [1 - (1-z)^(a-1) 2F1(a+b-1-r, a-1; a+b+x-1; z)],   z = t / (alpha+T+t).
    Its parameters no longer grow with x, which keeps it accurate for long, busy histories.
    """
    z = t / (alpha + T + t)
    log_1mz = -np.log1p(t / (alpha + T))
    c = a + b + x - 1
    bracket = -np.expm1((a - 1) * log_1mz) - np.exp((a - 1) * log_1mz) * (_hyp2f1(a + b - 1 - r, a - 1, c, z) - 1)
    return c / (a - 1) * bracket


def _alive_growth_quad(r: float, alpha: float, a, b, x, T, t) -> np.ndarray:
    """The same expectation by quadrature, valid everywhere, including where eq. 10 is 0/0 or cancels.

    Given alive, lambda ~ Gamma(r+x, alpha+T) and p ~ Beta(a, b+x), and E[purchases | lambda, p] =
    (1 - exp(-lambda p t)) / p, whose mean is (r+x) * integral_0^c 2F1(r+x+1, a; a+b+x; -s) ds with
    c = t / (alpha+T). With s = e^y - 1 and Pfaff's transformation (scipy's 2F1 is unreliable at -s < -1) the
    integrand is e^((1-a) y) 2F1(a, a+b-r-1; a+b+x; 1-e^-y): smooth, so 64 Gauss-Legendre nodes are plenty.
    """
    y_max = np.log1p(t / (alpha + T))[..., None]
    y = 0.5 * y_max * (_NODES + 1)
    f = np.exp((1 - a) * y) * _hyp2f1(a, (a + b - r - 1)[..., None], (a + b + x)[..., None], -np.expm1(-y))
    return (r + x) * 0.5 * y_max[..., 0] * (f @ _NODE_WEIGHTS)


def _hyp2f1(A, B, C, z) -> np.ndarray:
    """scipy's Gauss hypergeometric 2F1 for 0 <= z < 1, with a fallback where it returns nan.

    scipy 1.13 gives nan when C - A - B is a whole number, C is about 100 or more and z > 0.9 (its special
    branch for that case overflows). There C - A - B is large, so the plain series converges fast; sum it.
    """
    A, B, C, z = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (A, B, C, z)))
    out = np.array(hyp2f1(A, B, C, z), dtype=float)
    bad = ~np.isfinite(out)
    if bad.any():
        out[bad] = _gauss_series(A[bad], B[bad], C[bad], z[bad])
    return out


def _gauss_series(A: np.ndarray, B: np.ndarray, C: np.ndarray, z: np.ndarray, max_terms: int = 20_000) -> np.ndarray:
    """sum_n (A)_n (B)_n / ((C)_n n!) z^n, to full precision; nan where it has not converged by max_terms."""
    term, total = np.ones_like(z), np.ones_like(z)
    done = np.zeros(z.shape, dtype=bool)
    for n in range(max_terms):
        ratio = (A + n) * (B + n) / ((C + n) * (n + 1)) * z
        term = term * ratio
        total += np.where(done, 0.0, term)
        done |= (np.abs(term) <= 1e-17 * np.abs(total)) & (np.abs(ratio) < 1)
        if done.all():
            return total
    return np.where(done, total, np.nan)


def expected_purchases(params: BgNbd, horizon, x, t_x, T) -> np.ndarray:
    """Expected number of purchases in (T, T + horizon] given the history (x, t_x, T) (FHL 2005 eq. 10).

    `horizon` is in the same unit as T and broadcasts with the other arguments. Computed as P(alive) times the
    expected purchases of a live customer, both in forms that stay finite for T of hundreds of days and large x.
    """
    x, t_x, T = _rfm(x, t_x, T)
    t = _horizon(horizon)
    x, t_x, T, t = np.broadcast_arrays(x, t_x, T, t)
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    bb = np.broadcast_to(np.float64(b), x.shape)
    # Eq. 10 is (a+b+x-1)/(a-1) times a difference of two terms of size about |a-1| z (r+x) / (a+b+x-1)
    # (z = t / (alpha+T+t)), so it loses digits for short horizons and a near 1, and is 0/0 at a = 1 and at
    # a + b = 1 for x == 0. Those rows are integrated instead (slower, accurate everywhere).
    z = t / (alpha + T + t)
    c = a + b + x - 1
    near = ((abs(a - 1) < _NEAR_POLE) | (abs(a - 1) * z * (r + x) < _CANCELLATION * np.abs(c))
            | ((x == 0) & (abs(a + b - 1) < _NEAR_POLE)))
    growth = np.empty(x.shape)
    far = ~near
    growth[far] = _alive_growth_closed(r, alpha, a, bb[far], x[far], T[far], t[far])
    if near.any():
        growth[near] = _alive_growth_quad(r, alpha, a, bb[near], x[near], T[near], t[near])
    growth = np.where(t == 0, 0.0, growth)
    return expit(-_log_odds_dropped(params, x, t_x, T)) * growth


def probability_no_purchase(params: BgNbd, horizon, x, t_x, T) -> np.ndarray:
    """P(no purchase in (T, T + horizon] | x, t_x, T): a churn score on the same horizon as expected_purchases.

    Dropped-out customers never buy again; a live one's next purchase comes at rate lambda, whose posterior given
    alive is Gamma(r+x, alpha+T), so P(none) = 1 - P(alive) * (1 - ((alpha+T) / (alpha+T+horizon))^(r+x)).
    """
    x, t_x, T = _rfm(x, t_x, T)
    t = _horizon(horizon)
    buys_if_alive = -np.expm1(-(params.r + x) * np.log1p(t / (params.alpha + T)))
    return 1 - expit(-_log_odds_dropped(params, x, t_x, T)) * buys_if_alive


def simulate_bgnbd(params: BgNbd, T: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Draw (x, t_x) for customers observed for T each, from the BG/NBD generative story.

    Per customer: lambda ~ Gamma(r, rate alpha), p ~ Beta(a, b); repeat purchases arrive as a Poisson process and
    after each one the customer drops out with probability p. Returns the number of repeat purchases in (0, T]
    (int64) and the time of the last one (0 if none). Exact and vectorised: the number of purchases before
    dropout is geometric, and the k-th of n Poisson arrivals in (0, T] is T * Beta(k, n - k + 1).
    For tests and for checking the fit on data with known parameters.
    """
    T = np.asarray(T, dtype=float)
    if not np.all(np.isfinite(T)) or np.any(T < 0):
        raise ValueError("T must be finite and >= 0")
    shape, T = T.shape, T.ravel()
    n = T.size
    lam = rng.gamma(params.r, 1.0 / params.alpha, size=n)
    p = np.clip(rng.beta(params.a, params.b, size=n), 1e-12, 1.0)  # Beta draws can underflow to 0
    lifetime_purchases = rng.geometric(p)  # on {1, 2, ...}: dropout only ever follows a purchase
    arrivals = rng.poisson(lam * T)
    x = np.minimum(lifetime_purchases, arrivals).astype(np.int64)
    t_x = np.zeros(n)
    has = x > 0
    t_x[has] = T[has] * rng.beta(x[has], arrivals[has] - x[has] + 1)
    return x.reshape(shape), t_x.reshape(shape)


# --------------------------------------------------------------------------------------------------------------
# Gamma-Gamma
# --------------------------------------------------------------------------------------------------------------


def _gg_ll_grad(p: float, q: float, gamma: float, x: np.ndarray, m: np.ndarray,
                grad: bool) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
    """Per-row log density of the mean m of x order values (Fader & Hardie) and, if asked, its derivatives.

    f(m | x) = Gamma(px+q) / (Gamma(px) Gamma(q)) * gamma^q m^(px-1) x^px / (gamma + m x)^(px+q).
    """
    px = p * x
    log_gmx = np.log(gamma + m * x)
    ll = (gammaln(px + q) - gammaln(px) - gammaln(q) + q * np.log(gamma) + (px - 1) * np.log(m)
          + px * np.log(x) - (px + q) * log_gmx)
    if not grad:
        return ll, None
    psi = digamma(px + q)
    d_p = x * (psi - digamma(px) + np.log(m) + np.log(x) - log_gmx)
    d_q = psi - digamma(q) + np.log(gamma) - log_gmx
    d_gamma = q / gamma - (px + q) / (gamma + m * x)
    return ll, (d_p, d_q, d_gamma)


def gamma_gamma_log_likelihood(params: GammaGamma, x, m) -> np.ndarray:
    """Log-likelihood of each customer's mean order value m over x >= 1 repeat orders (m > 0)."""
    x, m = _x_m(x, m)
    if np.any(x < 1) or not np.all(np.isfinite(m)) or np.any(m <= 0):
        raise ValueError("the Gamma-Gamma likelihood needs x >= 1 and a finite m > 0 on every row")
    return _gg_ll_grad(params.p, params.q, params.gamma, x, m, grad=False)[0]


def fit_gamma_gamma(x, m, weights=None) -> GammaGamma:
    """Maximum-likelihood Gamma-Gamma parameters from repeat counts x and mean order values m.

    Only rows with x >= 1 and m > 0 are used: customers without repeat orders say nothing about order values,
    and the model has no zero or negative orders. q is fitted as 1 + exp(theta) so the population mean order
    value p * gamma / (q - 1), which predictions for new customers fall back on, always exists; a fit that
    ends at q -> 1 (very heavy-tailed spend) raises ValueError, as do empty input and non-convergence.
    """
    cols = {"x": np.asarray(x, dtype=float), "m": np.asarray(m, dtype=float)}
    w = _fit_weights(cols, weights)
    x, m = _x_m(x, m)
    use = (x >= 1) & np.isfinite(m) & (m > 0) & (w > 0)
    if not use.any():
        raise ValueError("no rows with x >= 1 and m > 0: Gamma-Gamma cannot be fitted")
    x, m, w = x[use], m[use], w[use]
    total = w.sum()

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        p, q1, gamma = np.exp(theta)
        ll, d = _gg_ll_grad(p, 1 + q1, gamma, x, m, grad=True)
        g = np.array([-np.dot(w, di) / total for di in d]) * np.array([p, q1, gamma])
        return float(-np.dot(w, ll) / total), g

    # Start at p = 1, q = 2 with the population mean order value p * gamma / (q - 1) equal to the sample's.
    theta0 = np.log([1.0, 1.0, np.dot(w, m) / total])
    p, q1, gamma = np.exp(_minimise(objective, theta0, _box(theta0), "Gamma-Gamma"))
    return GammaGamma(p=float(p), q=float(1 + q1), gamma=float(gamma))


def expected_spend_per_order(params: GammaGamma, x, m) -> np.ndarray:
    """Posterior mean order value: a credibility blend of the customer's own mean m and the population mean.

    E[order value | x, m] = p (gamma + x m) / (p x + q - 1); for x == 0 (m is ignored) this is the population
    mean p * gamma / (q - 1). Needs q > 1.
    """
    if params.q <= 1:
        raise ValueError(f"expected spend needs q > 1 (finite population mean), got q={params.q}")
    x, m = _x_m(x, m)
    has = x > 0
    if not np.all(np.isfinite(m[has])) or np.any(m[has] < 0):
        raise ValueError("m must be finite and >= 0 where x >= 1")
    p, q, gamma = params.p, params.q, params.gamma
    return p * (gamma + x * np.where(has, m, 0.0)) / (p * x + q - 1)


def simulate_gamma_gamma(params: GammaGamma, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Mean value of x simulated orders per customer: nu ~ Gamma(q, rate gamma), orders ~ Gamma(p, rate nu).

    0 where x == 0 (no repeat orders to average), the usual convention in RFM summaries.
    """
    x = np.asarray(x)
    if np.any(x < 0):
        raise ValueError("x must be >= 0")
    nu = rng.gamma(params.q, 1.0 / params.gamma, size=x.shape)
    has = x > 0
    xs = np.where(has, x, 1)
    total = rng.gamma(params.p * xs, 1.0 / nu)  # the sum of x Gamma(p, nu) orders is Gamma(p x, nu)
    return np.where(has, total / xs, 0.0)


# --------------------------------------------------------------------------------------------------------------
# Aggregation
# --------------------------------------------------------------------------------------------------------------


def aggregate(*columns, weights=None) -> tuple[list[np.ndarray], np.ndarray]:
    """Distinct rows of equal-length columns and how many times each occurs (or the sum of their weights).

    Fitting on these rows with the counts as weights gives the same parameters as fitting on every customer,
    at the cost of the number of distinct rows; round times to the feature unit (days) first to get duplicates.
    Each column keeps its dtype; rows come back sorted.
    """
    if not columns:
        raise ValueError("aggregate needs at least one column")
    cols = [np.asarray(c) for c in columns]
    if any(c.ndim != 1 for c in cols) or len({len(c) for c in cols}) != 1:
        raise ValueError("aggregate needs 1-D columns of equal length")
    n = len(cols[0])
    if weights is not None:
        weights = np.asarray(weights, dtype=float)
        if weights.shape != (n,):
            raise ValueError(f"weights must be a 1-D array of length {n}, got shape {weights.shape}")
    # Code each column by its distinct values, then find distinct rows of codes: one integer per row when the
    # code space fits in int64 (a 1-D unique, fast on millions of rows), rows of codes otherwise.
    values, codes = zip(*(np.unique(c, return_inverse=True) for c in cols))
    codes = [np.asarray(k).reshape(-1) for k in codes]
    dims = tuple(max(len(v), 1) for v in values)
    if float(np.prod(dims, dtype=float)) < 2.0**62:
        flat, inverse = np.unique(np.ravel_multi_index(codes, dims), return_inverse=True)
        rows = np.unravel_index(flat, dims)
    else:
        stacked, inverse = np.unique(np.stack(codes, axis=1), axis=0, return_inverse=True)
        rows = tuple(stacked.T)
    inverse = np.asarray(inverse).reshape(-1)
    counts = np.bincount(inverse, weights=weights, minlength=len(rows[0]))
    return [v[k] for v, k in zip(values, rows)], counts
