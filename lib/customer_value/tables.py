"""Table names to locations: the only module that knows where `<layer>.<table>` lives.

Why: jobs and analysts speak of `bronze.orders` or `gold.customer_scores`; whether that is a folder on a laptop,
an object-store path on a cluster or a Unity Catalog table on Databricks is configuration, decided here once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

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
        """One atomic Delta commit. `replace_where` overwrites exactly the matching slice (rerun-safe)."""
        table = spec(name)
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

    def exists(self, spark: SparkSession, name: str) -> bool:
        from delta.tables import DeltaTable

        ident = self.identifier(name)
        if ident:
            return spark.catalog.tableExists(ident)
        return DeltaTable.isDeltaTable(spark, self.location(name))

    def delta_table(self, spark: SparkSession, name: str):
        """The `DeltaTable` handle, for MERGE, history and maintenance."""
        from delta.tables import DeltaTable

        ident = self.identifier(name)
        return DeltaTable.forName(spark, ident) if ident else DeltaTable.forPath(spark, self.location(name))

    def names(self, layers: Sequence[str] | None = None) -> list[str]:
        return sorted(n for n in TABLES if layers is None or n.split(".", 1)[0] in layers)
