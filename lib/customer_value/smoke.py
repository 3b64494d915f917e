"""The smoke pipeline: every component of the stack, for real, in one run.

Delta (write, MERGE, time travel) -> JVM-less readers (delta-rs, Polars) -> a Parquet training set ->
Petastorm -> Horovod training on 2 processes -> scoring with mapInPandas back into Delta. It is the proof that
the pinned stack works together on a machine, and the first thing to run on a new one.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from customer_value.config import Config
from customer_value.models.fit import horovodrun_module
from customer_value.schemas import SMOKE_CUSTOMERS, SMOKE_FEATURES, SMOKE_SCORES
from customer_value.scoring.model_udf import score_with_model
from customer_value.tables import Tables

# The weights the synthetic label is made from; the trained model should find something close.
LABEL_WEIGHTS = [0.5, -1.0, 2.0, 0.0, 1.5, -0.5, 0.25, 1.0]


@dataclass
class SmokeResult:
    tables: dict[str, str]
    delta_versions: dict[int, list[tuple]]
    jvm_free_rows: list[tuple]
    polars_rows: list[tuple]
    training_url: str
    horovod_reports: list[dict]
    model_path: str
    scored_rows: int
    timings: dict[str, float] = field(default_factory=dict)


def initial_customers(spark: SparkSession) -> DataFrame:
    return spark.createDataFrame([("c1", "low", 10.0), ("c2", "mid", 20.0), ("c3", "high", 30.0)], SMOKE_CUSTOMERS)


def customer_updates(spark: SparkSession) -> DataFrame:
    return spark.createDataFrame([("c2", "high", 200.0), ("c4", "low", 4.0)], SMOKE_CUSTOMERS)


def merge_customers(spark: SparkSession, tables: Tables, updates: DataFrame) -> None:
    """Upsert by customer_id: one atomic commit."""
    (
        tables.delta_table(spark, "smoke.customers")
        .alias("t")
        .merge(updates.alias("u"), "t.customer_id = u.customer_id")
        .whenMatchedUpdateAll()
        .whenNotMatchedInsertAll()
        .execute()
    )


def training_set(spark: SparkSession, rows: int, partitions: int) -> DataFrame:
    """Random features and a noisy linear label, made in parallel by Spark (no driver-side loop)."""
    cols = [F.col("id").alias("row_id")]
    for i, name in enumerate(SMOKE_FEATURES):
        cols.append(F.randn(seed=i).cast("float").alias(name))
    df = spark.range(rows, numPartitions=partitions).select(*cols)
    label = sum(F.col(n) * w for n, w in zip(SMOKE_FEATURES, LABEL_WEIGHTS)) + F.randn(seed=99) * 0.1
    return df.withColumn("label", label.cast("float"))


def train_with_horovod(data_url: str, out_dir: Path, num_proc: int) -> list[dict]:
    """Launch the smoke training on `num_proc` Horovod processes; return each rank's report."""
    if out_dir.exists():
        shutil.rmtree(out_dir)
    cmd = horovodrun_module(
        num_proc, "customer_value.training.smoke_train", ["--data-url", data_url, "--out", str(out_dir)]
    )
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")   # no CUDA and TensorRT lines on a CPU box
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"horovodrun failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    reports = [json.loads((out_dir / f"rank-{r}.json").read_text()) for r in range(num_proc)]
    return sorted(reports, key=lambda r: r["rank"])


def _step(name: str, timings: dict[str, float], t0: float, detail: str = "") -> float:
    now = time.perf_counter()
    timings[name] = round(now - t0, 2)
    print(f"[smoke] {name:<28} {timings[name]:6.1f} s  {detail}", flush=True)
    return now


def run(spark: SparkSession, cfg: Config, work_dir: str | None = None, rows: int = 4000) -> SmokeResult:
    """Run every step; raise on the first that fails. Prints a line per step with its time."""
    import polars as pl
    from deltalake import DeltaTable

    tables = Tables(cfg.storage)
    work = Path(work_dir or os.path.join(cfg.storage.root, "_smoke_work")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    t = time.perf_counter()

    # 1. Delta with the JVM connector: write (v0), MERGE (v1), time travel.
    tables.write(initial_customers(spark), "smoke.customers", mode="overwrite", options={"overwriteSchema": "true"})
    first_version = tables.delta_table(spark, "smoke.customers").history(1).collect()[0]["version"]
    merge_customers(spark, tables, customer_updates(spark))
    versions = {
        v: sorted(tuple(r) for r in tables.read(spark, "smoke.customers", version=first_version + v).collect())
        for v in (0, 1)
    }
    t = _step("delta write+merge+travel", timings, t, f"v0={len(versions[0])} rows, v1={len(versions[1])} rows")

    # 2. The same table without a JVM: delta-rs and Polars.
    location = tables.location("smoke.customers")
    arrow = DeltaTable(location).to_pyarrow_table()
    jvm_free = sorted(zip(*(arrow.column(c).to_pylist() for c in ("customer_id", "tier", "spend"))))
    polars_rows = sorted(pl.read_delta(location).select("customer_id", "tier", "spend").rows())
    t = _step("delta-rs + polars read", timings, t, f"{len(jvm_free)} rows")

    # 3. A Parquet training set for Petastorm: several files so each rank gets its own row groups.
    train_path = work / "training_set"
    training_set(spark, rows, partitions=8).write.mode("overwrite").parquet(str(train_path))
    data_url = train_path.as_uri()
    t = _step("training set (parquet)", timings, t, f"{rows} rows -> {data_url}")

    # 4. Horovod, 2 processes, each reading its Petastorm shard.
    model_dir = work / "model"
    reports = train_with_horovod(data_url, model_dir, cfg.training.num_proc)
    model_path = str(model_dir / "model.keras")
    t = _step("horovod training", timings, t, f"{len(reports)} ranks, loss {reports[0]['loss'][-1]:.3f}")

    # 5. Score with mapInPandas back into Delta.
    scored = score_with_model(
        spark.read.parquet(str(train_path)), model_path, SMOKE_FEATURES, ["row_id", "label"], SMOKE_SCORES
    )
    tables.write(scored, "smoke.scores", mode="overwrite")
    scored_rows = tables.read(spark, "smoke.scores").count()
    _step("score (mapInPandas) -> delta", timings, t, f"{scored_rows} rows")

    return SmokeResult(
        tables={n: tables.location(n) for n in ("smoke.customers", "smoke.scores")},
        delta_versions=versions,
        jvm_free_rows=jvm_free,
        polars_rows=polars_rows,
        training_url=data_url,
        horovod_reports=reports,
        model_path=model_path,
        scored_rows=scored_rows,
        timings=timings,
    )
