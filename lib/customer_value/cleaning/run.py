"""The clean job: bronze -> silver.customers, silver.orders, silver.order_items, silver.events, silver.reviews,
their version histories (silver.customer_history, silver.order_history, silver.review_history),
quarantine.rejects and ops.data_quality.

Silver is recomputed from bronze on each run (deterministic: same bronze, same silver), so a rerun after any
crash converges; the histories are MERGEd (one commit each), so their Delta log shows what each run changed. The metrics are written first; when a threshold is broken the job fails before publishing
silver, so downstream jobs keep reading the last good version.
"""

from __future__ import annotations

import hashlib
import time

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from customer_value.cleaning import tables as clean
from customer_value.cleaning.history import VALID_FROM
from customer_value.cleaning.pseudonymise import load_key
from customer_value.cleaning.quality import METRICS_SCHEMA, check_thresholds, count_stages, metric_rows, profile
from customer_value.cleaning.rules import REJECT
from customer_value.config import Config
from customer_value.ingest.parse import union_all
from customer_value.landing import SOURCES
from customer_value.tables import Tables

SILVER = {"users": "silver.customers", "orders": "silver.orders", "order_items": "silver.order_items",
          "events": "silver.events", "reviews": "silver.reviews"}
# The version histories beside the current-state tables of the keyed sources (what features read as of S).
HISTORY = {"users": "silver.customer_history", "orders": "silver.order_history", "reviews": "silver.review_history"}
HISTORY_KEYS = {"silver.customer_history": "customer_id", "silver.order_history": "order_id",
                "silver.review_history": "review_id"}
# Delta CHECK constraints: a backstop in the table itself, enforced on every write by any writer.
CONSTRAINTS = {
    "silver.customers": {"customer_id_hashed": "length(customer_id) = 64"},
    "silver.orders": {"total_in_range": "total >= 0", "discount_not_negative": "discount >= 0",
                      "item_count_not_negative": "item_count >= 0"},
    "silver.order_history": {"total_in_range": "total >= 0", "valid_interval": "valid_to IS NULL OR valid_to > valid_from"},
    "silver.customer_history": {"customer_id_hashed": "length(customer_id) = 64",
                                "valid_interval": "valid_to IS NULL OR valid_to > valid_from"},
    "silver.review_history": {"valid_interval": "valid_to IS NULL OR valid_to > valid_from"},
    "silver.order_items": {"quantity_positive": "quantity > 0", "price_not_negative": "unit_price >= 0"},
    "silver.events": {"event_ts_present": "event_ts IS NOT NULL"},
    "silver.reviews": {"rating_1_to_5": "rating BETWEEN 1 AND 5"},
}


def _log(msg: str) -> None:
    print(f"[clean] {msg}", flush=True)


def run_id(spark: SparkSession, tables: Tables) -> str:
    """Derived from the bronze versions read: the same input gives the same run id (reruns replace, not add)."""
    versions = [f"{s}:{tables.delta_table(spark, f'bronze.{s}').history(1).collect()[0]['version']}" for s in SOURCES]
    return "c" + hashlib.sha256(",".join(versions).encode()).hexdigest()[:15]


def add_constraints(spark: SparkSession, tables: Tables, name: str) -> None:
    existing = tables.delta_table(spark, name).detail().collect()[0]["properties"]
    target = tables.identifier(name) or f"delta.`{tables.location(name)}`"
    for cname, expr in CONSTRAINTS.get(name, {}).items():
        if f"delta.constraints.{cname.lower()}" not in existing:
            spark.sql(f"ALTER TABLE {target} ADD CONSTRAINT {cname} CHECK ({expr})")


