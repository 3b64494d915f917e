"""Bulk scoring throughput: 10 million customers through `customer-value score`, against Spark's Arrow floor.

    make bench-scoring      (or: python bench/scoring.py --conf conf/local.yaml [--customers 10000000])

Needs `make demo` first: it scores with the demo's newest registered model. Builds a features table of about
`--customers` customers from the demo's latest snapshot: every demo customer copied under new pseudonymous ids,
each copy's money columns (spend, monetary, amounts, the order sequence's amounts) scaled by its own random
factor in [0.5, 2] and its count columns by another, so no two rows are the same and the value scores spread
like a real shop's. A tenth of the copies go into a second snapshot (the 1 M point). Then prints, in one run:
  1. pass-through: the same Delta input → the model's inputs → a `mapInPandas` that returns the scorer's output
     columns without a model → a Delta table (Spark's Arrow floor), rows/s;
  2. the scoring job end to end (`scoring.run.score_snapshot`: BG/NBD inputs, model, value score, tiers,
     segments, write, summary) with reasons, and without them, rows/s;
  3. the model's own predict and predict + reasons on in-memory arrays, rows/s (one Python process);
  4. the ratios (targets: with reasons ≥ 0.7 of the pass-through), the wall time for the big snapshot (target
     < 2 minutes for 10 M) and the 1 M → 10 M cost ratio (target ≤ 11).
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
import logging  # noqa: E402

logging.getLogger("tensorflow").setLevel(logging.ERROR)      # retracing notices of the in-memory runs

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from pyspark.sql import functions as F  # noqa: E402
from pyspark.sql import types as T  # noqa: E402

from customer_value.config import load_config  # noqa: E402
from customer_value.models import registry  # noqa: E402
from customer_value.models.btyd_inputs import BTYD_INPUTS, prepared  # noqa: E402
from customer_value.models.deep import calibration_of, load_saved_model, predict_arrays  # noqa: E402
from customer_value.models.network import arrays_from_frame  # noqa: E402
from customer_value.models.spec import FeatureSpec, model_inputs  # noqa: E402
from customer_value.scoring.reasons import Attributor  # noqa: E402
from customer_value.scoring.run import reference, score_snapshot, segment_inputs  # noqa: E402
from customer_value.scoring.score import model_udf_schema  # noqa: E402
from customer_value.spark import spark_session  # noqa: E402
from customer_value.tables import Tables  # noqa: E402

MONEY = ("spend", "monetary", "amount")


def varied_copies(base, copies: int, first_copy: int):
    """`copies` variants of every base row (copy numbers first_copy ..): new ids, money and counts rescaled."""
    copy = F.col("_copy")
    money_f = F.exp((F.rand(1) * 2 - 1) * F.log(F.lit(2.0)))      # log-uniform in [0.5, 2]
    count_f = F.exp((F.rand(2) * 2 - 1) * F.log(F.lit(1.5)))
    cols = []
    for field in base.schema.fields:
        name, dtype = field.name, field.dataType
        if name == "customer_id":
            cols.append(F.substring(F.sha2(F.concat_ws(":", F.col(name), copy.cast("string")), 256), 1, 32).alias(name))
        elif isinstance(dtype, (T.DoubleType, T.FloatType)) and any(m in name for m in MONEY):
            cols.append((F.col(name) * money_f).cast(dtype).alias(name))
        elif isinstance(dtype, (T.IntegerType, T.LongType)) and not name.endswith("_days") and name != "snapshot_date":
            cols.append(F.round(F.col(name) * count_f).cast(dtype).alias(name))
        elif isinstance(dtype, T.ArrayType) and "amount" in name:
            cols.append(F.transform(F.col(name), lambda v: (v * money_f).cast(dtype.elementType)).alias(name))
        else:
            cols.append(F.col(name))
    copies_df = base.sparkSession.range(first_copy, first_copy + copies).withColumnRenamed("id", "_copy")
    return base.crossJoin(copies_df).select(*cols)


def passthrough(spark, tables, spec, cfg, snapshot, out_path: str) -> float:
    """Features → model inputs → mapInPandas with the scorer's output schema, no model → Delta. Seconds."""
    keep = segment_inputs(cfg, spec)
    schema = model_udf_schema(keep, 0)
    names = [f.split()[0] for f in schema.split(", ")]

    def echo(batches):
        for pdf in batches:
            n = len(pdf)
            yield pd.DataFrame({c: (pdf[c] if c in pdf else np.zeros(n)) for c in names})

    feats = tables.read(spark, "gold.customer_features").where(F.col("snapshot_date") == F.lit(snapshot))
    # the model's BG/NBD inputs as empty columns: the same input width, none of the scorer's work
    feats = feats.select("*", *(F.lit(None).cast("double").alias(c) for c in BTYD_INPUTS if c in spec.numeric_inputs))
    t0 = time.perf_counter()
    model_inputs(feats, spec).mapInPandas(echo, schema).write.format("delta").mode("overwrite").save(out_path)
    return time.perf_counter() - t0


