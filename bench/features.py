"""Feature computation: Spark vs DuckDB on the same silver Delta tables, and Spark's scaling with data size.

    make bench-features      (or: python bench/features.py --conf conf/local.yaml [--customers 15000 150000] [--groups])

For each size, the synthetic shop is generated, ingested and cleaned once (cached under --data), then the
RFM + trailing-window order features + window behaviour features for one snapshot are computed twice:
  - Spark: the product's own functions (customer_value.features.groups), read from Delta, materialised;
  - DuckDB (2 threads): the same features in SQL over the same tables read with delta-rs.
Both results are checked against each other, then the times and the ratios are printed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import date

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))

import duckdb  # noqa: E402
from deltalake import DeltaTable  # noqa: E402

from customer_value.cleaning.run import clean_all  # noqa: E402
from customer_value.config import load_config  # noqa: E402
from customer_value.features import groups as g  # noqa: E402
from customer_value.ingest.run import ingest  # noqa: E402
from customer_value.spark import spark_session  # noqa: E402
from customer_value.synthetic.generate import generate  # noqa: E402
from customer_value.tables import Tables  # noqa: E402

SNAPSHOT = date(2025, 10, 1)


def spark_features(spark, tables: Tables, windows):
    orders = tables.read(spark, "silver.orders")
    events = tables.read(spark, "silver.events")
    facts = g.order_facts(orders)
    return (g.rfm(facts, SNAPSHOT)
            .join(g.order_windows(facts, SNAPSHOT, windows), "customer_id", "full")
            .join(g.behaviour(events, SNAPSHOT, windows), "customer_id", "full"))


def time_groups(spark, tables: Tables, windows, repeat: int) -> None:
    """Each group of the benchmark alone (`noop` write, best of `repeat`), and the events scan it starts with."""
    orders = tables.read(spark, "silver.orders")
    events = tables.read(spark, "silver.events")
    facts = g.order_facts(orders)
    parts = {
        "scan events (4 columns)": events.select("customer_id", "event_ts", "event_type", "session_id"),
        "behaviour": g.behaviour(events, SNAPSHOT, windows),
        "rfm": g.rfm(facts, SNAPSHOT),
        "order windows": g.order_windows(facts, SNAPSHOT, windows),
    }
    for name, df in parts.items():
        best = float("inf")
        for _ in range(repeat):
            t0 = time.perf_counter()
            df.write.format("noop").mode("overwrite").save()
            best = min(best, time.perf_counter() - t0)
        print(f"    {name:<24} {best:6.2f} s", flush=True)


def duckdb_sql(windows) -> str:
    s = f"TIMESTAMP '{SNAPSHOT} 00:00:00'"
    longest = 2 * max(windows)

    def win(col, w, offset=0):
        return f"({col} >= {s} - INTERVAL {w + offset} DAY AND {col} < {s} - INTERVAL {offset} DAY)"

    order_aggs, event_aggs = [], []
    for w in windows:
        now, done = win("order_ts", w), f"{win('order_ts', w)} AND status = 'completed'"
        order_aggs += [
            f"count(*) FILTER (WHERE {now}) AS orders_{w}d",
            f"coalesce(sum(amount) FILTER (WHERE {done}), 0) AS spend_{w}d",
            f"coalesce(sum(items) FILTER (WHERE {done}), 0) AS items_{w}d",
            f"sum(discount) FILTER (WHERE {done}) / sum(total + discount) FILTER (WHERE {done}) AS discount_share_{w}d",
            f"count(*) FILTER (WHERE {now} AND status = 'cancelled') AS cancellations_{w}d",
            f"count(*) FILTER (WHERE {now} AND status = 'returned') AS returns_{w}d",
            f"coalesce(sum(amount) FILTER (WHERE {done}), 0) - coalesce(sum(amount) FILTER (WHERE {win('order_ts', w, w)} AND status = 'completed'), 0) AS spend_trend_{w}d",
        ]
        e = win("event_ts", w)
        event_aggs += [f"count(DISTINCT (session_id, event_ts::DATE)) FILTER (WHERE {e} AND session_id IS NOT NULL) AS sessions_{w}d"]
        event_aggs += [f"count(*) FILTER (WHERE {e} AND event_type = '{t}') AS {n}_{w}d" for n, t in g.EVENT_TYPES.items()]
        event_aggs += [f"count(DISTINCT event_ts::DATE) FILTER (WHERE {e}) AS days_active_{w}d"]
    return f"""
    WITH o AS (
      SELECT customer_id, order_ts, status, total::DOUBLE AS amount, total::DOUBLE AS total,
             discount::DOUBLE AS discount, item_count AS items
      FROM orders WHERE NOT list_contains(dq_flags, 'orphan') AND order_ts < {s}),
    daily AS (
      SELECT customer_id, order_ts::DATE AS day, count(*) AS n, sum(amount) AS spend, max(amount) AS top
      FROM o WHERE status = 'completed' GROUP BY customer_id, order_ts::DATE),
    rfm AS (
      SELECT customer_id, date_diff('day', max(day), {s}::DATE) AS recency_days, sum(n) AS frequency_orders,
             count(*) AS frequency_days, sum(spend) AS monetary_total, sum(spend) / sum(n) AS monetary_mean,
             max(top) AS monetary_max, arg_min(spend, day) AS monetary_first, count(*) - 1 AS bgnbd_x,
             date_diff('day', min(day), max(day)) AS bgnbd_t_x, date_diff('day', min(day), {s}::DATE) AS bgnbd_T
      FROM daily GROUP BY customer_id),
    win AS (SELECT customer_id, {', '.join(order_aggs)} FROM o WHERE order_ts >= {s} - INTERVAL {longest} DAY GROUP BY customer_id),
    beh AS (SELECT customer_id, {', '.join(event_aggs)}, date_diff('day', max(event_ts::DATE), {s}::DATE) AS last_active_days
            FROM events WHERE event_ts < {s} GROUP BY customer_id)
    SELECT * FROM rfm FULL JOIN win USING (customer_id) FULL JOIN beh USING (customer_id)
    """


def duckdb_features(tables: Tables, windows):
    con = duckdb.connect()
    con.execute("SET threads TO 2")
    for view, name in (("orders", "silver.orders"), ("events", "silver.events")):
        con.register(view, DeltaTable(tables.location(name)).to_pyarrow_dataset())
    return con.execute(duckdb_sql(windows)).arrow()


def prepare(spark, conf: str, root: str, customers: int):
    cfg = load_config(conf, [f"storage.root={root}", f"synthetic.customers={customers}",
                             "synthetic.customers_per_file=5000", "pseudonymisation.demo_mode=true"])
    tables = Tables(cfg.storage)
    if not tables.exists(spark, "silver.events"):
        t0 = time.perf_counter()
        generate(spark, cfg)
        ingest(spark, cfg)
        clean_all(spark, cfg)
        print(f"  prepared {customers:,} customers in {time.perf_counter() - t0:.0f} s", flush=True)
    return cfg, tables


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conf", default="conf/local.yaml")
    parser.add_argument("--customers", type=int, nargs=2, default=[15_000, 150_000], metavar=("SMALL", "LARGE"))
    parser.add_argument("--data", default="/tmp/customer-value-bench-features", help="cache of prepared shops")
    parser.add_argument("--repeat", type=int, default=2, help="timed runs per engine (best is reported)")
    parser.add_argument("--groups", action="store_true", help="also time each feature group alone (where the time goes)")
    args = parser.parse_args()
    base = load_config(args.conf)
    windows = base.features.windows
    results = {}
    with spark_session(base) as spark:
        for customers in args.customers:
            cfg, tables = prepare(spark, args.conf, f"{args.data}/{customers}", customers)
            n_events = DeltaTable(tables.location("silver.events")).to_pyarrow_dataset().count_rows()
            spark_times, duck_times = [], []
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                sdf = spark_features(spark, tables, windows)
                sdf.write.format("noop").mode("overwrite").save()
                spark_times.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                ddf = duckdb_features(tables, windows)
                duck_times.append(time.perf_counter() - t0)
            # same answer from both engines
            spark_sum = sdf.selectExpr("count(*) AS n", "sum(spend_30d) AS s", "sum(page_views_30d) AS p").collect()[0]
            duck = duckdb.query("SELECT count(*), sum(spend_30d), sum(page_views_30d) FROM ddf").fetchone()
            assert spark_sum.n == duck[0] and abs(spark_sum.s - duck[1]) < 1e-6 * max(1, duck[1]) and spark_sum.p == duck[2], (spark_sum, duck)
            results[customers] = (n_events, min(spark_times), min(duck_times))
            if args.groups:
                time_groups(spark, tables, windows, args.repeat)
            print(f"{customers:>8,} customers, {n_events:>11,} events: Spark {min(spark_times):6.2f} s, "
                  f"DuckDB {min(duck_times):6.2f} s, Spark/DuckDB {min(spark_times) / min(duck_times):5.2f}", flush=True)
    (e0, s0, d0), (e1, s1, d1) = results[args.customers[0]], results[args.customers[1]]
    print(f"Spark/DuckDB at {e1:,} events: {s1 / d1:.2f} (target <= 2)")
    print(f"Spark time at {e1 / e0:.1f}x the events: {s1 / s0:.2f}x (target <= 11x); DuckDB {d1 / d0:.2f}x")


if __name__ == "__main__":
    main()