def merge_history(spark: SparkSession, tables: Tables, history: DataFrame, name: str) -> None:
    """One MERGE commit: new versions inserted, versions whose `valid_to` (or content) changed updated, versions
    no longer derived from bronze deleted. A rerun on the same bronze matches every row and changes nothing;
    the table's own log keeps what each run changed."""
    if not tables.exists(spark, name) or set(tables.read(spark, name).columns) != set(history.columns):
        tables.write(history, name, options={"overwriteSchema": "true"})
        add_constraints(spark, tables, name)
        return
    key = HISTORY_KEYS[name]
    cols = history.columns
    target = tables.delta_table(spark, name).alias("t")
    differs = " OR ".join(f"NOT (t.`{c}` <=> s.`{c}`)" for c in cols if c not in (key, VALID_FROM))
    (target.merge(history.alias("s"), f"t.`{key}` = s.`{key}` AND t.{VALID_FROM} = s.{VALID_FROM}")
     .whenMatchedUpdate(condition=differs, set={c: f"s.`{c}`" for c in cols})
     .whenNotMatchedInsertAll()
     .whenNotMatchedBySourceDelete()
     .execute())


def clean_all(spark: SparkSession, cfg: Config) -> dict:
    t_start = time.perf_counter()
    tables = Tables(cfg.storage)
    ctx = clean.Context(cfg.cleaning, load_key(cfg.pseudonymisation), cfg.cleaning.today())
    rid = run_id(spark, tables)
    bronze = {s: tables.read(spark, f"bronze.{s}") for s in SOURCES}
    quarantined = {s: tables.read(spark, f"quarantine.{s}").count() for s in SOURCES}

    stages = clean.silver_stages(bronze, ctx)
    # the outlier flag is a quantile of the valid order totals over the whole history (data quality only)
    orders = stages["orders"]
    orders.ruled = orders.ruled.persist(StorageLevel.MEMORY_AND_DISK)
    cap = orders.ruled.where(F.col(REJECT).isNull()).approxQuantile("total", [cfg.cleaning.outlier_quantile], 0.0001)
    outlier_cap = float(cap[0]) if cap else None

    counts, metrics, silver = [], [], {}
    for source, st in stages.items():
        t0 = time.perf_counter()
        st.ruled = st.ruled.persist(StorageLevel.MEMORY_AND_DISK)
        if st.history is not None:  # the current state is the history's open versions: computed once
            st.history = st.history.persist(StorageLevel.MEMORY_AND_DISK)
            st.silver = clean.current(st.history)
        if source == "orders":
            st.silver = clean.flag_outliers(st.silver, outlier_cap)
        st.silver = st.silver.persist(StorageLevel.MEMORY_AND_DISK)
        c = count_stages(SILVER[source], quarantined[source], st)
        counts.append(c)
        metrics += metric_rows(rid, c, profile(st.silver))
        silver[source] = st.silver
        _log(f"{SILVER[source]:<20} in {c.rows_in:>10,}  dup {c.exact_duplicates:>6,}  superseded "
             f"{c.superseded_versions:>5,}  rejected {sum(c.rejected.values()):>6,}  flagged "
             f"{sum(c.flagged.values()):>6,}  out {c.rows_out:>10,}  ({time.perf_counter() - t0:.1f} s)")

    tables.write(spark.createDataFrame(metrics, METRICS_SCHEMA), "ops.data_quality", replace_where=f"run_id = '{rid}'")
    check_thresholds(counts, cfg.cleaning.max_reject_share)

    rejects = union_all([clean.reject_records(st, SILVER[s], s) for s, st in stages.items()])
    tables.write(rejects, "quarantine.rejects", options={"overwriteSchema": "true"})
    for source, st in stages.items():
        if st.history is not None:
            merge_history(spark, tables, st.history, HISTORY[source])
    for source, df in silver.items():
        tables.write(df, SILVER[source], options={"overwriteSchema": "true"})
        add_constraints(spark, tables, SILVER[source])
        df.unpersist()
    for st in stages.values():
        st.ruled.unpersist()
        if st.history is not None:
            st.history.unpersist()
    _log(f"run {rid}: silver published in {time.perf_counter() - t_start:.1f} s")
    return {c.table: c for c in counts}
