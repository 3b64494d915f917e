"""The ingest job: new landing files -> bronze.<source>, quarantine.<source>, quarantine.files, ops.ingest_log.

Rerun safety: one batch per run, its id derived from the set of new files. Every table is written with
`replaceWhere _batch_id = <id>`, and `ops.ingested_files` is MERGEd last, as the batch's commit marker. A run
first deletes rows of batches that never reached the marker (a crash), so a rerun, with the same or more
files, ends as if the crash never happened.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from customer_value.config import Config
from customer_value.ingest.files import LandingFile, batch_id, list_landing, read_header
from customer_value.ingest.parse import (ISSUES, RAW, REASON, REPLACEMENT_CHAR, parse_csv, parse_jsonl, read_lines,
                                         type_columns, union_all)
from customer_value.ingest.screen import screen
from customer_value.landing import SOURCES, Location, landing_uri
from customer_value.schemas import RAW_SOURCES
from customer_value.tables import Tables

LOG_SCHEMA = T.StructType([
    T.StructField("_batch_id", T.StringType(), False),
    T.StructField("source", T.StringType(), False),
    T.StructField("file", T.StringType(), False),
    T.StructField("status", T.StringType(), False),  # ingested | quarantined
    T.StructField("reason", T.StringType(), True),
    T.StructField("encoding", T.StringType(), True),
    T.StructField("layout", T.ArrayType(T.StringType()), True),
    T.StructField("rows_read", T.LongType(), False),
    T.StructField("rows_bronze", T.LongType(), False),
    T.StructField("rows_quarantined", T.LongType(), False),
    T.StructField("_ingested_at", T.TimestampType(), False),
])
FILES_SCHEMA = T.StructType([
    T.StructField("file", T.StringType(), False),
    T.StructField("source", T.StringType(), False),
    T.StructField("size", T.LongType(), False),
    T.StructField("modified_ns", T.LongType(), False),
    T.StructField("_batch_id", T.StringType(), False),
    T.StructField("_ingested_at", T.TimestampType(), False),
])
QUARANTINED_FILES_SCHEMA = T.StructType([
    T.StructField("source", T.StringType(), False),
    T.StructField("_source_file", T.StringType(), False),
    T.StructField("_reason", T.StringType(), False),
    T.StructField("_batch_id", T.StringType(), False),
    T.StructField("_ingested_at", T.TimestampType(), False),
])
BATCHED_TABLES = [f"bronze.{s}" for s in SOURCES] + [f"quarantine.{s}" for s in SOURCES] + [
    "quarantine.files", "ops.ingest_log"]


def spark_path(path: str) -> str:
    """A path the way Spark's input_file_name() reports it."""
    return Path(path).as_uri() if "://" not in path else path


@dataclass
class IngestResult:
    batch_id: str | None
    files: int = 0
    per_source: dict[str, dict[str, int]] = field(default_factory=dict)
    seconds: float = 0.0


def _log(msg: str) -> None:
    print(f"[ingest] {msg}", flush=True)


def committed_files(spark: SparkSession, tables: Tables) -> DataFrame | None:
    return tables.read(spark, "ops.ingested_files") if tables.exists(spark, "ops.ingested_files") else None


def drop_uncommitted_batches(spark: SparkSession, tables: Tables, committed: list[str]) -> None:
    """Remove what a crashed run wrote before its commit marker."""
    for name in BATCHED_TABLES:
        if tables.exists(spark, name):
            condition = ~F.col("_batch_id").isin(committed) if committed else F.lit(True)
            if tables.read(spark, name).where(condition).limit(1).count():
                _log(f"removing rows of unfinished batches from {name}")
                tables.commit(name, lambda: tables.delta_table(spark, name).delete(condition))


def _lines(spark: SparkSession, paths: list[str], latin1: set[str]) -> DataFrame:
    """Lines decoded as UTF-8, those of the files in `latin1` (Spark paths: not valid UTF-8) as Latin-1."""
    as_latin1 = [p for p in paths if spark_path(p) in latin1]
    as_utf8 = [p for p in paths if spark_path(p) not in latin1]
    return union_all([read_lines(spark, group, encoding)
                      for group, encoding in ((as_utf8, "UTF-8"), (as_latin1, "ISO-8859-1")) if group])


def changed_while_read(files: list[LandingFile]) -> list[str]:
    """Files whose size or modification time is no longer what the listing saw: their rows may be half old,
    half new."""
    out = []
    for f in files:
        loc = Location.of(f.path)
        info = loc.fs.get_file_info(loc.path)
        if info.size != f.size or (info.mtime_ns or 0) != f.modified:
            out.append(f.path)
    return out


