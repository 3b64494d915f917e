"""Zero-inflated lognormal (ZILN): the spend head's distribution and loss.

Most customers buy nothing in a horizon and the buyers' spend is heavy-tailed, so a squared error is dominated
by a few big spenders. ZILN (Wang, Liu & Miao 2019, "A deep probabilistic model for customer lifetime value
prediction") models P(buy) = sigmoid(l0) and, given a purchase, log spend ~ Normal(μ = l1, σ = softplus(l2)).
The loss is the negative log-likelihood: binary cross-entropy of buying plus, for buyers, the lognormal's.
Expected spend is p·exp(μ + σ²/2); quantiles come from the same distribution.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf
from scipy.optimize import brentq
from scipy.special import expit, ndtri

SIGMA_FLOOR = 1e-3   # keeps the lognormal's scale away from 0 (the likelihood explodes there)
BUY_LOGIT_LIMIT = 30.0   # |logit of P(buy)| in a served model: P within 1e-13 of 0 or 1 already


def spend_bounds(labels: dict, sigma: np.ndarray, log_margin: float, cap_multiple: float,
                 sigma_quantiles: tuple[float, float] = (0.001, 0.999)) -> dict:
    """The served model's bounds: μ within the training buyers' log spend range widened by `log_margin` each
    side; σ within the `sigma_quantiles` of the σ the trained network gives held-out rows (what it says about
    customers like those it learned from); the published expected spend and interval at most `cap_multiple` ×
    the largest horizon spend in the training labels.

    Why: the network extrapolates μ and σ linearly in inputs it rarely saw, and the expectation exp(μ + σ²/2)
    turns a σ of 5 into a factor of 270,000 (a demo customer was expected to spend 8.4 million in 90 days, the
    largest 90-day spend in its training labels being 17,083). Bounded, the rare customer gets the most extreme
    distribution the model gave anyone in validation, and no amount above the largest a customer ever spent."""
    log_min, log_max = labels.get("log_min"), labels.get("log_max")
    if log_min is None or log_max is None or labels.get("max", 0.0) <= 0:
        raise ValueError("no buyer in the training labels: the spend distribution cannot be bounded")
    sig = np.asarray(sigma, dtype=np.float64)
    lo, hi = (np.quantile(sig, sigma_quantiles) if len(sig) else (SIGMA_FLOOR, 1.0))
    return {"mu_min": float(log_min) - log_margin, "mu_max": float(log_max) + log_margin,
            "sigma_min": float(max(lo, SIGMA_FLOOR)), "sigma_max": float(max(hi, lo * (1 + 1e-6), 2 * SIGMA_FLOOR)),
            "spend_cap": float(cap_multiple * labels["max"])}


def _raw_sigma(sigma: float) -> float:
    """softplus⁻¹(σ): the head's third output that gives σ."""
    return float(sigma + np.log(-np.expm1(-sigma)))


def logit_bounds(bounds: dict) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) of the spend head's three outputs (buy logit, μ, raw σ) under `bounds`."""
    low = np.array([-BUY_LOGIT_LIMIT, bounds["mu_min"], _raw_sigma(bounds["sigma_min"])])
    high = np.array([BUY_LOGIT_LIMIT, bounds["mu_max"], _raw_sigma(bounds["sigma_max"])])
    return low, high


def bounded(logits: np.ndarray, bounds: dict) -> np.ndarray:
    """The spend logits as a served model with `bounds` gives them (`network.build_network(..., bounds)`)."""
    low, high = logit_bounds(bounds)
    return np.clip(np.asarray(logits, dtype=np.float64), low, high)


def _sigma(raw):
    return tf.maximum(tf.nn.softplus(raw), SIGMA_FLOOR)


