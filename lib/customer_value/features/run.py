"""The features job: gold.customer_features (and gold.customer_labels, gold.training_set where the horizon has
passed) for a snapshot and, optionally, earlier snapshots for a training set that sees the seasons.

The snapshots a run computes are one `replaceWhere snapshot_date IN (...)` commit per table: rerunning them
replaces them, all or none.

Each such commit carries, in its Delta `userMetadata`, the snapshots it wrote and a key of what they were computed
from (the versions of the silver tables read, the features settings, this package's version): `fresh_snapshots`
tells a later job which snapshots of the table are exactly what it would compute now, so that it reads them
instead of computing them again. The pipeline's features stage, when training is due, computes the backtest's
snapshots in its own commit this way (one Spark job for all of them instead of two), and the backtest reads them.
"""

from __future__ import annotations

import hashlib
import json
import time
from datetime import date, timedelta
from typing import Iterable, Sequence

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from customer_value import __version__
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


def inputs_key(spark: SparkSession, tables: Tables, cfg: FeaturesConfig) -> str:
    """What features and labels computed now would be a function of: the current version of every silver table
    they read, the features settings and the code's version. Two jobs with the same key compute the same rows."""
    versions = {t: tables.version(spark, t) for t in sorted(SILVER.values())}
    body = {"silver": versions, "features": cfg.model_dump(mode="json"), "code": __version__}
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()[:24]


def commit_stamp(key: str | None, snapshots: Iterable[date], horizon_days: int | None = None) -> dict[str, str]:
    """The write option that records a commit's snapshots and inputs key (`fresh_snapshots` reads it back)."""
    if key is None:
        return {}
    meta = {"inputs": key, "snapshots": sorted(str(s) for s in snapshots)}
    if horizon_days is not None:
        meta["horizon_days"] = horizon_days
    return {"userMetadata": json.dumps(meta, sort_keys=True)}


def fresh_snapshots(spark: SparkSession, tables: Tables, name: str, key: str, horizon_days: int | None = None,
                    depth: int = 50) -> set[date]:
    """The snapshots of `name` whose rows were last written by a commit with inputs key `key` (and, for labels,
    this horizon among the ones it wrote): what a job with that key would compute, there already.

    The table's commits are read newest first; the newest one that wrote a snapshot decides it. A commit that
    does not say what it wrote (another writer, maintenance) ends the search: older ones may no longer hold."""
    if not tables.exists(spark, name):
        return set()
    history = tables.delta_table(spark, name).history(depth).select("version", "userMetadata").collect()
    decided: set[date] = set()
    fresh: set[date] = set()
    for row in sorted(history, key=lambda r: -r["version"]):
        try:
            meta = json.loads(row["userMetadata"] or "")
            written = {date.fromisoformat(s) for s in meta["snapshots"]}
        except (ValueError, KeyError, TypeError):
            break
        matches = meta.get("inputs") == key and (horizon_days is None or meta.get("horizon_days") in (None, horizon_days))
        for s in written - decided:
            if matches:
                fresh.add(s)
        decided |= written
    return fresh


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
                   cfg: FeaturesConfig, key: str | None = None) -> DataFrame:
    """Compute and write gold.customer_features for these snapshots in one `replaceWhere` commit (rerun-safe:
    the commit replaces exactly these snapshots, all or none); return the written rows, read back. `key`
    (`inputs_key`) is recorded with the commit."""
    rows = snapshot_features(silver, snapshots, cfg)
    # mergeSchema: a feature added to the catalogue appears as a new column (null in older snapshots)
    tables.write(rows, "gold.customer_features", replace_where=snapshot_in(snapshots),
                 options={"mergeSchema": "true", **commit_stamp(key, snapshots)})
    return tables.read(spark, "gold.customer_features").where(snapshot_in(snapshots))


def write_labels(spark: SparkSession, tables: Tables, silver: dict[str, DataFrame], snapshots: Sequence[date],
                 horizon_days: int, every_horizon: Sequence[date] | bool = False, key: str | None = None) -> DataFrame:
    """Compute and write gold.customer_labels of these snapshots and this horizon in one `replaceWhere` commit;
    return the written rows, read back. `every_horizon`: the snapshots (True: all of them) whose labels of every
    horizon the commit replaces (the features job's, so that the training set, joined by snapshot alone, sees
    one horizon); the others' labels of other horizons are kept. `key` (`inputs_key`) is recorded."""
    whole = sorted(snapshots) if every_horizon is True else sorted(set(every_horizon or []) & set(snapshots))
    rest = sorted(set(snapshots) - set(whole))
    where = " OR ".join(([snapshot_in(whole)] if whole else [])
                        + ([f"({snapshot_in(rest)} AND horizon_days = {horizon_days})"] if rest else []))
    tables.write(snapshot_labels(silver, snapshots, horizon_days), "gold.customer_labels", replace_where=where,
                 options=commit_stamp(key, snapshots, horizon_days))
    return tables.read(spark, "gold.customer_labels").where(
        f"{snapshot_in(snapshots)} AND horizon_days = {horizon_days}")


def run_features(spark: SparkSession, cfg: Config, snapshot: date | None = None, history: int = 1,
                 reuse: bool = False, also: Sequence[date] = (), also_labelled: Sequence[date] = ()) -> list[date]:
    """Compute and write features (and labels where complete) for `history` snapshots ending at `snapshot`.

    `reuse` (the pipeline's daily runs): the history snapshots lie on a grid (`grid_snapshots`) and those already
    written are kept, as are their labels; only S, and labels whose horizon has newly passed, are computed.
    `also` / `also_labelled`: more snapshots to compute features / labels (`features.horizon_days`) for in the
    same commits, unless the table already holds them from these inputs (`fresh_snapshots`): the backtest's,
    when training is due (a later job reads them instead of computing them again).
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
    key = inputs_key(spark, tables, fc)
    extra = sorted(set(also) - set(compute) - fresh_snapshots(spark, tables, "gold.customer_features", key))
    extra_labels = sorted(set(also_labelled) - set(labelled)
                          - fresh_snapshots(spark, tables, "gold.customer_labels", key, fc.horizon_days))
    silver = read_silver(spark, tables)
    counts: dict[date, int] = {}
    if compute or extra:
        t0 = time.perf_counter()
        counts = rows_per_snapshot(write_features(spark, tables, silver, sorted(set(compute) | set(extra)), fc, key))
        _log(f"gold.customer_features: {len(compute) + len(extra)} snapshot(s) in one commit"
             + (f" ({len(extra)} for the backtest of the training due: {', '.join(map(str, extra))})" if extra else "")
             + f" ({time.perf_counter() - t0:.1f} s)")
    if labelled or extra_labels:
        t0 = time.perf_counter()
        write_labels(spark, tables, silver, sorted(set(labelled) | set(extra_labels)), fc.horizon_days,
                     every_horizon=labelled, key=key)
        _log(f"gold.customer_labels: {len(labelled) + len(extra_labels)} snapshot(s) in one commit"
             + (f" ({len(extra_labels)} for the backtest)" if extra_labels else "")
             + f" ({time.perf_counter() - t0:.1f} s)")
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