def in_memory(model_dir: Path, spec: FeatureSpec, sample: pd.DataFrame, steps: int, batch: int) -> tuple[float, float]:
    """rows/s of predict and of predict + reasons on arrays already in memory (this process, all its threads)."""
    model = load_saved_model(str(model_dir / "saved_model"), os.cpu_count() or 1)
    arrays = arrays_from_frame(sample, spec)
    n = len(sample)
    chunks = [{k: v[i:i + batch] for k, v in arrays.items()} for i in range(0, n, batch)]
    predict_arrays(model, chunks[0], **calibration_of(model_dir))
    t0 = time.perf_counter()
    for c in chunks:
        predict_arrays(model, c, **calibration_of(model_dir))
    plain = n / (time.perf_counter() - t0)
    attributor = Attributor(model, spec, steps)
    attributor(chunks[0])
    t0 = time.perf_counter()
    for c in chunks:
        attributor(c)
    return plain, n / (time.perf_counter() - t0)


def reasons_quality(model_dir: Path, spec: FeatureSpec, sample: pd.DataFrame, steps: int,
                    exact_steps: int = 64) -> tuple[float, float]:
    """(completeness gap, distance from the integral) of the reasons at `steps` integration points:
    mean |sum of amounts − (E(x) − E(b))| / mean |E(x) − E(b)|, and mean |amounts − amounts of a `exact_steps`
    quadrature without completion| / mean |those amounts| (how far from the integral itself)."""
    from customer_value.scoring import reasons

    model = load_saved_model(str(model_dir / "saved_model"), os.cpu_count() or 1)
    scale = calibration_of(model_dir)["mean_scale"]
    arrays = arrays_from_frame(sample, spec)
    e_x, groups = Attributor(model, spec, steps, scale).expected(arrays)
    plain = reasons.complete
    reasons.complete = lambda an, aseq, gap: (an, aseq)          # the quadrature alone, as the reference
    try:
        exact = Attributor(model, spec, exact_steps, scale)
        _, integral = exact.expected(arrays)
        at_ref = {**arrays, "numeric": np.broadcast_to(exact.ref_numeric, arrays["numeric"].shape).copy(),
                  "sequence": np.broadcast_to(exact.ref_sequence, arrays["sequence"].shape).copy()}
        e_b, _ = exact.expected(at_ref)
    finally:
        reasons.complete = plain
    gap = e_x - e_b
    completeness = float(np.mean(np.abs(groups.sum(axis=1) - gap)) / max(np.mean(np.abs(gap)), 1e-12))
    distance = float(np.mean(np.abs(groups - integral)) / max(np.mean(np.abs(integral)), 1e-12))
    return completeness, distance


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conf", default="conf/local.yaml")
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    parser.add_argument("--customers", type=int, default=10_000_000)
    parser.add_argument("--keep", action="store_true", help="Keep the benchmark's tables (under <root>/_bench_scoring).")
    args = parser.parse_args()
    cfg = load_config(args.conf, args.overrides)
    demo = Tables(cfg.storage)
    bench_root = Path(cfg.storage.root).resolve() / "_bench_scoring"
    bench_cfg = load_config(args.conf, [*args.overrides, f"storage.root={bench_root}",
                                        f"training.tracking_uri={registry.tracking_uri(cfg)}"])
    tables = Tables(bench_cfg.storage)
    with spark_session(cfg) as spark:
        spark.sparkContext.setLogLevel("ERROR")
        model = registry.resolve(cfg, f"{cfg.training.model_name}/{registry.CHAMPION}")
        spec = FeatureSpec.from_json((model.path / "spec.json").read_text())
        reference(spark, cfg, demo, model, spec)            # segments + drift reference in the artifact
        feats = demo.read(spark, "gold.customer_features")
        s_small = feats.agg(F.max("snapshot_date")).collect()[0][0]
        s_big = s_small + timedelta(days=1)
        base = feats.where(F.col("snapshot_date") == F.lit(s_small)).cache()
        base_n = base.count()
        small_copies = max(1, round(args.customers / 10 / base_n))
        big_copies = 10 * small_copies
        t0 = time.perf_counter()
        for snapshot, copies, first in ((s_small, small_copies, 0), (s_big, big_copies, small_copies)):
            rows = varied_copies(base, copies, first).withColumn("snapshot_date", F.lit(snapshot))
            tables.write(rows.repartition(max(4, copies * base_n // 250_000)), "gold.customer_features",
                         replace_where=f"snapshot_date = '{snapshot}'")
        n_small, n_big = small_copies * base_n, big_copies * base_n
        print(f"features: {n_small:,} + {n_big:,} customers from {base_n:,} demo customers "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)

        sample = model_inputs(prepared(tables.read(spark, "gold.customer_features")
                                       .where(F.col("snapshot_date") == F.lit(s_small)).limit(100_000), spec,
                                       cfg.backtest.spend_fit_max_customers), spec).toPandas()
        plain_mem, reasons_mem = in_memory(model.path, spec, sample, cfg.scoring.reason_steps,
                                           cfg.scoring.arrow_batch_size)
        quality = {k: reasons_quality(model.path, spec, sample.head(5_000), k) for k in (1, 2, 4)}
        print("reasons by integration steps (completeness gap, distance from a 64-point integral): "
              + ", ".join(f"{k}: {c:.4f}, {d:.4f}" for k, (c, d) in quality.items()), flush=True)
        spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(cfg.scoring.arrow_batch_size))
        t_pass = passthrough(spark, tables, spec, bench_cfg, s_big, str(bench_root / "passthrough"))
        print(f"pass-through: {n_big / t_pass:,.0f} rows/s ({t_pass:.0f} s)", flush=True)
        plain_cfg = load_config(args.conf, [*args.overrides, f"storage.root={bench_root}",
                                            f"training.tracking_uri={registry.tracking_uri(cfg)}", "scoring.reasons=false"])
        t_plain = score_snapshot(spark, plain_cfg, s_big).seconds
        print(f"score without reasons: {n_big / t_plain:,.0f} rows/s ({t_plain:.0f} s)", flush=True)
        t_reasons = score_snapshot(spark, bench_cfg, s_big).seconds
        print(f"score with reasons: {n_big / t_reasons:,.0f} rows/s ({t_reasons:.0f} s)", flush=True)
        t_small = score_snapshot(spark, bench_cfg, s_small).seconds
    if not args.keep:
        shutil.rmtree(bench_root, ignore_errors=True)
    print(f"\n{n_big:,} customers, model {model.label}, Arrow batch {cfg.scoring.arrow_batch_size:,}, "
          f"reason steps {cfg.scoring.reason_steps}, spark.master {cfg.spark.master}")
    print(f"  pass-through mapInPandas (Arrow floor)  {n_big / t_pass:>10,.0f} rows/s")
    print(f"  score job, with reasons                 {n_big / t_reasons:>10,.0f} rows/s  "
          f"ratio to pass-through {t_pass / t_reasons:.2f} (target >= 0.7)")
    print(f"  score job, without reasons              {n_big / t_plain:>10,.0f} rows/s  ratio {t_pass / t_plain:.2f}")
    print(f"  model predict, in memory                {plain_mem:>10,.0f} rows/s")
    print(f"  model predict + reasons, in memory      {reasons_mem:>10,.0f} rows/s")
    print("  reasons by integration steps: completeness gap |sum - (E(x) - E(ref))| / |E(x) - E(ref)| and distance "
          "from a 64-point integral: " + ", ".join(f"{k}: {c:.4f}, {d:.4f}" for k, (c, d) in quality.items()))
    print(f"  wall time for {n_big:,} with reasons: {t_reasons:.0f} s (target < 120 s for 10 M)")
    print(f"  {n_small:,} → {n_big:,} customers: {t_reasons / t_small:.1f}x the time (target <= 11x)")


if __name__ == "__main__":
    main()