def ziln_loss(y_true: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """Per-example negative log-likelihood of spend `y_true` (>= 0) under the ZILN with `logits` [n, 3], or the
    mean over towers for `logits` [n, towers, 3]."""
    if logits.shape.rank == 3:
        y3 = tf.reshape(tf.cast(y_true, tf.float32), [-1, 1, 1])
        per = ziln_loss(tf.reshape(tf.broadcast_to(y3, tf.shape(logits[..., :1])), [-1]), tf.reshape(logits, [-1, 3]))
        return tf.reduce_mean(tf.reshape(per, tf.shape(logits)[:2]), axis=1)
    y = tf.reshape(tf.cast(y_true, tf.float32), [-1, 1])
    positive = tf.cast(y > 0, tf.float32)
    p_logit, mu, sigma = logits[..., 0:1], logits[..., 1:2], _sigma(logits[..., 2:3])
    bce = tf.nn.sigmoid_cross_entropy_with_logits(labels=positive, logits=p_logit)
    safe_y = positive * y + (1 - positive)           # log(1) = 0 where nothing was bought (masked anyway)
    log_y = tf.math.log(safe_y)
    log_pdf = -log_y - tf.math.log(sigma) - 0.5 * math.log(2 * math.pi) - tf.square(log_y - mu) / (2 * tf.square(sigma))
    return tf.reshape(bce - positive * log_pdf, [-1])


def distribution(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(P(buy), μ, σ) per row of a logits array [n, 3], in float64. For towers [n, k, 3]: the towers' mean
    P(buy), μ and σ (the interval is then calibrated on held-out buyers, `interval_scale`)."""
    lg = np.asarray(logits, dtype=np.float64)
    sigma = np.maximum(np.logaddexp(0.0, lg[..., 2]), SIGMA_FLOOR)
    p, mu = expit(lg[..., 0]), lg[..., 1]
    if lg.ndim == 3:
        return p.mean(axis=1), mu.mean(axis=1), sigma.mean(axis=1)
    return p, mu, sigma


def expected_spend(logits: np.ndarray, sigma_scale: float = 1.0) -> np.ndarray:
    """P(buy)·exp(μ + (k·σ)²/2); for towers, the mean of the towers' expectations (the ensemble's mean). `k` is
    the mean's calibration (`mean_scale`), 1 for the likelihood's σ."""
    lg = np.asarray(logits, dtype=np.float64)
    if lg.ndim == 3:
        return np.stack([expected_spend(lg[:, t, :], sigma_scale) for t in range(lg.shape[1])], axis=1).mean(axis=1)
    p, mu, sigma = distribution(lg)
    return p * np.exp(np.minimum(mu + 0.5 * (sigma_scale * sigma) ** 2, 700.0))


def mean_scale(logits: np.ndarray, spend: np.ndarray, min_rows: int = 200) -> float:
    """The factor k ∈ [0, 1] on σ in the mean that makes held-out rows' expected spend add up to their actual
    spend (a root of a sum that grows with k, by scipy's brentq).

    Why: exp(μ + σ²/2) leans on the lognormal's right tail; where the buyers' real spend has a lighter or
    shorter tail than the fitted lognormal (a wide σ fitted on a few thousand buyers), it overstates the mean, and
    most for the customers with the widest σ: the level (MAE) and the order (Gini) both suffer. Only ever
    shrinks (k <= 1: never inflates beyond the likelihood's σ); 1 where there are too few rows to tell."""
    y = np.asarray(spend, dtype=np.float64)
    if len(y) < min_rows or (y > 0).sum() < 20:
        return 1.0
    target = y.sum()
    if expected_spend(logits, 1.0).sum() <= target:
        return 1.0
    if expected_spend(logits, 0.0).sum() >= target:
        return 0.0
    return float(brentq(lambda k: expected_spend(logits, k).sum() - target, 0.0, 1.0, xtol=1e-6))


LEVEL_RANGE = (0.5, 2.0)   # the time-forward level correction never more than halves or doubles the amounts
LEVEL_MIN_BUYERS = 20


def level_scale(predicted_total: float, actual_total: float, buyers: int) -> float:
    """The factor on expected spend that makes a model's predictions one horizon ahead of its training labels add
    up to what was spent: actual ÷ predicted total of a time-forward check (`models.deep`), within `LEVEL_RANGE`;
    1 where the check saw fewer than `LEVEL_MIN_BUYERS` buyers or predicted nothing.

    Why: the validation split (`mean_scale`) holds out customers, not time; its rows come from the training
    snapshots' own periods. A network extrapolates at S where inputs that grow with time (tenure, the first
    purchase's age) sit past their training range, and on a closed cohort (every customer acquired early, as in
    a CDNOW-style file) it overstated the next horizon's total by a third while matching every training period
    within 10 %. The same error shows one horizon earlier, for a model trained one horizon earlier: measured
    there, it is known at S without touching S's labels."""
    if buyers < LEVEL_MIN_BUYERS or not (predicted_total > 0) or not math.isfinite(predicted_total):
        return 1.0
    return float(np.clip(actual_total / predicted_total, *LEVEL_RANGE))


LEVEL_MIN_Z = 2.0          # a level is applied only where the check's error is this many standard errors from 0


def level_noise(predicted: np.ndarray, actual: np.ndarray) -> float:
    """The standard error of log(Σ actual ÷ Σ predicted) over the customers of one check, as if they were drawn
    at random from the shop (the delta method on the two sums): how far the measured level could sit from 1 by
    chance alone. Infinite where it cannot be told (fewer than two customers, a total not positive)."""
    a, p = np.asarray(actual, dtype=np.float64), np.asarray(predicted, dtype=np.float64)
    n, total_a, total_p = len(a), float(a.sum()), float(p.sum())
    if n < 2 or not (total_a > 0 and total_p > 0):
        return math.inf
    c = np.cov(a, p)
    var = n * (c[0, 0] / total_a ** 2 + c[1, 1] / total_p ** 2 - 2 * c[0, 1] / (total_a * total_p))
    return math.sqrt(max(var, 0.0))


def checked_level(predicted: np.ndarray, actual: np.ndarray, buyers: int, min_z: float = LEVEL_MIN_Z) -> dict:
    """The level a time-forward check sets (`level_scale`), applied only where it is beyond the check's own
    sampling noise: |log level| ≥ `min_z` standard errors (`level_noise`); 1 otherwise.

    Why: one horizon of a few hundred buyers measures a total to a few per cent. A model whose level is right
    (on a file drawn from BG/NBD, BG/NBD itself: 0.935 of the actual one horizon before S and 1.058 at S) would
    otherwise be moved by that noise, and the next horizon pays for it in both the total and the MAE; a level
    that is really off (the network's 1.19 there; 3.7 on a real transactions file) is many standard errors out
    and is corrected as before. Returns {"measured", "se", "z", "level_scale"}; se and z None where not finite
    (no noise measurable: too few customers, or none at all), as the check's JSON records them."""
    a, p = np.asarray(actual, dtype=np.float64), np.asarray(predicted, dtype=np.float64)
    measured = level_scale(float(p.sum()), float(a.sum()), buyers)
    se = level_noise(p, a)
    z = abs(math.log(measured)) / se if se > 0 else (math.inf if measured != 1.0 else 0.0)
    return {"measured": measured, "se": se if math.isfinite(se) else None, "z": z if math.isfinite(z) else None,
            "level_scale": measured if z >= min_z else 1.0}


def spend_quantile_if_buying(logits: np.ndarray, q: float, sigma_scale: float = 1.0) -> np.ndarray:
    """The q-quantile of spend given a purchase: exp(μ + k·σ·Φ⁻¹(q)). The 10 %-90 % interval a buyer's spend
    should fall in 80 % of the time (checked in the backtest); `k` is the interval's calibration
    (`interval_scale`), 1 for the raw distribution."""
    _, mu, sigma = distribution(logits)
    return np.exp(np.minimum(mu + sigma_scale * sigma * ndtri(q), 700.0))


def interval_scale(logits: np.ndarray, spend: np.ndarray, coverage: float = 0.8) -> float:
    """The factor k on σ that makes the central `coverage` interval of spend given a purchase hold that share of
    the buyers of a held-out set: k = quantile(|log y − μ| / σ, coverage) / Φ⁻¹((1 + coverage) / 2).

    Why: the maximum-likelihood σ fits the whole lognormal, tails included; where real spend has heavier tails
    than a lognormal, that σ is too wide for the middle (the 10-90 % interval then covers ~88 % of buyers on the
    synthetic shop). The mean exp(μ + σ²/2) keeps the likelihood's σ; only the interval is calibrated."""
    y = np.asarray(spend, dtype=np.float64)
    buyers = y > 0
    if buyers.sum() < 20:
        return 1.0
    _, mu, sigma = distribution(np.asarray(logits)[buyers])
    z = np.abs(np.log(y[buyers]) - mu) / sigma
    return float(np.quantile(z, coverage) / ndtri((1 + coverage) / 2))


def spend_quantile(logits: np.ndarray, q: float, sigma_scale: float = 1.0) -> np.ndarray:
    """The q-quantile of the horizon's spend, no purchase included: 0 while q <= P(no purchase), else the
    (q - P(no purchase)) / P(purchase) quantile of spend given a purchase (σ times the interval's calibration
    `sigma_scale`, as `spend_quantile_if_buying`).

    Why published beside the interval given a purchase: a customer unlikely to buy has a high spend if buying
    yet an expected spend near 0; the 10-90 % range of what they will spend is then [0, small], and that is
    what a budget reads, not [1,500, 12,677] beside an expected 0.01."""
    p, mu, sigma = distribution(logits)
    inner = np.clip((q - (1 - p)) / np.maximum(p, 1e-12), 1e-12, 1 - 1e-12)
    return np.where(q <= 1 - p, 0.0, np.exp(np.minimum(mu + sigma_scale * sigma * ndtri(inner), 700.0)))
