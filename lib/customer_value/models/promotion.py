"""Champion and challenger: which registered version `score` serves.

Why: a version that trained without error is not thereby better than the one serving. The train stage backtests
the current champion beside the new version on the same snapshot (the same customers, the same horizon, the same
labels); the new one takes the `champion` alias only if it is at least as good on every rule of `conf/`
(`promotion.rules`); otherwise it becomes the `challenger` and the run says which rule it missed. The first
version of a model, and a version whose champion cannot be backtested at its snapshot (it learned from labels
after it, or predicts another horizon), are decided without a comparison, and the reason says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from customer_value.config import Config, PromotionRule
from customer_value.evaluation.metrics import METRICS
from customer_value.models import registry

CHAMPION_MODEL = "champion"     # the current champion's name in the backtest beside the new version


@dataclass(frozen=True)
class Verdict:
    promote: bool
    reasons: list[str]

    def why(self) -> str:
        return "; ".join(self.reasons)


def _worse_by(metric: str, new: float, old: float) -> tuple[float, str]:
    """How much worse `new` is than `old` on `metric` (≤ 0: not worse), in the rule's unit, and the comparison."""
    direction = METRICS[metric][0]
    if direction.startswith("target") or direction.startswith("at least"):
        target = float(direction.split()[-1])
        return abs(new - target) - abs(old - target), f"|{metric} - {target:g}|"
    if direction == "lower":
        return (new - old) / abs(old) if old else (math.inf if new > old else 0.0), f"{metric} (relative)"
    return old - new, metric


def verdict(new: dict[str, float], champion: dict[str, float], rules: list[PromotionRule]) -> Verdict:
    """Promote when `new` is at least as good as `champion` on every rule within its tolerance; the reasons name
    each rule's figures. A metric the new version lacks (undefined on this snapshot) fails its rule; one only the
    champion lacks cannot be compared and does not hold the new version back."""
    reasons, promote = [], True
    for rule in rules:
        n, o = new.get(rule.metric), champion.get(rule.metric)
        if n is None or not math.isfinite(n):
            promote = False
            reasons.append(f"{rule.metric} undefined for the new version")
            continue
        if o is None or not math.isfinite(o):
            reasons.append(f"{rule.metric} {n:.4g} (the champion's undefined)")
            continue
        worse, what = _worse_by(rule.metric, n, o)
        ok = worse <= rule.tolerance + 1e-12
        promote &= ok
        reasons.append(f"{rule.metric} {n:.4g} vs champion {o:.4g}: {what} "
                       f"{'within' if ok else 'worse by more than'} {rule.tolerance:g}")
    return Verdict(promote, reasons)


def decide(cfg: Config, model: registry.RegisteredModel, metrics: dict[str, dict[str, float]], own: str,
           champion: int | None, skipped: str | None) -> Verdict:
    """Set the aliases for the ready version `model` from its backtest `metrics` (its own under `own`, the
    champion's under `CHAMPION_MODEL` where it was backtested beside it) and return the decision.
    `champion`: the champion's version when the run started (None: none yet); `skipped`: why it was not
    backtested beside the new one."""
    if champion is None:
        v = Verdict(True, ["the first version of this model"])
    elif champion == model.version:
        v = Verdict(True, ["already the champion"])
    elif skipped is not None:
        v = Verdict(False, [f"not compared with champion {model.name}/{champion}: {skipped}; promote it by hand "
                            f"(MLflow alias '{registry.CHAMPION}') if it should serve"])
    else:
        v = verdict(metrics.get(own, {}), metrics.get(CHAMPION_MODEL, {}), cfg.promotion.rules)
    registry.set_alias(cfg, model, registry.CHAMPION if v.promote else registry.CHALLENGER, v.why())
    return v
