"""The champion rule: a new version serves only if its backtest beside the champion's is at least as good on every
rule of conf/, each metric read in its own direction."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from customer_value.config import PromotionRule
from customer_value.models.promotion import verdict

RULES = [PromotionRule(metric="spend_gini", tolerance=0.005), PromotionRule(metric="churn_roc_auc", tolerance=0.005),
         PromotionRule(metric="spend_total_ratio", tolerance=0.05), PromotionRule(metric="spend_mae", tolerance=0.02)]
CHAMPION = {"spend_gini": 0.80, "churn_roc_auc": 0.88, "spend_total_ratio": 0.97, "spend_mae": 90.0}


def test_each_metric_is_read_in_its_own_direction():
    assert verdict(CHAMPION, CHAMPION, RULES).promote
    # trailing within the tolerance is allowed, beyond it is not
    assert verdict({**CHAMPION, "spend_gini": 0.796}, CHAMPION, RULES).promote
    weaker = verdict({**CHAMPION, "spend_gini": 0.79}, CHAMPION, RULES)
    assert not weaker.promote and "spend_gini 0.79 vs champion 0.8: spend_gini worse by more than 0.005" in weaker.why()
    # an error: lower is better, relative tolerance (2 % of 90 = 1.8)
    assert verdict({**CHAMPION, "spend_mae": 91.7}, CHAMPION, RULES).promote
    assert not verdict({**CHAMPION, "spend_mae": 92.0}, CHAMPION, RULES).promote
    assert verdict({**CHAMPION, "spend_mae": 50.0}, CHAMPION, RULES).promote
    # the total's ratio: its distance from 1, either side (champion 0.03 off)
    assert verdict({**CHAMPION, "spend_total_ratio": 1.07}, CHAMPION, RULES).promote          # 0.07 <= 0.03 + 0.05
    assert not verdict({**CHAMPION, "spend_total_ratio": 1.09}, CHAMPION, RULES).promote
    assert not verdict({**CHAMPION, "spend_total_ratio": 0.91}, CHAMPION, RULES).promote
    # a metric the new version lacks fails its rule; one only the champion lacks does not hold it back
    assert not verdict({k: v for k, v in CHAMPION.items() if k != "churn_roc_auc"}, CHAMPION, RULES).promote
    assert verdict(CHAMPION, {k: v for k, v in CHAMPION.items() if k != "churn_roc_auc"}, RULES).promote


SCORES = st.floats(0.0, 1.0, allow_nan=False)


@settings(max_examples=300, deadline=None)
@given(gini=SCORES, auc=SCORES, ratio=st.floats(0.2, 3.0), mae=st.floats(1.0, 500.0),
       steps=st.tuples(*(st.floats(0.0, 0.5) for _ in range(4))))
def test_a_version_better_on_every_metric_is_promoted_and_the_reverse_is_not(gini, auc, ratio, mae, steps):
    """Moving every metric towards better (higher Gini and AUC, ratio towards 1, lower MAE) never costs the
    promotion, and moving one away by more than its tolerance always does. Seen failing with the MAE read as
    higher-is-better and with the ratio compared as a plain number."""
    champion = {"spend_gini": gini, "churn_roc_auc": auc, "spend_total_ratio": ratio, "spend_mae": mae}
    dg, da, dr, dm = steps
    better = {"spend_gini": gini + dg, "churn_roc_auc": auc + da,
              "spend_total_ratio": 1 + (ratio - 1) * (1 - dr), "spend_mae": mae * (1 - dm)}
    assert verdict(better, champion, RULES).promote
    # the other way round: the old figures against `better` as champion, each worse by its step
    worse_by = (dg, da, abs(ratio - 1) - abs(better["spend_total_ratio"] - 1),
                (mae - better["spend_mae"]) / better["spend_mae"])
    assert verdict(champion, better, RULES).promote == all(w <= r.tolerance + 1e-12 for w, r in zip(worse_by, RULES))
