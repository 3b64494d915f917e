"""Table names to locations: the only module that knows where `<layer>.<table>` lives.

Why: jobs and analysts speak of `bronze.orders` or `gold.customer_scores`; whether that is a folder on a laptop,
an object-store path on a cluster or a Unity Catalog table on Databricks is configuration, decided here once.
"""

from __future__ import annotations

import os
import random
import sys
import time
from dataclasses import dataclass
from typing import Callable, Sequence, TypeVar

import delta.exceptions  # noqa: F401 - importing it has delta-spark convert the JVM's commit conflicts to Python's
from pyspark.sql import DataFrame, SparkSession

from customer_value.config import StorageConfig

@dataclass(frozen=True)
class TableSpec:
    """What every reader and writer of a table agrees on."""

    name: str
    partition_by: tuple[str, ...] = ()
    description: str = ""


# The registry grows with each stage; an unknown name is a typo, and fails loudly.
TABLES: dict[str, TableSpec] = {
    spec.name: spec
    for spec in [
        *[TableSpec(f"bronze.{src}", partition_by=("_batch_id",), description=f"Raw {src} rows that parsed, typed, as received.")
          for src in ("users", "orders", "order_items", "events", "reviews")],
        *[TableSpec(f"quarantine.{src}", partition_by=("_batch_id",), description=f"Raw {src} lines that did not parse, with the reason.")
          for src in ("users", "orders", "order_items", "events", "reviews")],
        TableSpec("quarantine.files", description="Landing files rejected whole (empty, binary, unusable header)."),
        TableSpec("ops.ingest_log", description="Per batch and file: rows read, in bronze, quarantined; encoding, layout."),
        TableSpec("ops.ingested_files", description="Every landing file ingested, with its batch: the commit marker."),
        TableSpec("ops.clean_batches", description="Per source, every bronze batch clean has merged into silver, and by which run."),
        TableSpec("ops.pipeline_runs", description="Per pipeline run and stage: its fingerprint, status, rows, time, inputs."),
        TableSpec("silver.customers", description="Current profile per pseudonymised customer: no personal data."),
        TableSpec("silver.customer_history", description="Every version of each customer's profile, valid over [valid_from, valid_to)."),
        TableSpec("silver.orders", description="Current state of each valid order; orphans and outliers flagged."),
        TableSpec("silver.order_history", description="Every version of each valid order (status changes, corrections), valid over [valid_from, valid_to)."),
        TableSpec("silver.order_items", description="Valid order lines; lines of unknown orders flagged."),
        TableSpec("silver.events", description="Valid behaviour events, deduplicated."),
        TableSpec("silver.reviews", description="Current version of each valid review."),
        TableSpec("silver.review_history", description="Every version of each valid review, valid over [valid_from, valid_to)."),
        TableSpec("quarantine.rejects", description="Rows clean rejected (JSON as in bronze), with table and reason."),
        TableSpec("ops.data_quality", description="Per clean run and table: counts, rejects by reason, null rates, ranges."),
        TableSpec("gold.customer_features", partition_by=("snapshot_date",),
                  description="Point-in-time features per customer and snapshot (docs/features.md)."),
        TableSpec("gold.customer_labels", partition_by=("snapshot_date",),
                  description="Future spend, orders and churn in [snapshot, snapshot + horizon)."),
        TableSpec("gold.training_set", partition_by=("snapshot_date",),
                  description="Features joined with labels over several snapshots, for training."),
        TableSpec("gold.backtest_predictions", partition_by=("snapshot_date",),
                  description="Backtest: per snapshot, horizon, customer and model, predicted and actual spend and churn."),
        TableSpec("gold.customer_scores", partition_by=("snapshot_date",),
                  description="Per snapshot and customer: expected spend, churn, value score, tier, segment, reasons, action."),
        TableSpec("gold.segments", description="Per model version and segment: its name and centroid profile."),
        TableSpec("gold.segment_summary", partition_by=("snapshot_date",),
                  description="Per snapshot and segment: customers, mean value, churn rate, spend share, top actions."),
        TableSpec("gold.drift", partition_by=("snapshot_date",),
                  description="Per snapshot and column: population stability index against the model's training reference."),
        TableSpec("gold.model_metrics", description="Evaluation metrics per model, version, snapshot and horizon."),
        TableSpec("synthetic.ground_truth", description="Generator's latent parameters per customer; evaluation only."),
        TableSpec("smoke.customers", description="Smoke pipeline: a tiny Delta table written, merged, time-travelled."),
        TableSpec("smoke.scores", description="Smoke pipeline: rows scored by the Horovod-trained model."),
    ]
}


class UnknownTableError(KeyError):
    pass


class WriteConflict(RuntimeError):
    """A commit lost to other writers' commits on the same table more times than `storage.conflict_retries`
    allows. Nothing of it was committed: the table holds the other writers' commits, whole."""


T = TypeVar("T")
# Delta's optimistic-concurrency failures: the commit was refused, nothing of it is in the table
_CONFLICTS = ("ConcurrentAppendException", "ConcurrentDeleteReadException", "ConcurrentDeleteDeleteException",
              "ConcurrentTransactionException", "ConcurrentWriteException", "MetadataChangedException",
              "ProtocolChangedException", "DeltaConcurrentModificationException")


def conflict_kind(error: BaseException) -> str | None:
    """The Delta conflict class behind `error` (the Python class delta-spark converts it to, or, where another
    JVM error wraps it, the class named in its message); None when it is not a commit conflict."""
    if type(error).__name__ in _CONFLICTS:
        return type(error).__name__
    text = str(error)
    return next((c for c in _CONFLICTS if f"io.delta.exceptions.{c}" in text), None)


