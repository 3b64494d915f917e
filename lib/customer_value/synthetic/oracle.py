"""The oracle: the best prediction the generative process allows, from each customer's latent parameters and
true state (alive or not) at the snapshot. Models are reported as a share of the oracle's score.

For a customer alive at snapshot S with daily rate mu_d = rate * season(d), completed orders arrive at
mu_d * (1 - cancel - return) per day and each one ends the customer with probability p, so the chance of still
being alive evolves as a_{d+1} = a_d * exp(-mu_d * (1 - cancel - return) * p). Over [S, S + H):
expected completed orders = sum_d a_d mu_d (1 - cancel - return); expected spend = that times the mean order
value p_spend / nu; P(no completed order) = exp(-(1 - cancel - return) * sum_d mu_d).
"""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd

from customer_value.config import SyntheticConfig
from customer_value.synthetic.calendar import season_weights


def oracle(truth: pd.DataFrame, cfg: SyntheticConfig, snapshot: date, horizon_days: int) -> pd.DataFrame:
    """Per customer signed up before `snapshot`: alive, expected orders and spend in the horizon, churn probability."""
    known = truth[pd.to_datetime(truth["signup_date"]) < pd.Timestamp(snapshot)].reset_index(drop=True)
    dropout = pd.to_datetime(known["dropout_date"])
    alive = (dropout.isna() | (dropout >= pd.Timestamp(snapshot))).to_numpy()
    keep = 1.0 - cfg.cancel_rate - cfg.return_rate
    weights = season_weights(cfg.seasonality, snapshot, horizon_days)
    rate = known["purchase_rate"].to_numpy()[:, None] * weights[None, :] * keep  # completed orders per day
    hazard = rate * known["dropout_prob"].to_numpy()[:, None]
    survival = np.exp(-np.concatenate([np.zeros((len(known), 1)), np.cumsum(hazard, axis=1)[:, :-1]], axis=1))
    expected_orders = alive * (survival * rate).sum(axis=1)
    mean_value = known["spend_p"].to_numpy() / known["spend_nu"].to_numpy()
    return pd.DataFrame({
        "user_id": known["user_id"],
        "alive": alive,
        "expected_orders": expected_orders,
        "expected_spend": expected_orders * mean_value,
        "churn_probability": 1.0 - alive * (1.0 - np.exp(-rate.sum(axis=1))),
    })
