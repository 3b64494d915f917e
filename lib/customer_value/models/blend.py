"""The served expected spend as a blend of the network's and BG/NBD + Gamma-Gamma's, its weight chosen one horizon
ahead in time.

Why: the network ranks customers better than BG/NBD on a shop whose behaviour, sequences and season carry
signal, but its amounts per customer can be worse where they do not: on a transactions-only file drawn from
BG/NBD itself, its spend MAE stayed 8 % above the baseline's with the level corrected, and on a real
transactions file its amounts were far off while its ranking led. BG/NBD's expected spend is already an input of
the network (`btyd_inputs`); a convex blend w · network + (1 − w) · BG/NBD lets the data say how much of each to
serve. w is chosen where the level check already scores (`models.deep`: a model of the same recipe trained on
the snapshots whose horizon ended by S − H, scored at S − H against [S − H, S)), so nothing at or after S
decides it: the w of a grid with the smallest spend MAE after the level is matched, among those whose spend Gini
there stays within `max_gini_loss` of the network's own (the ranking the network earns is kept; only the amounts
move). On a shop drawn from BG/NBD it leans to the baseline; where the network's amounts are better, w stays 1.

Customers without a completed purchase have no BG/NBD figures (null inputs): they get the network's amount.
"""

from __future__ import annotations

import numpy as np

from customer_value.evaluation.metrics import normalised_gini
from customer_value.models.ziln import LEVEL_MIN_Z, checked_level

BASELINE_INPUT = "btyd_expected_spend"          # the network's input that holds BG/NBD's expected spend
GRID = tuple(round(0.1 * i, 1) for i in range(11))


def baseline_columns(numeric_inputs: list[str]) -> tuple[int, int] | None:
    """(column of BG/NBD's expected spend, column of its missing flag) in the network's numeric input array
    (`FeatureSpec.numeric_inputs`), or None for a model without BG/NBD inputs."""
    flag = f"{BASELINE_INPUT}__missing"
    if BASELINE_INPUT not in numeric_inputs or flag not in numeric_inputs:
        return None
    return numeric_inputs.index(BASELINE_INPUT), numeric_inputs.index(flag)


def baseline_from_numeric(numeric: np.ndarray, columns: tuple[int, int]) -> np.ndarray:
    """BG/NBD's expected spend per row back from the network's numeric input array, where `spec.transformed` (and
    the scorer's in-batch fill, `btyd_inputs.InBatchBtyd`) wrote sign(x)·log1p(|x|), 0 for null: NaN where the
    missing flag says null. The network clips its inputs inside itself, so the array holds them unclipped and the
    inverse is exact up to float32's rounding (a relative 1e-7 of log spend)."""
    value, flag = columns
    v = np.asarray(numeric[:, value], dtype=np.float64)
    out = np.sign(v) * np.expm1(np.abs(v))
    return np.where(np.asarray(numeric[:, flag]) > 0.5, np.nan, out)


def blended(network: np.ndarray, baseline: np.ndarray | None, weight: float) -> np.ndarray:
    """w · network + (1 − w) · baseline per row; the network's amount where the baseline is NaN (no purchase yet)
    or where there is no baseline at all (w = 1, or a model without BG/NBD inputs)."""
    net = np.asarray(network, dtype=np.float64)
    if baseline is None or weight >= 1.0:
        return net
    base = np.asarray(baseline, dtype=np.float64)
    return np.where(np.isnan(base), net, weight * net + (1.0 - weight) * np.nan_to_num(base))


def fit_blend(network: np.ndarray, baseline: np.ndarray, actual: np.ndarray, buyers: int,
              max_gini_loss: float = 0.005, grid: tuple[float, ...] = GRID, min_z: float = LEVEL_MIN_Z) -> dict:
    """The blend's weight and level from one time-forward check: for each w of `grid`, the level that makes the
    blend's total match the actual one where that is beyond the check's noise (`ziln.checked_level`), then the
    spend MAE and Gini of the levelled blend. Chosen: the smallest MAE among the weights whose Gini is at least
    the network's (w = 1) − `max_gini_loss`; ties to the larger w.
    Returns {"weight", "level_scale", "table": [{w, level_scale, measured, z, mae, gini}, ...]}."""
    y = np.asarray(actual, dtype=np.float64)
    table = []
    for w in sorted(set(grid) | {1.0}):
        b = blended(network, baseline, w)
        level = checked_level(b, y, buyers, min_z)
        pred = level["level_scale"] * b
        gini = normalised_gini(y, pred) if len(y) else float("nan")
        table.append({"w": w, "level_scale": level["level_scale"], "measured": level["measured"], "z": level["z"],
                      "mae": float(np.abs(pred - y).mean()) if len(y) else float("nan"), "gini": float(gini)})
    own = table[-1]                                             # w = 1: the network alone
    floor = own["gini"] - max_gini_loss if np.isfinite(own["gini"]) else -np.inf
    allowed = [r for r in table if np.isfinite(r["mae"]) and (not np.isfinite(r["gini"]) or r["gini"] >= floor)]
    best = min(allowed, key=lambda r: (r["mae"], -r["w"])) if allowed else own
    return {"weight": best["w"], "level_scale": best["level_scale"], "table": table}
