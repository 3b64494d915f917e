"""Seasonality of the purchase rate: a yearly wave times a weekday profile, per calendar day.

Shared by the simulation and the oracle, so that the oracle's expectation integrates the same rate the
customers were drawn from.
"""

from __future__ import annotations

from datetime import date

import numpy as np

from customer_value.config import Seasonality


def day_numbers(first: date, days: int) -> np.ndarray:
    """Days since 1970-01-01 for `days` consecutive days from `first`."""
    return (np.datetime64(first, "D") + np.arange(days)).astype("int64")


def season_weights(season: Seasonality, first: date, days: int) -> np.ndarray:
    """Multiplier of the base purchase rate for each of `days` days from `first` (about 1 on average)."""
    dates = np.datetime64(first, "D") + np.arange(days)
    day_of_year = (dates - dates.astype("datetime64[Y]")).astype("int64") + 1
    weekday = (dates.astype("int64") + 3) % 7  # 1970-01-01 was a Thursday; 0 = Monday
    yearly = 1.0 + season.yearly_amplitude * np.cos(2 * np.pi * (day_of_year - season.yearly_peak_day) / 365.25)
    weekly = np.asarray(season.weekday_weights, dtype=float)
    return yearly * (weekly / weekly.mean())[weekday]
