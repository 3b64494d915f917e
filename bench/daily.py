"""A daily run vs a full rebuild: ingest + clean + features + score for one new day of landing files after the
shop's history, against the same four stages rebuilt from every file.

    make bench-daily      (or: python bench/daily.py --conf conf/local.yaml [--customers N])

Needs `make demo` first: both runs score with the demo's newest registered model (its segments and drift
reference come with it, so neither run fits them). The shop is the demo's (same seed), exported as a shop
delivers: its history, then the last day's files (`synthetic.delivery_days=1`).

1. untimed: the history ingested, cleaned, featurised (S = the last day, with the history snapshots) and scored;
2. timed, the daily run: the day's files land; ingest, clean (incremental), features (S + 1 only: the history
   snapshots are reused), score S + 1;
3. timed, the full rebuild, on a fresh store with every file: ingest, clean (full), features (S + 1 and its
   history snapshots), score S + 1.
Prints each stage's seconds and rows for both, and the ratio daily / full (target ≤ 0.1).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from pyspark.sql import functions as F  # noqa: E402

from customer_value.cleaning.run import clean_all  # noqa: E402
from customer_value.config import load_config  # noqa: E402
from customer_value.features.run import run_features  # noqa: E402
from customer_value.ingest.run import ingest  # noqa: E402
from customer_value.landing import landing_uri  # noqa: E402
from customer_value.models import registry  # noqa: E402
from customer_value.scoring.run import score_snapshot  # noqa: E402
from customer_value.spark import spark_session  # noqa: E402
from customer_value.synthetic.generate import delivery_day, generate  # noqa: E402
from customer_value.tables import Tables  # noqa: E402

STAGES = ("ingest", "clean", "features", "score")


def stages(spark, cfg, snapshot, full: bool) -> dict[str, tuple[float, int]]:
    """The four stages in order, each timed: seconds and rows produced."""
    tables = Tables(cfg.storage)
    out = {}
    t0 = time.perf_counter()
    result = ingest(spark, cfg)
    out["ingest"] = (time.perf_counter() - t0, sum(s["bronze"] for s in result.per_source.values()))
    t0 = time.perf_counter()
    counts = clean_all(spark, cfg, full=full)
    out["clean"] = (time.perf_counter() - t0, sum(c.rows_in for c in counts.values()))
    t0 = time.perf_counter()
    run_features(spark, cfg, snapshot, cfg.features.history_snapshots, reuse=True)
    feats = tables.read(spark, "gold.customer_features").where(F.col("snapshot_date") == F.lit(snapshot)).count()
    out["features"] = (time.perf_counter() - t0, feats)
    t0 = time.perf_counter()
    scored = score_snapshot(spark, cfg, snapshot)
    out["score"] = (time.perf_counter() - t0, scored.customers)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--conf", default="conf/local.yaml")
    ap.add_argument("--customers", type=int, default=None, help="shop size (default: the demo's)")
    ap.add_argument("--work", default="data/bench/daily", help="where the two stores go (replaced)")
    args = ap.parse_args()

    demo = load_config(args.conf, ["pseudonymisation.demo_mode=true"])
    uri = registry.tracking_uri(demo)
    try:
        model = registry.resolve(demo, f"{demo.training.model_name}/{registry.CHAMPION}")
    except registry.ModelNotFound as e:
        sys.exit(f"bench/daily.py needs the demo's model: run `make demo` first ({e})")
    work = Path(args.work).resolve()
    shutil.rmtree(work, ignore_errors=True)
    extra = ["pseudonymisation.demo_mode=true", "synthetic.delivery_days=1", f"training.tracking_uri={uri}"]
    if args.customers:
        extra.append(f"synthetic.customers={args.customers}")
    daily = load_config(args.conf, [f"storage.root={work / 'daily'}", *extra])
    rebuilt = load_config(args.conf, [f"storage.root={work / 'full'}", *extra])
    last = daily.synthetic.export_date
    s0, s1 = last, last + timedelta(days=1)
    print(f"model {model.label}; shop of {daily.synthetic.customers:,} customers, history to {last - timedelta(days=1)}, "
          f"then the files of {last}", flush=True)

    with spark_session(daily) as spark:
        generate(spark, daily)
        landing, held = Path(landing_uri(daily)), work / "held"
        day_files = [f for f in landing.glob("*/*") if delivery_day(f.name)]
        for f in day_files:
            (held / f.parent.name).mkdir(parents=True, exist_ok=True)
            shutil.move(str(f), held / f.parent.name / f.name)
        print(f"-- history: {sum(1 for _ in landing.glob('*/*'))} files (untimed)", flush=True)
        stages(spark, daily, s0, full=False)

        print(f"-- daily run: {len(day_files)} files of {last}, snapshot {s1}", flush=True)
        for f in held.glob("*/*"):
            shutil.move(str(f), landing / f.parent.name / f.name)
        day = stages(spark, daily, s1, full=False)

        print(f"-- full rebuild: every file, snapshot {s1} and its history snapshots", flush=True)
        shutil.copytree(landing, landing_uri(rebuilt))
        full = stages(spark, rebuilt, s1, full=True)

    print(f"\n{'stage':<10}{'daily s':>10}{'rows':>12}{'full s':>10}{'rows':>12}{'ratio':>8}")
    for name in STAGES:
        (ds, dr), (fs, fr) = day[name], full[name]
        print(f"{name:<10}{ds:>10.1f}{dr:>12,}{fs:>10.1f}{fr:>12,}{ds / fs:>8.3f}")
    total_d, total_f = sum(v[0] for v in day.values()), sum(v[0] for v in full.values())
    print(f"{'total':<10}{total_d:>10.1f}{'':>12}{total_f:>10.1f}{'':>12}{total_d / total_f:>8.3f}")
    print(f"daily / full rebuild: {total_d / total_f:.3f} (target <= 0.1)")


if __name__ == "__main__":
    main()
