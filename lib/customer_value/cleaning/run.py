"""The clean job: bronze -> silver.customers, silver.orders, silver.order_items, silver.events, silver.reviews,
their version histories (silver.customer_history, silver.order_history, silver.review_history),
quarantine.rejects and ops.data_quality.

Two modes, the same silver:
- full (the first run, `--full`, `cleaning.incremental: false`, or a changed key or schema): silver is recomputed
  from all of bronze (deterministic: same bronze, same silver);
- incremental (every later run): only the bronze batches not yet in `ops.clean_batches` are read, with the keys
  they touch. A key's rows are cleaned from *all* its bronze rows (an order's versions, a customer's profile
  edits, an order's item lines), so its history is what a full run gives; the slice's rows replace that key's
  rows in one MERGE per table. Events are append-only: the new ones are inserted unless already there.
  Cost follows the new batches, not the history (the keyed bronze tables are read by key, events never again).

Each table is one Delta commit, and the batches are recorded in `ops.clean_batches` last: a crash anywhere reruns
the same slice, which replaces what it wrote (no duplicates). The metrics are written first; when a threshold is
broken the job fails before publishing silver, so downstream jobs keep reading the last good version.

What a daily run does not redo: the outlier flag of orders outside the slice keeps the cap of the run that wrote
it (a data-quality signal, read by no feature or label); `--full` re-flags every order against today's quantile.
"""

from __future__ import annotations

import hashlib
import time

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from customer_value.cleaning import tables as clean
from customer_value.cleaning.history import VALID_FROM
from customer_value.cleaning.pseudonymise import hmac_hex, load_key, pseudonym
from customer_value.cleaning.quality import METRICS_SCHEMA, check_thresholds, count_stages, metric_rows
from customer_value.cleaning.rules import FLAGS, REJECT
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


BATCHES = "ops.clean_batches"
BATCHES_SCHEMA = "source string, batch_id string, run_id string, key_check string, cleaned_at timestamp"
# Silver's key per source: a slice's rows replace the rows of these keys (order items: by their order).
SLICE_KEYS = {"users": "customer_id", "orders": "order_id", "order_items": "order_id", "reviews": "review_id"}
EVENT_IDENTITY = ("customer_id", "event_ts", "event_type", "product_id", "session_id")


def _log(msg: str) -> None:
    print(f"[clean] {msg}", flush=True)


def run_id(spark: SparkSession, tables: Tables) -> str:
    """Derived from the bronze versions read: the same input gives the same run id (reruns replace, not add)."""
    versions = [f"{s}:{tables.version(spark, f'bronze.{s}')}" for s in SOURCES]
    return "c" + hashlib.sha256(",".join(versions).encode()).hexdigest()[:15]


def constraint_options(name: str) -> dict[str, str]:
    """The table's CHECK constraints as options of the write that creates or replaces it: Delta records them in
    that commit's metadata and checks that very write's rows against them (a violating row fails the commit,
    nothing is written), so a new silver table never exists without its constraints, and no `ALTER TABLE ... ADD
    CONSTRAINT` follows it (each was a commit and a scan of the table of its own: 13 of them, ~9 s of a clean)."""
    return {f"delta.constraints.{cname.lower()}": expr for cname, expr in CONSTRAINTS.get(name, {}).items()}


def merge_history(spark: SparkSession, tables: Tables, history: DataFrame, name: str) -> None:
    """One MERGE commit: new versions inserted, versions whose `valid_to` (or content) changed updated, versions
    no longer derived from bronze deleted. A rerun on the same bronze matches every row and changes nothing;
    the table's own log keeps what each run changed."""
    if not tables.exists(spark, name) or set(tables.read(spark, name).columns) != set(history.columns):
        tables.write(history, name, options={"overwriteSchema": "true", **constraint_options(name)})
        return
    key = HISTORY_KEYS[name]
    cols = history.columns
    differs = " OR ".join(f"NOT (t.`{c}` <=> s.`{c}`)" for c in cols if c not in (key, VALID_FROM))
    tables.commit(name, lambda: (
        tables.delta_table(spark, name).alias("t")
        .merge(history.alias("s"), f"t.`{key}` = s.`{key}` AND t.{VALID_FROM} = s.{VALID_FROM}")
        .whenMatchedUpdate(condition=differs, set={c: f"s.`{c}`" for c in cols})
        .whenNotMatchedInsertAll()
        .whenNotMatchedBySourceDelete()
        .execute()))


