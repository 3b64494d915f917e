"""Point-in-time helpers: the only places that compare event times with the snapshot.

Versioned inputs (orders, customers, reviews) are first read `as_of(S)`: each key's version known strictly before
S. Then every feature group reads its rows through `before(...)`; labels read theirs through `within(...)` from the
versions known at the horizon's end. Keeping the comparisons here (and nowhere else) is what the leakage property
tests rely on.
"""

from __future__ import annotations

from datetime import date, timedelta

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F


def start_of(day: date) -> Column:
    return F.lit(day).cast("timestamp")


def as_of(history: DataFrame, snapshot: date) -> DataFrame:
    """Each key's version as it was known just before S: `valid_from < S <= valid_to` (or still open). A row
    recorded at or after S (a new row, a status change, a correction, a late arrival) is not there yet."""
    s = start_of(snapshot)
    return history.where((F.col("valid_from") < s) & (F.col("valid_to").isNull() | (F.col("valid_to") >= s)))


def before(df: DataFrame, ts: str, snapshot: date, lookback_days: int | None = None) -> DataFrame:
    """Rows with `ts` strictly before the snapshot (midnight UTC), optionally only the last `lookback_days`."""
    cond = F.col(ts) < start_of(snapshot)
    if lookback_days is not None:
        cond = cond & (F.col(ts) >= start_of(snapshot - timedelta(days=lookback_days)))
    return df.where(cond)


def within(df: DataFrame, ts: str, start: date, days: int) -> DataFrame:
    """Rows with `ts` in [start, start + days)."""
    return df.where((F.col(ts) >= start_of(start)) & (F.col(ts) < start_of(start + timedelta(days=days))))


def in_window(ts: str, snapshot: date, days: int, offset_days: int = 0) -> Column:
    """True for `ts` in [S - offset - days, S - offset): a trailing window (offset: the window before it)."""
    end = snapshot - timedelta(days=offset_days)
    return (F.col(ts) >= start_of(end - timedelta(days=days))) & (F.col(ts) < start_of(end))


def days_before(ts: Column, snapshot: date) -> Column:
    """Whole days from the event's day to the snapshot: 1 for the day before S."""
    return F.datediff(F.lit(snapshot), F.to_date(ts))
