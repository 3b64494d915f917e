"""The features job: gold.customer_features (and gold.customer_labels, gold.training_set where the horizon has
passed) for a snapshot and, optionally, earlier snapshots for a training set that sees the seasons.

Each snapshot is one `replaceWhere snapshot_date = S` commit per table: rerunning a snapshot replaces it.
"""

from __future__ import annotations

import time
from datetime import date, timedelta

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from customer_value.config import Config, FeaturesConfig
from customer_value.features.build import customer_features
from customer_value.labels.build import customer_labels, training_set
from customer_value.tables import Tables


def snapshot_dates(last: date, count: int, step_days: int) -> list[date]:
    """`count` snapshots `step_days` apart, ending at `last`, oldest first."""
    return [last - timedelta(days=step_days * k) for k in reversed(range(count))]


GRID_ORIGIN = date(2000, 1, 3)      # history snapshots fall on origin + k * snapshot_step_days


def grid_snapshots(last: date, count: int, step_days: int) -> list[date]:
    """S and the `count - 1` grid dates before it (origin + k * step), oldest first.

    Why a grid: the history snapshots of consecutive daily runs are then the same dates, so a daily run computes
    S alone and reuses the rest (a past snapshot's features only see what was known before it)."""
    below = last - timedelta(days=(last - GRID_ORIGIN).days % step_days or step_days)
    return [below - timedelta(days=step_days * k) for k in reversed(range(count - 1))] + [last]


def _snapshots_in(spark: SparkSession, tables: Tables, name: str) -> set[date]:
    if not tables.exists(spark, name):
        return set()
    return {r["snapshot_date"] for r in tables.read(spark, name).select("snapshot_date").distinct().collect()}


def _log(msg: str) -> None:
    print(f"[features] {msg}", flush=True)


# What features and labels read, by short name: the version histories of the keyed tables (each read as known at
# the snapshot), the append-only ones as they are.
SILVER = {"customers": "silver.customer_history", "orders": "silver.order_history", "order_items": "silver.order_items",
          "events": "silver.events", "reviews": "silver.review_history"}


def read_silver(spark: SparkSession, tables: Tables) -> dict[str, DataFrame]:
    """The silver tables features and labels are computed from, by short name."""
    return {n: tables.read(spark, table) for n, table in SILVER.items()}


def write_snapshot_features(spark: SparkSession, tables: Tables, silver: dict[str, DataFrame], snapshot: date,
                            cfg: FeaturesConfig) -> tuple[DataFrame, int]:
    """Compute and write gold.customer_features for one snapshot (a `replaceWhere` commit); return the written
    partition, read back, and its row count."""
    feats = customer_features(silver["customers"], silver["orders"], silver["order_items"], silver["events"],
                              silver["reviews"], snapshot, cfg)
    # mergeSchema: a feature added to the catalogue appears as a new column (null in older snapshots)
    tables.write(feats, "gold.customer_features", replace_where=f"snapshot_date = '{snapshot}'",
                 options={"mergeSchema": "true"})
    written = tables.read(spark, "gold.customer_features").where(F.col("snapshot_date") == F.lit(snapshot))
    return written, written.count()


def run_features(spark: SparkSession, cfg: Config, snapshot: date | None = None, history: int = 1,
                 reuse: bool = False) -> list[date]:
    """Compute and write features (and labels where complete) for `history` snapshots ending at `snapshot`.

    `reuse` (the pipeline's daily runs): the history snapshots lie on a grid (`grid_snapshots`) and those already
    written are kept, as are their labels; only S, and labels whose horizon has newly passed, are computed."""
    tables = Tables(cfg.storage)
    fc = cfg.features
    today = cfg.cleaning.today()
    snapshot = snapshot or today + timedelta(days=1)
    silver = read_silver(spark, tables)
    dates = (grid_snapshots if reuse else snapshot_dates)(snapshot, history, fc.snapshot_step_days)
    have = _snapshots_in(spark, tables, "gold.customer_features") if reuse else set()
    have_labels = _snapshots_in(spark, tables, "gold.customer_labels") if reuse else set()
    labelled = []
    for s in dates:
        t0 = time.perf_counter()
        due = s + timedelta(days=fc.horizon_days) <= today + timedelta(days=1)
        if s != snapshot and s in have and (not due or s in have_labels):
            _log(f"snapshot {s}: already written, kept")
            continue
        if s != snapshot and s in have:
            msg = f"snapshot {s}: features kept"
        else:
            feats, n = write_snapshot_features(spark, tables, silver, s, fc)
            msg = f"snapshot {s}: {n:,} customers, {len(feats.columns) - 2} features"
        if due:
            labels = customer_labels(silver["customers"], silver["orders"], silver["events"], s, fc.horizon_days)
            tables.write(labels, "gold.customer_labels", replace_where=f"snapshot_date = '{s}'")
            labelled.append(s)
            msg += f", labels for [{s}, {s + timedelta(days=fc.horizon_days)})"
        else:
            msg += f", no labels (the {fc.horizon_days}-day horizon ends after {today})"
        _log(f"{msg} ({time.perf_counter() - t0:.1f} s)")
    if labelled:
        write_training_set(spark, tables, labelled)
        _log(f"gold.training_set: snapshots {', '.join(map(str, labelled))}")
    return labelled


def write_training_set(spark: SparkSession, tables: Tables, snapshots: list[date]) -> None:
    """gold.training_set for these snapshots (features ⋈ labels), one `replaceWhere` commit. mergeSchema, as for
    gold.customer_features: a feature added to the catalogue becomes a new column (null in older snapshots)
    instead of failing every rerun on a store that already holds the table."""
    in_list = ", ".join(f"'{s}'" for s in snapshots)
    feats = tables.read(spark, "gold.customer_features").where(f"snapshot_date IN ({in_list})")
    labels = tables.read(spark, "gold.customer_labels").where(f"snapshot_date IN ({in_list})")
    tables.write(training_set(feats, labels), "gold.training_set", replace_where=f"snapshot_date IN ({in_list})",
                 options={"mergeSchema": "true"})
