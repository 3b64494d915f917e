"""Versioned silver: each business key's history as versions valid over [valid_from, valid_to).

Why: a feature at snapshot S may only see what the shop knew at S. Exports carry every state a row had, each
with the time it was recorded (`updated_at`); keeping only the latest state would let a return, a correction or
a profile edit made after S reach the features at S. Here a version is *known from* its `updated_at` (never
earlier than the event it describes), and valid until the next version of the same key is known.

`as_of(history, S)` (in `customer_value.features.pit`) then picks, per key, the version with
`valid_from < S <= valid_to` (or `valid_to` open): the state as it was known just before S.
"""

from __future__ import annotations

from typing import Sequence

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

VALID_FROM, VALID_TO = "valid_from", "valid_to"


def known_from(recorded_at: Column, happened_at: Column, fallback: Column | None = None) -> Column:
    """When a version became known: its `updated_at`, never before the event it describes; without an
    `updated_at`, the event's own time (then `fallback`, e.g. the shop's opening, for rows without either)."""
    known = F.greatest(recorded_at, happened_at)  # greatest skips nulls: null only when both are
    return F.coalesce(known, fallback) if fallback is not None else known


def versions(rows: DataFrame, key: Sequence[str], known_at: Column, content: Sequence[str],
             newest_first: Sequence[Column]) -> DataFrame:
    """The history of each `key`: one row per change of `content`, with `valid_from` and `valid_to`.

    Rows known at the same instant are one version (the first by `newest_first`, e.g. the latest ingested: a
    correction re-sent with the same timestamp replaces the old one). A row that repeats its predecessor's
    content (a re-sent export) is no change and extends that version instead of starting a new one.
    `valid_to` is the next version's `valid_from` (null: still valid)."""
    key = list(key)
    at = rows.withColumn(VALID_FROM, known_at)
    # the content itself breaks the last ties (two rows of one file, same key and instant): same input, same pick
    last_resort = [F.col(c).asc_nulls_first() for c in content]
    one_per_instant = at.withColumn(
        "_n", F.row_number().over(Window.partitionBy(*key, VALID_FROM).orderBy(*newest_first, *last_resort))).where("_n = 1")
    by_time = Window.partitionBy(*key).orderBy(VALID_FROM)
    state = F.struct(*content)
    # the first version's predecessor is null, and a struct is never null-safe-equal to null: it is kept
    changed = one_per_instant.withColumn("_changed", ~state.eqNullSafe(F.lag(state).over(by_time))).where("_changed")
    return changed.withColumn(VALID_TO, F.lead(VALID_FROM).over(by_time)).drop("_n", "_changed")


def current(history: DataFrame) -> DataFrame:
    """The latest known version of each key (what analysts read as the current state)."""
    return history.where(F.col(VALID_TO).isNull()).drop(VALID_FROM, VALID_TO)