def key_check(key: bytes) -> str:
    """A fingerprint of the pseudonymisation key (not the key, nor a way back to it): silver made under another
    key cannot take an incremental slice, whose pseudonyms would not match."""
    return hmac_hex(key, "customer-value key check")[:16]


def batches_to_clean(spark: SparkSession, tables: Tables, check: str) -> dict[str, list[str]] | None:
    """Per source, the bronze batches silver has not seen; None where a full run is needed (no silver yet, no
    record of cleaned batches, or silver made under another key)."""
    if not all(tables.exists(spark, n) for n in (BATCHES, *SILVER.values(), *HISTORY.values())):
        return None
    done = tables.read(spark, BATCHES).collect()
    if not done or {r["key_check"] for r in done} != {check}:
        return None
    seen = {(r["source"], r["batch_id"]) for r in done}
    return {s: [b for b in present if (s, b) not in seen] for s, present in _all_batches(spark, tables).items()}


def incremental_slice(bronze: dict[str, DataFrame], new: dict[str, list[str]]) -> tuple[dict[str, DataFrame], dict[str, DataFrame]]:
    """The bronze rows an incremental run cleans, and the raw keys they cover, from the new batches per source.

    Keys touched by a new row are recomputed from all their bronze rows: a customer with a new profile version;
    an order with a new version or a new item line (its item count changes), and the orders and reviews of a
    customer seen for the first time (rows that arrived before their customer were flagged orphans); the item
    lines of every such order. Events are append-only: only the new ones."""
    fresh = {s: bronze[s].where(F.col("_batch_id").isin(new[s])) if new[s] else bronze[s].limit(0) for s in SOURCES}
    users = fresh["users"].select("user_id").distinct()
    orders = (fresh["orders"].select("order_id")
              .unionByName(fresh["order_items"].select("order_id"))
              .unionByName(bronze["orders"].join(users, "user_id", "left_semi").select("order_id")).distinct())
    reviews = (fresh["reviews"].select("review_id")
               .unionByName(bronze["reviews"].join(users, "user_id", "left_semi").select("review_id")).distinct())
    keys = {"users": users, "orders": orders, "reviews": reviews}
    keys = {k: v.persist(StorageLevel.MEMORY_AND_DISK) for k, v in keys.items()}
    rows = {
        "users": bronze["users"].join(keys["users"], "user_id", "left_semi"),
        "orders": bronze["orders"].join(keys["orders"], "order_id", "left_semi"),
        "order_items": bronze["order_items"].join(keys["orders"], "order_id", "left_semi"),
        "events": fresh["events"],
        "reviews": bronze["reviews"].join(keys["reviews"], "review_id", "left_semi"),
    }
    return rows, keys


def replace_keys(spark: SparkSession, tables: Tables, name: str, rows: DataFrame, keys: DataFrame, key: str) -> None:
    """One MERGE commit: every row of `name` whose `key` is in `keys` is deleted and `rows` (the recomputed rows
    of exactly those keys) inserted. A rerun deletes and inserts the same rows: no duplicates, nothing lost.

    Why one MERGE and not a delete then an append: two commits would let a reader, or a crash, see the keys
    gone. The source is the keys to delete (matching on the key) and the rows to insert (a null match key)."""
    match = "_replace_key"
    key_type = dict(rows.dtypes)[key]
    deletes = keys.select(F.col(key).cast(key_type).alias(match)).distinct()
    deletes = deletes.select(match, *[F.lit(None).cast(t).alias(c) for c, t in rows.dtypes])
    inserts = rows.select(F.lit(None).cast(key_type).alias(match), *rows.columns)
    source = deletes.unionByName(inserts)
    tables.commit(name, lambda: (
        tables.delta_table(spark, name).alias("t")
        .merge(source.alias("s"), f"t.`{key}` = s.{match}")
        .whenMatchedDelete()
        .whenNotMatchedInsert(condition=f"s.{match} IS NULL", values={c: f"s.`{c}`" for c in rows.columns})
        .execute()))


