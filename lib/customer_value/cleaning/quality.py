"""Data-quality metrics per table and run, in long form for ops.data_quality, and the threshold check.

Why long form (table, metric, dimension, value): reasons, flags and columns vary per table and over time;
analysts pivot what they need, and new metrics need no schema change.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from customer_value.cleaning.rules import FLAGS, REJECT

METRICS_SCHEMA = T.StructType([
    T.StructField("run_id", T.StringType(), False),
    T.StructField("table", T.StringType(), False),
    T.StructField("metric", T.StringType(), False),
    T.StructField("dimension", T.StringType(), True),
    T.StructField("value", T.DoubleType(), False),
])
NUMERIC = (T.NumericType, T.DateType, T.TimestampType)


class DataQualityError(RuntimeError):
    """A table broke a data-quality threshold; its metrics are in ops.data_quality."""


@dataclass
class TableCounts:
    table: str
    quarantined: int
    rows_in: int
    exact_duplicates: int
    superseded_versions: int
    rejected: dict[str, int]
    flagged: dict[str, int]
    rows_out: int

    @property
    def reject_share(self) -> float:
        read = self.rows_in + self.quarantined
        return (self.quarantined + sum(self.rejected.values())) / read if read else 0.0


def count_stages(table: str, quarantined: int, stages) -> tuple[TableCounts, list[tuple[str, str | None, float]]]:
    """Rows at each stage, and silver's profile (null rates, minima, maxima). Superseded versions are the
    accepted rows that are not the current state: earlier versions (kept in the history table) and re-sent copies
    of a version.

    Three small jobs: bronze's rows; the ruled rows by reject reason (one ruled row per deduplicated row, so
    their sum is the deduplicated count, without a second pass through the deduplication); silver by its sets
    of flags, with the profile's sums, minima and maxima per set (silver's count is their sum, each flag's count
    the sum over the sets that hold it)."""
    rows_in = stages.bronze.count()
    by_reason = {r[REJECT]: r["count"] for r in stages.ruled.groupBy(REJECT).count().collect()}
    dedup = sum(by_reason.values())
    rejected = {reason: n for reason, n in by_reason.items() if reason is not None}
    out, flagged, profile_rows = silver_counts(stages.silver)
    counts = TableCounts(table, quarantined, rows_in, rows_in - dedup, dedup - sum(rejected.values()) - out, rejected,
                         flagged, out)
    return counts, profile_rows


def silver_counts(silver: DataFrame) -> tuple[int, dict[str, int], list[tuple[str, str | None, float]]]:
    """Silver's rows, its rows per flag, and its profile: the null rate of every column and the min/max of the
    numeric and time columns (times as epoch seconds), in one pass grouped by the set of flags."""
    cols = [f for f in silver.schema.fields if not isinstance(f.dataType, T.ArrayType)]
    aggs = [F.count(F.lit(1)).alias("_rows")]
    aggs += [F.count(F.when(F.col(f.name).isNull(), 1)).alias(f"nulls|{f.name}") for f in cols]
    bounds = []
    for f in cols:
        if isinstance(f.dataType, NUMERIC):
            as_number = F.col(f.name).cast("timestamp").cast("double") if isinstance(f.dataType, T.DateType) else F.col(f.name).cast("double")
            aggs += [F.min(as_number).alias(f"min|{f.name}"), F.max(as_number).alias(f"max|{f.name}")]
            bounds.append(f.name)
    groups = silver.groupBy(FLAGS).agg(*aggs).collect()
    out = sum(g["_rows"] for g in groups)
    flagged: dict[str, int] = {}
    for g in groups:
        for flag in g[FLAGS] or ():
            flagged[flag] = flagged.get(flag, 0) + g["_rows"]
    rows: list[tuple[str, str | None, float]] = []
    if out:
        rows += [("null_rate", f.name, sum(g[f"nulls|{f.name}"] for g in groups) / out) for f in cols]
    for name in bounds:
        for metric, pick in (("min", min), ("max", max)):
            values = [g[f"{metric}|{name}"] for g in groups if g[f"{metric}|{name}"] is not None]
            if values:
                rows.append((metric, name, float(pick(values))))
    return out, flagged, rows


def metric_rows(run_id: str, counts: TableCounts, profile_rows) -> list[tuple]:
    t = counts.table
    rows = [
        (run_id, t, "rows_quarantined_at_ingest", None, float(counts.quarantined)),
        (run_id, t, "rows_in", None, float(counts.rows_in)),
        (run_id, t, "exact_duplicates", None, float(counts.exact_duplicates)),
        (run_id, t, "superseded_versions", None, float(counts.superseded_versions)),
        (run_id, t, "duplicate_rate", None, (counts.exact_duplicates + counts.superseded_versions) / max(counts.rows_in, 1)),
        (run_id, t, "rows_out", None, float(counts.rows_out)),
        (run_id, t, "reject_share", None, counts.reject_share),
    ]
    rows += [(run_id, t, "rejected", reason, float(n)) for reason, n in sorted(counts.rejected.items())]
    rows += [(run_id, t, "flagged", flag, float(n)) for flag, n in sorted(counts.flagged.items())]
    rows += [(run_id, t, metric, column, value) for metric, column, value in profile_rows]
    return rows


def check_thresholds(counts: list[TableCounts], max_reject_share: float, min_rows: int = 0) -> None:
    """Fails when a table rejected more than `max_reject_share` of what it read; a table that read fewer than
    `min_rows` rows (a small daily batch, where one bad line is a large share) is not judged."""
    over = [c for c in counts if c.rows_in + c.quarantined >= min_rows and c.reject_share > max_reject_share]
    if over:
        detail = "; ".join(f"{c.table}: {c.reject_share:.1%} of rows rejected or quarantined "
                           f"({', '.join(f'{k} {v}' for k, v in sorted(c.rejected.items())) or 'at ingest'})" for c in over)
        raise DataQualityError(
            f"data-quality threshold exceeded (cleaning.max_reject_share = {max_reject_share:.1%}): {detail}. "
            "Silver was not updated; metrics are in ops.data_quality.")
