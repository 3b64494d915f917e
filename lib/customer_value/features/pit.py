"""Point-in-time helpers: the only places that compare event times with the snapshot.

Features are computed for several snapshots in one Spark job: every row is tagged with the snapshot it is read
for (the `snapshot_date` column, S), and every comparison is with that row's own S. Versioned inputs (orders,
customers, reviews) are first read `as_of` each S: each key's version known strictly before S, tagged with S.
Append-only inputs are tagged through `known_before`. Then every feature group reads its rows through
`before(...)`; labels read theirs through `within(...)` from the versions known at the horizon's end. Keeping the
comparisons here (and nowhere else) is what the leakage property tests rely on.

Why one job for many snapshots: a snapshot's features are a dozen aggregations and joins over small tables, so
on a small shop a job's fixed cost (planning, scheduling, reading the Delta logs) is most of its time; tagging
the rows and grouping by (S, customer) pays that cost once for all of a run's snapshots.
"""

from __future__ import annotations

from datetime import date
from typing import Iterable

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

SNAPSHOT = "snapshot_date"
KEYS = [SNAPSHOT, "customer_id"]       # what every feature group's rows are unique on


def snapshot() -> Column:
    """The row's snapshot S (a date)."""
    return F.col(SNAPSHOT)


def start_of(day: date | Column) -> Column:
    """Midnight (session time zone, UTC) at the start of a day: S's first instant."""
    return (F.lit(day) if isinstance(day, date) else day).cast("timestamp")


def snapshots_frame(like: DataFrame, snapshots: date | Iterable[date] | DataFrame) -> DataFrame:
    """The snapshots as a one-column frame (`snapshot_date`), in the session of `like`."""
    if isinstance(snapshots, DataFrame):
        return snapshots
    days = [snapshots] if isinstance(snapshots, date) else sorted(set(snapshots))
    return like.sparkSession.createDataFrame([(d,) for d in days], f"{SNAPSHOT} date")


def as_of(history: DataFrame, snapshots: date | Iterable[date] | DataFrame, days_after: int = 0) -> DataFrame:
    """Each key's version as it was known just before S (+ `days_after`), for each snapshot S: `valid_from < S <=
    valid_to` (or still open), tagged with S. A row recorded at or after that instant (a new row, a status
    change, a correction, a late arrival) is not there yet. `days_after`: the labels read the orders as known
    at the horizon's end, S + H."""
    snaps = snapshots_frame(history, snapshots)
    s = start_of(F.date_add(snapshot(), days_after))
    return history.join(F.broadcast(snaps), (F.col("valid_from") < s) & (F.col("valid_to").isNull() | (F.col("valid_to") >= s)))


def known_before(rows: DataFrame, ts: str, snapshots: date | Iterable[date] | DataFrame) -> DataFrame:
    """Rows of an append-only input with `ts` strictly before S, tagged with S, for each snapshot S."""
    snaps = snapshots_frame(rows, snapshots)
    return rows.join(F.broadcast(snaps), F.col(ts) < start_of(snapshot()))


def before(df: DataFrame, ts: str, lookback_days: int | None = None) -> DataFrame:
    """Rows with `ts` strictly before their snapshot (midnight UTC), optionally only the last `lookback_days`."""
    cond = F.col(ts) < start_of(snapshot())
    if lookback_days is not None:
        cond = cond & (F.col(ts) >= start_of(F.date_sub(snapshot(), lookback_days)))
    return df.where(cond)


def within(df: DataFrame, ts: str, days: int) -> DataFrame:
    """Rows with `ts` in [S, S + days)."""
    return df.where((F.col(ts) >= start_of(snapshot())) & (F.col(ts) < start_of(F.date_add(snapshot(), days))))


def in_window(ts: str, days: int, offset_days: int = 0) -> Column:
    """True for `ts` in [S - offset - days, S - offset): a trailing window (offset: the window before it)."""
    return ((F.col(ts) >= start_of(F.date_sub(snapshot(), offset_days + days)))
            & (F.col(ts) < start_of(F.date_sub(snapshot(), offset_days))))


def days_since(day: Column) -> Column:
    """Whole days from a day to S: 1 for the day before S."""
    return F.datediff(snapshot(), day)


def days_before(ts: Column) -> Column:
    """Whole days from the event's day to S: 1 for the day before S."""
    return days_since(F.to_date(ts))