def append_events(spark: SparkSession, tables: Tables, events: DataFrame, new_customers: DataFrame | None) -> None:
    """New events into silver.events unless already there (the same event re-sent in a later file), in one
    MERGE; then events of customers with a new profile lose their orphan flag (they arrived before it)."""
    same = " AND ".join(f"t.`{c}` <=> s.`{c}`" for c in EVENT_IDENTITY)
    if not events.isEmpty():
        tables.commit("silver.events", lambda: tables.delta_table(spark, "silver.events").alias("t")
                      .merge(events.alias("s"), same).whenNotMatchedInsertAll().execute())
    if new_customers is None:
        return
    tables.commit("silver.events", lambda: (
        tables.delta_table(spark, "silver.events").alias("t")
        .merge(new_customers.alias("s"), f"t.customer_id = s.customer_id AND array_contains(t.{FLAGS}, 'orphan')")
        .whenMatchedUpdate(set={FLAGS: f"array_remove(t.{FLAGS}, 'orphan')"})
        .execute()))


def record_batches(spark: SparkSession, tables: Tables, batches: dict[str, list[str]], rid: str, check: str,
                   full: bool) -> None:
    """The batches now in silver: replaced whole after a full run, MERGEd after an incremental one (last)."""
    now = spark.sql("SELECT current_timestamp() AS t").collect()[0]["t"]
    rows = [(s, b, rid, check, now) for s, bs in batches.items() for b in bs]
    df = spark.createDataFrame(rows, BATCHES_SCHEMA)
    if full or not tables.exists(spark, BATCHES):
        tables.write(df, BATCHES, options={"overwriteSchema": "true"})
    else:
        tables.commit(BATCHES, lambda: tables.delta_table(spark, BATCHES).alias("t")
                      .merge(df.alias("s"), "t.source = s.source AND t.batch_id = s.batch_id")
                      .whenNotMatchedInsertAll().execute())


def _all_batches(spark: SparkSession, tables: Tables) -> dict[str, list[str]]:
    """Per source, the batches bronze holds: one job over the five tables (a job has a fixed cost of seconds)."""
    found = union_all([tables.read(spark, f"bronze.{s}").select(F.lit(s).alias("source"), "_batch_id").distinct()
                       for s in SOURCES]).collect()
    return {s: sorted(r["_batch_id"] for r in found if r["source"] == s) for s in SOURCES}


def quarantined_rows(spark: SparkSession, tables: Tables, batches: dict[str, list[str]]) -> dict[str, int]:
    """Per source, the rows ingest quarantined in these batches: one job over the five tables."""
    counts = {s: 0 for s in SOURCES}
    parts = [tables.read(spark, f"quarantine.{s}").where(F.col("_batch_id").isin(batches[s]))
             .select(F.lit(s).alias("source")) for s in SOURCES if batches[s]]
    if parts:
        counts.update({r["source"]: r["count"] for r in union_all(parts).groupBy("source").count().collect()})
    return counts


