"""Training throughput: the Petastorm loader against memory, and Horovod's scaling from 1 to 2 ranks.

    make bench-training      (or: python bench/training.py --conf conf/local.yaml [--rows 200000])

Builds a training set with the model's real input layout (the feature spec of the catalogue: ~120 numeric
inputs, 5 categoricals, the flattened order sequence; random values) as Parquet with the product's layout (two
array columns, `spec.packed`) and row groups,
then prints, measured in this one run:
  1. rows/s of the training input pipeline (`models.data.dataset` over the endless reader training uses:
     Petastorm row-group batches → tf.data, vectorised re-batching) ÷ rows/s of the same rows from memory
     (`from_tensor_slices(...).batch`): target ≥ 0.9;
  2. global training samples/s of `horovodrun -np 2` ÷ `-np 1`, one TensorFlow thread per rank, the product's
     training code and the `training.horovod` knobs of the configuration: target ≥ 1.4.
Each is the best of `--trials` alternating trials (default 3): this shared 2-core machine runs either side up to
2x slower at random moments, and one pair of runs measured that instead of the code.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

LIB = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib")
sys.path.insert(0, LIB)
# the Horovod ranks are new processes: they find this checkout's package through the environment
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (os.path.abspath(LIB), os.environ.get("PYTHONPATH")) if p)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from pyspark.sql import functions as F  # noqa: E402

from customer_value.config import load_config  # noqa: E402
from customer_value.features.catalogue import catalogue  # noqa: E402
from customer_value.models import data  # noqa: E402
from customer_value.models.fit import run_horovodrun  # noqa: E402
from customer_value.models.spec import NUMERIC_BLOCK, SEQUENCE_BLOCK, SEQUENCE_CHANNELS, feature_spec, packed  # noqa: E402
from customer_value.spark import spark_session  # noqa: E402


def synthetic_set(spark, spec, rows: int, rows_per_group: int, out: Path) -> str:
    cols = [F.concat(F.lit("c"), F.col("id").cast("string")).alias("customer_id"), F.col("id").alias(data.ROW_KEY)]
    for i, n in enumerate(spec.numeric_inputs):
        cols.append(F.randn(i).cast("float").alias(n))
    for i, n in enumerate(spec.categorical_inputs):
        cols.append((F.rand(500 + i) * 6).cast("int").alias(n))
    for i, n in enumerate(spec.sequence_inputs):
        cols.append(F.rand(1000 + i).cast("float").alias(n))
    spend = F.when(F.rand(9) < 0.6, 0.0).otherwise(F.exp(F.randn(10) + 3))
    cols += [spend.cast("float").alias("future_spend"), (spend == 0).cast("float").alias("churned")]
    files = max(4, rows // rows_per_group)
    packed(spark.range(rows, numPartitions=files).select(*cols), spec).write.mode("overwrite").parquet(str(out))
    return out.resolve().as_uri()


def stats_for(spec) -> None:
    n = len(spec.numeric_inputs)
    spec.stats = {"numeric_mean": [0.0] * n, "numeric_std": [1.0] * n,
                  "sequence_mean": [0.0] * len(SEQUENCE_CHANNELS), "sequence_std": [1.0] * len(SEQUENCE_CHANNELS),
                  "vocabularies": {c: [str(i) for i in range(5)] for c in spec.categorical_inputs}}


def loader_rate(url: str, spec, batch: int, passes: int) -> float:
    """rows/s of the training input pipeline (one rank, the endless reader training uses) over as many rows as
    `passes` passes of the whole set hold."""
    rows = passes * pq.ParquetDataset(url.replace("file://", "")).read(columns=[data.ROW_KEY]).num_rows
    with data.reader(url, data.columns_for(spec), 0, 1, epochs=None, seed=1) as r:
        ds = data.dataset(r, spec, batch).take(rows // batch)
        t0, n = time.perf_counter(), 0
        for x, _ in ds:
            n += int(x["numeric"].shape[0])
        return n / (time.perf_counter() - t0)


def memory_rate(url: str, spec, batch: int, passes: int) -> float:
    """rows/s of the same columns from memory: numpy arrays → from_tensor_slices → batch."""
    import tensorflow as tf

    table = pq.read_table(url.replace("file://", ""), columns=data.columns_for(spec))
    block = lambda name, k: table.column(name).combine_chunks().flatten().to_numpy().reshape(-1, k)  # noqa: E731
    inputs = {"numeric": block(NUMERIC_BLOCK, len(spec.numeric_inputs)),
              "sequence": block(SEQUENCE_BLOCK, len(spec.sequence_inputs))}
    for name in spec.categorical_inputs:
        inputs[f"cat_{name}"] = table.column(name).to_numpy().astype(np.int32)
    targets = {"spend": table.column("future_spend").to_numpy().astype(np.float32),
               "churn": table.column("churned").to_numpy().astype(np.float32).reshape(-1, 1)}
    ds = tf.data.Dataset.from_tensor_slices((inputs, targets)).repeat(passes).batch(batch, drop_remainder=True).prefetch(2)
    t0, n = time.perf_counter(), 0
    for x, _ in ds:
        n += int(x["numeric"].shape[0])
    return n / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conf", default="conf/local.yaml")
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--trials", type=int, default=3,
                        help="alternating trials of each measurement (loader/memory, -np 1/-np 2); the best of each")
    parser.add_argument("--parts", default="loader,horovod", help="which measurements: loader, horovod or both")
    args = parser.parse_args()
    cfg = load_config(Path(args.conf), args.overrides)
    tc = cfg.training
    dtypes = {d.name: ("string" if d.group == "static" else "array" if d.group == "sequence" else "double")
              for d in catalogue(cfg.features)}
    spec = feature_spec(cfg.features, dtypes)
    stats_for(spec)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        with spark_session(cfg) as spark:
            t0 = time.perf_counter()
            train = synthetic_set(spark, spec, args.rows, tc.rows_per_group, tmp / "train")
            val = synthetic_set(spark, spec, max(args.rows // 20, 8 * tc.rows_per_group), tc.rows_per_group, tmp / "val")
        print(f"training set: {args.rows:,} rows x {len(data.columns_for(spec))} columns "
              f"({time.perf_counter() - t0:.1f} s)", flush=True)
        (tmp / "spec.json").write_text(spec.to_json())

        import tensorflow as tf

        parts = set(args.parts.split(","))
        tf.config.threading.set_intra_op_parallelism_threads(tc.threads_per_rank)
        tf.config.threading.set_inter_op_parallelism_threads(tc.threads_per_rank)
        if "loader" in parts:
            loader_rate(train, spec, tc.batch_size, 1)            # warm the page cache and the graph
            memory_rate(train, spec, tc.batch_size, 1)
            # alternating trials, the best of each: this shared 2-core machine slows either one by up to 2x
            # at random moments, and a single pair of runs measured that rather than the loader
            trials = [(loader_rate(train, spec, tc.batch_size, 2), memory_rate(train, spec, tc.batch_size, 2))
                      for _ in range(args.trials)]
            pet, mem = max(t[0] for t in trials), max(t[1] for t in trials)
            print(f"loader  Petastorm -> tf.data {pet:>12,.0f} rows/s | from memory {mem:>12,.0f} rows/s | "
                  f"ratio {pet / mem:.2f} (target >= 0.9; best of {args.trials} alternating trials each: "
                  f"{', '.join(f'{p:,.0f}/{m:,.0f}' for p, m in trials)})", flush=True)

        rates: dict[int, list[float]] = {1: [], 2: []}
        for trial in range(args.trials if "horovod" in parts else 0):
            for n in (1, 2):                                   # alternating, the best of each (as above)
                plan = {"train_url": train, "validation_url": val, "spec": str(tmp / "spec.json"),
                        "network": tc.network.model_dump(), "seed": tc.seed, "epochs": args.epochs,
                        "patience": 1000, "batch_size": tc.batch_size, "learning_rate": tc.learning_rate,
                        "threads_per_rank": 1, "horovod": tc.horovod.model_dump(),
                        "backward_passes_per_step": tc.horovod.backward_passes_per_step,
                        "checkpoint_dir": str(tmp / f"np{n}-{trial}" / "ckpt"),
                        "out_dir": str(tmp / f"np{n}-{trial}" / "model"),
                        "report_dir": str(tmp / f"np{n}-{trial}" / "ranks")}
                reports = run_horovodrun(plan, n)
                rates[n].append(reports[0]["samples_per_second"])
                print(f"horovodrun -np {n}: {rates[n][-1]:>10,.0f} samples/s global ({reports[0]['steps_per_epoch']} "
                      f"steps of {tc.batch_size} per rank per epoch; epochs 2-{args.epochs}: "
                      f"{', '.join(f'{s:.1f}' for s in reports[0]['train_seconds'][1:])} s)", flush=True)
        if rates[1]:
            print(f"horovod -np 2 / -np 1: {max(rates[2]) / max(rates[1]):.2f} (target >= 1.4; best of "
                  f"{args.trials} alternating trials each); knobs: batch {tc.batch_size}/rank, "
                  f"{json.dumps(tc.horovod.model_dump())}", flush=True)


if __name__ == "__main__":
    main()