def parse_source(spark: SparkSession, source: str, files: list[LandingFile],
                 latin1: set[str]) -> tuple[DataFrame | None, list[tuple[str, str]]]:
    """Typed rows with `_reason` for the files of one source, and the files rejected whole (file, reason).
    `latin1`: files (Spark paths) already known not to be valid UTF-8, read as Latin-1; so is a CSV file whose
    header line is not (its header is read here)."""
    src = RAW_SOURCES[source]
    rejected: list[tuple[str, str]] = []
    if src.fmt == "jsonl":
        return type_columns(parse_jsonl(_lines(spark, [f.path for f in files], latin1), src), src), rejected
    groups: dict[tuple[str, ...], list[str]] = defaultdict(list)
    for f in files:
        header, problem = read_header(f.path)
        if header is not None:
            missing = [c for c in src.required if c not in header]
            if not set(header) & set(src.names):
                problem = "unrecognised_header"
            elif missing:
                problem = f"missing_required_column:{missing[0]}"
            if any(REPLACEMENT_CHAR in c for c in header):
                latin1.add(spark_path(f.path))
        if problem:
            rejected.append((spark_path(f.path), problem))
        else:
            groups[tuple(header)].append(f.path)
    frames = [parse_csv(_lines(spark, paths, latin1), src, header) for header, paths in groups.items()]
    return (type_columns(union_all(frames), src) if frames else None), rejected


def parse_and_count(spark: SparkSession, source: str, files: list[LandingFile],
                    stamp: list) -> tuple[DataFrame | None, list, list[tuple[str, str]]]:
    """The source's typed rows (persisted, stamped with the batch), their counts per file, and the files
    rejected whole.

    Why the encoding is judged from the counts: a file is read as UTF-8 and, where its lines hold the
    replacement character (bytes that are not UTF-8), read again as Latin-1. Asking that of the counting pass
    that has to read every line anyway, instead of a pass of its own first, saves a read of every landing file
    in the usual batch where every file is UTF-8."""
    latin1: set[str] = set()
    for attempt in range(2):
        rows, rejected = parse_source(spark, source, files, latin1) if files else (None, [])
        if rows is None:
            return None, [], rejected
        rows = rows.select("*", *stamp).persist(StorageLevel.MEMORY_AND_DISK)
        stats = rows.groupBy("_source_file").agg(
            F.first("_encoding").alias("encoding"),
            F.first(F.filter(ISSUES, lambda i: i.startswith("extra_column") | i.startswith("missing_column"))).alias("layout"),
            F.count(F.lit(1)).alias("read"),
            F.count(F.when(F.col(REASON).isNull(), 1)).alias("bronze"),
            F.count(F.when(F.col(REASON).isNotNull(), 1)).alias("quarantined"),
            F.max(F.col(RAW).contains(REPLACEMENT_CHAR)).alias("undecodable"),
        ).collect()
        bad = sorted(s._source_file for s in stats if s.undecodable and s._source_file not in latin1)
        if not bad or attempt:
            return rows, stats, rejected
        _log(f"{len(bad)} file(s) not valid UTF-8, read as Latin-1: {', '.join(b.rsplit('/', 1)[-1] for b in bad)}")
        rows.unpersist()
        latin1 |= set(bad)
    raise AssertionError("unreachable")