def clean_all(spark: SparkSession, cfg: Config, full: bool = False) -> dict:
    """Clean bronze into silver: incrementally (the new batches) where silver allows it, else in full."""
    t_start = time.perf_counter()
    tables = Tables(cfg.storage)
    key = load_key(cfg.pseudonymisation)
    ctx = clean.Context(cfg.cleaning, key, cfg.cleaning.today())
    check = key_check(key)
    new = None if full or not cfg.cleaning.incremental else batches_to_clean(spark, tables, check)
    rid = run_id(spark, tables)
    bronze = {s: tables.read(spark, f"bronze.{s}") for s in SOURCES}
    if new is None:
        _log("full run: silver from all of bronze")
        batches, keys, known = _all_batches(spark, tables), None, None
    else:
        if not any(new.values()):
            _log("no new bronze batches: silver is up to date")
            return {}
        _log("incremental run: " + ", ".join(f"{s} {len(b)} new batch(es)" for s, b in new.items()))
        batches = new
        bronze, keys = incremental_slice(bronze, new)
        keys["customers"] = keys["users"].select(pseudonym(F.col("user_id"), key).alias("customer_id")).persist(
            StorageLevel.MEMORY_AND_DISK)
        known = clean.Known(
            customers=tables.read(spark, "silver.customers").select("customer_id").join(keys["customers"], "customer_id", "left_anti"),
            orders=tables.read(spark, "silver.orders").select("order_id").join(keys["orders"], "order_id", "left_anti"))
    in_batches = F.col("_batch_id").isin([b for bs in batches.values() for b in bs])
    quarantined = quarantined_rows(spark, tables, batches)

    stages = clean.silver_stages(bronze, ctx, known)
    # the outlier flag is a quantile of the valid order totals over the whole history (data quality only)
    orders = stages["orders"]
    orders.ruled = orders.ruled.persist(StorageLevel.MEMORY_AND_DISK)
    valid_totals = orders.ruled.where(F.col(REJECT).isNull()).select("total")
    if known is not None:
        valid_totals = valid_totals.unionByName(
            tables.read(spark, "silver.orders").join(keys["orders"], "order_id", "left_anti").select("total"))
    cap = valid_totals.approxQuantile("total", [cfg.cleaning.outlier_quantile], 0.0001)
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
        c, profile_rows = count_stages(SILVER[source], quarantined[source], st)
        counts.append(c)
        metrics += metric_rows(rid, c, profile_rows)
        silver[source] = st.silver
        _log(f"{SILVER[source]:<20} in {c.rows_in:>10,}  dup {c.exact_duplicates:>6,}  superseded "
             f"{c.superseded_versions:>5,}  rejected {sum(c.rejected.values()):>6,}  flagged "
             f"{sum(c.flagged.values()):>6,}  out {c.rows_out:>10,}  ({time.perf_counter() - t0:.1f} s)")

    tables.write(spark.createDataFrame(metrics, METRICS_SCHEMA), "ops.data_quality", replace_where=f"run_id = '{rid}'")
    check_thresholds(counts, cfg.cleaning.max_reject_share, cfg.cleaning.min_rows_to_judge)

    # rows of earlier batches in the slice were judged (and their rejects recorded) by the run that cleaned them
    rejects = union_all([clean.reject_records(st, SILVER[s], s) for s, st in stages.items()])
    if keys is None:
        tables.write(rejects, "quarantine.rejects", options={"overwriteSchema": "true"})
    else:
        in_list = ", ".join(f"'{b}'" for b in sorted({b for bs in batches.values() for b in bs}))
        tables.write(rejects.where(in_batches), "quarantine.rejects", replace_where=f"_batch_id IN ({in_list})")
    if keys is None:
        for source, st in stages.items():
            if st.history is not None:
                merge_history(spark, tables, st.history, HISTORY[source])
        for source, df in silver.items():
            tables.write(df, SILVER[source], options={"overwriteSchema": "true", **constraint_options(SILVER[source])})
    else:
        slice_keys = {"users": keys["customers"], "orders": keys["orders"], "order_items": keys["orders"],
                      "reviews": keys["reviews"]}
        touched = {s: not k.isEmpty() for s, k in slice_keys.items()}     # a source without keys: no commit
        for source, st in stages.items():
            if st.history is not None and touched[source]:
                replace_keys(spark, tables, HISTORY[source], st.history, slice_keys[source], SLICE_KEYS[source])
        for source, df in silver.items():
            if source == "events":
                append_events(spark, tables, df, keys["customers"] if touched["users"] else None)
            elif touched[source]:
                replace_keys(spark, tables, SILVER[source], df, slice_keys[source], SLICE_KEYS[source])
    record_batches(spark, tables, batches, rid, check, full=keys is None)
    for df in silver.values():
        df.unpersist()
    for st in stages.values():
        st.ruled.unpersist()
        if st.history is not None:
            st.history.unpersist()
    for df in (keys or {}).values():
        df.unpersist()
    _log(f"run {rid}: silver published in {time.perf_counter() - t_start:.1f} s")
    return {c.table: c for c in counts}