# A fault-injection point for the kill-and-rerun harness: with this set to a file path, a process about to make its
# first Delta commit writes that file (naming the table) and waits there, so a test can SIGKILL the stage at a real
# point (its work done, nothing committed yet) instead of guessing a time. Unset in every real run.
FAULT_PAUSE_ENV = "CUSTOMER_VALUE_FAULT_PAUSE_BEFORE_COMMIT"
_paused = False


def write_marker(path: str, text: str) -> None:
    """A test's pause point announces itself: the file appears whole (written aside, then renamed)."""
    with open(path + ".tmp", "w") as fh:
        fh.write(text)
    os.replace(path + ".tmp", path)


def fault_point_before_commit(name: str) -> None:
    """Pause forever before this process's first commit when the harness asked for it (`FAULT_PAUSE_ENV`)."""
    global _paused
    marker = os.environ.get(FAULT_PAUSE_ENV)
    if not marker or _paused:
        return
    _paused = True
    write_marker(marker, name)
    while True:
        time.sleep(60)


def retry_conflicts(name: str, commit: Callable[[], T], retries: int, backoff_s: float = 0.5) -> T:
    """Run `commit` (one Delta transaction, built afresh on each call) and, when another writer committed to
    `name` first in a way that conflicts with it, run it again against the table's new state, up to `retries`
    more times, with jittered backoff. Why retry is safe: a refused commit wrote nothing visible, and every
    write of this product replaces a slice or merges by key, so running it again gives the same table as if it
    had been first. Out of retries: `WriteConflict`, naming the table."""
    for attempt in range(retries + 1):
        try:
            return commit()
        except Exception as e:          # noqa: BLE001 - only conflicts are retried, anything else goes on up
            kind = conflict_kind(e)
            if kind is None:
                raise
            reason = str(e).splitlines()[0][:300]
            if attempt == retries:
                raise WriteConflict(f"{name}: the commit lost to concurrent writers {retries + 1} times (last: "
                                    f"{reason}); nothing of it was committed. Is another job writing {name}? "
                                    f"Rerun once it is done (storage.conflict_retries: {retries})") from None
            wait = backoff_s * (2 ** attempt) * (0.5 + random.random())
            print(f"[delta] {name}: a concurrent commit conflicted ({kind}); retrying in {wait:.1f} s "
                  f"({attempt + 1}/{retries})", file=sys.stderr, flush=True)
            time.sleep(wait)
    raise AssertionError("unreachable")


def spec(name: str) -> TableSpec:
    try:
        return TABLES[name]
    except KeyError:
        raise UnknownTableError(f"unknown table {name!r}; known: {', '.join(sorted(TABLES))}") from None


class Tables:
    """Resolves table names against one storage configuration."""

    def __init__(self, storage: StorageConfig):
        self.storage = storage

    def location(self, name: str) -> str:
        """Filesystem path (or URI) of a path-addressed table."""
        layer, table = spec(name).name.split(".", 1)
        root = self.storage.root
        if "://" not in root:
            root = os.path.abspath(root)
        return f"{root.rstrip('/')}/{layer}/{table}"

    def identifier(self, name: str) -> str | None:
        """Metastore identifier `<catalog>.<layer>.<table>` when a catalog is configured, else None."""
        spec(name)
        return f"{self.storage.catalog}.{name}" if self.storage.catalog else None

    def read(self, spark: SparkSession, name: str, version: int | None = None) -> DataFrame:
        reader = spark.read.format("delta")
        if version is not None:
            reader = reader.option("versionAsOf", version)
        ident = self.identifier(name)
        return reader.table(ident) if ident else reader.load(self.location(name))

    def write(
        self,
        df: DataFrame,
        name: str,
        mode: str = "overwrite",
        replace_where: str | None = None,
        options: dict[str, str] | None = None,
    ) -> None:
        """One atomic Delta commit. `replace_where` overwrites exactly the matching slice (rerun-safe); a commit
        refused for a concurrent writer's is retried (`commit`)."""
        table = spec(name)

        def save() -> None:
            writer = df.write.format("delta").mode(mode)
            if table.partition_by:
                writer = writer.partitionBy(*table.partition_by)
            if replace_where:
                writer = writer.option("replaceWhere", replace_where)
            for key, value in (options or {}).items():
                writer = writer.option(key, value)
            ident = self.identifier(name)
            if ident:
                writer.saveAsTable(ident)
            else:
                writer.save(self.location(name))

        self.commit(name, save)

    def commit(self, name: str, transaction: Callable[[], T]) -> T:
        """Run one Delta transaction on `name` (a write, or a MERGE built inside `transaction` so that a retry
        reads the table afresh), retried when a concurrent writer's commit conflicts with it."""
        fault_point_before_commit(name)
        return retry_conflicts(name, transaction, self.storage.conflict_retries)

    def exists(self, spark: SparkSession, name: str) -> bool:
        from delta.tables import DeltaTable

        ident = self.identifier(name)
        if ident:
            return spark.catalog.tableExists(ident)
        return DeltaTable.isDeltaTable(spark, self.location(name))

    def version(self, spark: SparkSession, name: str) -> int:
        """The table's latest committed version (what a job that reads it now reads)."""
        return int(self.delta_table(spark, name).history(1).collect()[0]["version"])

    def delta_table(self, spark: SparkSession, name: str):
        """The `DeltaTable` handle, for MERGE, history and maintenance."""
        from delta.tables import DeltaTable

        ident = self.identifier(name)
        return DeltaTable.forName(spark, ident) if ident else DeltaTable.forPath(spark, self.location(name))

    def names(self, layers: Sequence[str] | None = None) -> list[str]:
        return sorted(n for n in TABLES if layers is None or n.split(".", 1)[0] in layers)