def ingest(spark: SparkSession, cfg: Config, sources: tuple[str, ...] = SOURCES) -> IngestResult:
    t_start = time.perf_counter()
    tables = Tables(cfg.storage)
    done = committed_files(spark, tables)
    committed_batches = [r._batch_id for r in done.select("_batch_id").distinct().collect()] if done else []
    drop_uncommitted_batches(spark, tables, committed_batches)
    seen = {r.file: r.size for r in done.select("file", "size").collect()} if done else {}
    listing = list_landing(landing_uri(cfg), list(sources))
    new = [f for f in listing if spark_path(f.path) not in seen]
    changed = [f.path for f in listing if spark_path(f.path) in seen and seen[spark_path(f.path)] != f.size]
    if changed:
        _log(f"WARNING: {len(changed)} file(s) changed since they were ingested and are NOT ingested again "
             f"(files are tracked by path; deliver new data under new names): {', '.join(changed[:5])}")
    if not new:
        _log("no new files in the landing folder")
        return IngestResult(batch_id=None, seconds=time.perf_counter() - t_start)
    bid = batch_id(new)
    now = datetime.now(timezone.utc).replace(microsecond=0, tzinfo=None)
    _log(f"batch {bid}: {len(new)} new files")
    result = IngestResult(batch_id=bid, files=len(new))
    log_rows, rejected_files = [], []
    stamp = [F.lit(bid).alias("_batch_id"), F.lit(now).cast("timestamp").alias("_ingested_at")]
    where = f"_batch_id = '{bid}'"

    unstable: set[str] = set()     # changed while read: not committed, taken again by the next run
    for source in sources:
        t0 = time.perf_counter()
        src = RAW_SOURCES[source]
        files, rejected = [], []
        for f in (f for f in new if f.source == source):
            problem = screen(f.path)
            if problem:
                rejected.append((spark_path(f.path), problem))
            else:
                files.append(f)
        rows, stats, unreadable = parse_and_count(spark, source, files, stamp)
        rejected += unreadable
        if rows is None:
            rows = spark.createDataFrame([], T.StructType(
                [T.StructField("_source_file", T.StringType()), T.StructField("_encoding", T.StringType()),
                 T.StructField(RAW, T.StringType()), *src.typed_schema().fields,
                 T.StructField(ISSUES, T.ArrayType(T.StringType())), T.StructField(REASON, T.StringType())]))
            rows = rows.select("*", *stamp)
        changed_now = changed_while_read(files)
        if changed_now:
            gone = {spark_path(p) for p in changed_now}
            _log(f"{len(changed_now)} file(s) changed while being read, left for the next run: "
                 f"{', '.join(p.rsplit('/', 1)[-1] for p in changed_now)}")
            unstable |= set(changed_now)
            rejected += [(p, "changed_while_read") for p in sorted(gone)]
            rows = rows.where(~F.col("_source_file").isin(sorted(gone)))
            stats = [st for st in stats if st._source_file not in gone]
        bronze = rows.where(F.col(REASON).isNull()).select(
            *src.names, "_source_file", "_encoding", ISSUES, "_batch_id", "_ingested_at")
        quarantine = rows.where(F.col(REASON).isNotNull()).select(
            "_source_file", "_encoding", RAW, REASON, ISSUES, "_batch_id", "_ingested_at")
        tables.write(bronze, f"bronze.{source}", replace_where=where)
        tables.write(quarantine, f"quarantine.{source}", replace_where=where)
        rows.unpersist()
        rejected_files += [(source, path, reason) for path, reason in rejected]
        log_rows += [(bid, source, path, "quarantined", reason, None, None, 0, 0, 0, now) for path, reason in rejected]
        logged = {st._source_file for st in stats} | {path for path, _ in rejected}
        for f in files:                 # a readable file without a single line: logged, with nothing read
            if spark_path(f.path) not in logged:
                log_rows.append((bid, source, spark_path(f.path), "ingested", None, None, None, 0, 0, 0, now))
        for s in stats:
            log_rows.append((bid, source, s._source_file, "ingested", None, s.encoding, s.layout, s.read, s.bronze,
                             s.quarantined, now))
        totals = {k: sum(getattr(s, k) for s in stats) for k in ("read", "bronze", "quarantined")}
        totals["files_quarantined"] = len(rejected)
        result.per_source[source] = totals
        _log(f"{source:<12} {len(files):>4} files, {totals['read']:>10,} rows -> bronze {totals['bronze']:>10,}, "
             f"quarantine {totals['quarantined']:>7,}, whole files quarantined {len(rejected)} "
             f"({time.perf_counter() - t0:.1f} s)")

    tables.write(spark.createDataFrame([(s, p, r, bid, now) for s, p, r in rejected_files], QUARANTINED_FILES_SCHEMA),
                 "quarantine.files", replace_where=where)
    tables.write(spark.createDataFrame(log_rows, LOG_SCHEMA), "ops.ingest_log", replace_where=where)
    marker = spark.createDataFrame([(spark_path(f.path), f.source, f.size, f.modified, bid, now) for f in new
                                    if f.path not in unstable], FILES_SCHEMA)
    if done is None:
        tables.write(marker, "ops.ingested_files", mode="append")
    else:
        tables.commit("ops.ingested_files", lambda: tables.delta_table(spark, "ops.ingested_files").alias("t")
                      .merge(marker.alias("n"), "t.file = n.file").whenNotMatchedInsertAll().execute())
    result.seconds = time.perf_counter() - t_start
    _log(f"batch {bid} committed in {result.seconds:.1f} s")
    return result
