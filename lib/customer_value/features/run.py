"""The features job: gold.customer_features (and gold.customer_labels, gold.training_set where the horizon has
passed) for a snapshot and, optionally, earlier snapshots for a training set that sees the seasons.

The snapshots a run computes are one `replaceWhere snapshot_date IN (...)` commit per table: rerunning them
replaces them, all or none.
"""

from __future__ import annotations

import time
from datetime import date, timedelta
from typing import Iterable, Sequence

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from customer_value.config import Config, FeaturesConfig
from customer_value.features.build import customer_features_at
from customer_value.features.catalogue import catalogue
from customer_value.labels.build import customer_labels_at, training_set
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


def snapshot_in(snapshots: Iterable[date]) -> str:
    """The SQL predicate (a `replaceWhere`, a filter) selecting these snapshots."""
    return "snapshot_date IN ({})".format(", ".join(f"'{s}'" for s in sorted(set(snapshots))))


def snapshot_features(silver: dict[str, DataFrame], snapshots: Sequence[date], cfg: FeaturesConfig) -> DataFrame:
    """gold.customer_features rows of these snapshots, computed together (`customer_features_at`)."""
    return customer_features_at(silver["customers"], silver["orders"], silver["order_items"], silver["events"],
                                silver["reviews"], snapshots, cfg)


def snapshot_labels(silver: dict[str, DataFrame], snapshots: Sequence[date], horizon_days: int) -> DataFrame:
    """gold.customer_labels rows of these snapshots, computed together (`customer_labels_at`)."""
    return customer_labels_at(silver["customers"], silver["orders"], silver["events"], snapshots, horizon_days)


def rows_per_snapshot(written: DataFrame) -> dict[date, int]:
    """Rows of each snapshot in a table slice: one small job (row counts of the files, no column read)."""
    return {r["snapshot_date"]: r["count"] for r in written.groupBy("snapshot_date").count().collect()}


def write_features(spark: SparkSession, tables: Tables, silver: dict[str, DataFrame], snapshots: Sequence[date],
                   cfg: FeaturesConfig) -> DataFrame:
    """Compute and write gold.customer_features for these snapshots in one `replaceWhere` commit (rerun-safe:
    the commit replaces exactly these snapshots, all or none); return the written rows, read back."""
    rows = snapshot_features(silver, snapshots, cfg)
    # mergeSchema: a feature added to the catalogue appears as a new column (null in older snapshots)
    tables.write(rows, "gold.customer_features", replace_where=snapshot_in(snapshots), options={"mergeSchema": "true"})
    return tables.read(spark, "gold.customer_features").where(snapshot_in(snapshots))


def write_labels(spark: SparkSession, tables: Tables, silver: dict[str, DataFrame], snapshots: Sequence[date],
                 horizon_days: int, every_horizon: bool = False) -> DataFrame:
    """Compute and write gold.customer_labels of these snapshots and this horizon in one `replaceWhere` commit;
    return the written rows, read back. `every_horizon`: the commit replaces the snapshots' labels of every
    horizon (the features job's, so that the training set, joined by snapshot alone, sees one horizon)."""
    where = f"{snapshot_in(snapshots)} AND horizon_days = {horizon_days}"
    tables.write(snapshot_labels(silver, snapshots, horizon_days), "gold.customer_labels",
                 replace_where=snapshot_in(snapshots) if every_horizon else where)
    return tables.read(spark, "gold.customer_labels").where(where)


def run_features(spark: SparkSession, cfg: Config, snapshot: date | None = None, history: int = 1,
                 reuse: bool = False) -> list[date]:
    """Compute and write features (and labels where complete) for `history` snapshots ending at `snapshot`.

    `reuse` (the pipeline's daily runs): the history snapshots lie on a grid (`grid_snapshots`) and those already
    written are kept, as are their labels; only S, and labels whose horizon has newly passed, are computed.
    The snapshots to compute are written together: one commit for their features, one for their labels."""
    tables = Tables(cfg.storage)
    fc = cfg.features
    today = cfg.cleaning.today()
    snapshot = snapshot or today + timedelta(days=1)
    dates = (grid_snapshots if reuse else snapshot_dates)(snapshot, history, fc.snapshot_step_days)
    have = _snapshots_in(spark, tables, "gold.customer_features") if reuse else set()
    have_labels = _snapshots_in(spark, tables, "gold.customer_labels") if reuse else set()
    due = {s for s in dates if s + timedelta(days=fc.horizon_days) <= today + timedelta(days=1)}
    compute = [s for s in dates if s == snapshot or s not in have]
    labelled = [s for s in dates if s in due and (s == snapshot or s not in have or s not in have_labels)]
    for s in dates:
        if s not in compute and s not in labelled:
            _log(f"snapshot {s}: already written, kept")
    silver = read_silver(spark, tables)
    counts: dict[date, int] = {}
    if compute:
        t0 = time.perf_counter()
        counts = rows_per_snapshot(write_features(spark, tables, silver, compute, fc))
        _log(f"gold.customer_features: {len(compute)} snapshot(s) in one commit ({time.perf_counter() - t0:.1f} s)")
    if labelled:
        t0 = time.perf_counter()
        write_labels(spark, tables, silver, labelled, fc.horizon_days, every_horizon=True)
        _log(f"gold.customer_labels: {len(labelled)} snapshot(s) in one commit ({time.perf_counter() - t0:.1f} s)")
    n_features = len(catalogue(fc))
    for s in dates:
        if s not in compute and s not in labelled:
            continue
        msg = f"snapshot {s}: " + (f"{counts.get(s, 0):,} customers, {n_features} features" if s in compute
                                   else "features kept")
        if s in labelled:
            msg += f", labels for [{s}, {s + timedelta(days=fc.horizon_days)})"
        elif s not in due:
            msg += f", no labels (the {fc.horizon_days}-day horizon ends after {today})"
        _log(msg)
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
