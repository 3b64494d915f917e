"""The smoke pipeline: every component of the stack, for real, in one run, through the code that ships.

Delta (write, MERGE, time travel) -> JVM-less readers (delta-rs, Polars) -> random features in the feature
catalogue's shape and labels with a planted relation, in gold Delta tables -> the product's training-set job
(`models.fit.build_training_set`: Parquet for Petastorm) -> the product's trainer (`models.train`) on 2 Horovod
ranks launched by `horovodrun` (`models.fit.run_horovodrun`), each reading its own Petastorm shard through
`models.data` -> those rows scored by the product's scoring path (`scoring.score.apply_model`: mapInPandas, the
SavedModel loaded once per Python worker by `models.deep.load_saved_model`) into Delta. It is the proof that the
pinned stack works together on a machine, and the first thing to run on a new one.

The gold tables of the smoke live under its own storage root (`<work>/tables`), never the configured one: its
random features must not land in a shop's `gold.customer_features`.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from customer_value.config import Config, FeaturesConfig
from customer_value.features.catalogue import catalogue
from customer_value.models.fit import FEATURES, LABELS_TABLE, TrainingSet, build_training_set, run_horovodrun
from customer_value.schemas import SMOKE_CUSTOMERS
from customer_value.tables import Tables

SNAPSHOT = date(2025, 1, 1)
HORIZON_DAYS = 90
# The feature the planted labels follow: the longer since the last order, the likelier churn and the less spend.
SIGNAL = "recency_days"
# A small network and a short run: the smoke proves the path, not the model.
NETWORK = {"sequence_branch": "conv1d", "sequence_units": 8, "embedding_dim": 2, "hidden": [16], "dropout": 0.0,
           "towers": 1, "wide": False}
EPOCHS, BATCH_SIZE, LEARNING_RATE, ROWS_PER_GROUP = 3, 8, 0.005, 1000
SEQUENCE_LENGTH = 4


@dataclass
class SmokeResult:
    tables: dict[str, str]
    delta_versions: dict[int, list[tuple]]
    jvm_free_rows: list[tuple]
    polars_rows: list[tuple]
    training_set: TrainingSet
    plan: dict
    horovod_reports: list[dict]
    model_path: str          # the trainer's output: saved_model/ and calibration.json, what `apply_model` reads
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


def random_features(spark: SparkSession, features_cfg: FeaturesConfig, snapshot: date, seed: int, customers: int,
                    partitions: int = 2) -> DataFrame:
    """`customers` rows of gold.customer_features at `snapshot` (ids c0, c1, ...), every feature of the catalogue
    with a random value made by Spark: categoricals one of x, y, z; sequences three orders; numerics integers
    0..19 as doubles, null for about 10 %."""
    cols = [F.concat(F.lit("c"), F.col("id").cast("string")).alias("customer_id")]
    for i, d in enumerate(catalogue(features_cfg)):
        r = F.rand(seed * 1000 + i)
        if d.group == "static":
            cols.append(F.element_at(F.array(F.lit("x"), F.lit("y"), F.lit("z")), (r * 3).cast("int") + 1).alias(d.name))
        elif d.group == "sequence":
            cols.append(F.array(*(F.floor(r * 50 + k).cast("double") for k in range(3))).alias(d.name))
        else:
            cols.append(F.when(r < 0.1, None).otherwise(F.floor(r * 20)).cast("double").alias(d.name))
    return spark.range(customers, numPartitions=partitions).select(*cols, F.lit(snapshot).alias("snapshot_date"))


def random_labels(features: DataFrame, seed: int, horizon_days: int = HORIZON_DAYS,
                  signal: str | None = SIGNAL) -> DataFrame:
    """gold.customer_labels rows for `random_features` rows. With `signal` (a numeric feature of 0..19, null as 0)
    the labels follow it: P(buy) falls from 0.99 to 0.01 as it grows (a logistic, 0.5 at 10; knowing the signal
    ranks churn with a ROC-AUC of 0.94), and a buyer's spend falls with it, so a model that learns anything
    beats a constant; `signal=None`: labels independent of the features."""
    if signal is None:
        r = F.rand(seed)
        spend = F.when(r < 0.6, 0.0).otherwise(F.exp(r * 5))
    else:
        x = F.coalesce(F.col(signal).cast("double"), F.lit(0.0)) / 20.0
        spend = F.when(F.rand(seed) < 1.0 / (1.0 + F.exp(10.0 * (x - 0.5))),
                       F.exp(2.0 + 2.0 * (1.0 - x) + 0.3 * F.randn(seed + 1))).otherwise(0.0)
    return features.select("customer_id", "snapshot_date", spend.alias("future_spend")).select(
        "customer_id", "future_spend", F.when(F.col("future_spend") > 0, 1).otherwise(0).cast("long").alias("future_orders"),
        (F.col("future_spend") == 0).alias("churned"), F.lit(horizon_days).alias("horizon_days"), "snapshot_date")


def smoke_features(features_cfg: FeaturesConfig) -> FeaturesConfig:
    """The configured feature catalogue with one window and a sequence of 4 orders: every kind of input the
    network reads (numeric with and without missing flags, categorical, sequence), in 95 input columns instead of 243.
    The training set's statistics are one wide Spark aggregation whose code generation grows with the columns:
    with the full catalogue the training-set step took twice as long (22 s against 11 s on 2 busy cores)."""
    return features_cfg.model_copy(update={"windows": features_cfg.windows[:1],
                                           "sequence_length": min(SEQUENCE_LENGTH, features_cfg.sequence_length)})


def training_plan(ts: TrainingSet, data_dir: Path, work: Path, seed: int, epochs: int = EPOCHS) -> dict:
    """The plan `models.train` reads (as `DeepModel._train` writes it), for a small network and a short run;
    `record_shards`: every rank reports the row keys of its shards."""
    return {"train_url": ts.train_url, "validation_url": ts.validation_url, "spec": str(data_dir / "spec.json"),
            "network": dict(NETWORK), "seed": seed, "epochs": epochs, "patience": epochs + 1,
            "batch_size": BATCH_SIZE, "learning_rate": LEARNING_RATE, "threads_per_rank": 1, "horovod": {},
            "checkpoint_dir": str(work / "checkpoints"), "out_dir": str(work / "model"),
            "report_dir": str(work / "ranks"), "record_shards": True}


def score_rows(features: DataFrame, model_dir: str, spec, btyd_max_customers: int, threads: int | None = None) -> DataFrame:
    """The score job's model step on gold.customer_features rows (`scoring.run.scored_frame` without the
    registry): model inputs by the spec, then `apply_model` (mapInPandas, the model loaded once per worker)."""
    from customer_value.models.btyd_inputs import in_batch
    from customer_value.models.spec import model_inputs
    from customer_value.scoring.score import apply_model

    features, btyd = in_batch(features, spec, btyd_max_customers)
    inputs = model_inputs(features, spec, carry=btyd.carried() if btyd else ())
    return apply_model(inputs, model_dir, spec, btyd=btyd, threads=threads)


def _step(name: str, timings: dict[str, float], t0: float, detail: str = "") -> float:
    now = time.perf_counter()
    timings[name] = round(now - t0, 2)
    print(f"[smoke] {name:<28} {timings[name]:6.1f} s  {detail}", flush=True)
    return now


def run(spark: SparkSession, cfg: Config, work_dir: str | None = None, customers: int = 3000) -> SmokeResult:
    """Run every step; raise on the first that fails. Prints a line per step with its time."""
    import polars as pl
    from deltalake import DeltaTable

    tables = Tables(cfg.storage)
    work = Path(work_dir or os.path.join(cfg.storage.root, "_smoke_work")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    # the smoke's own gold tables: path-addressed under its work folder, whatever the configured storage
    gold = Tables(cfg.storage.model_copy(update={"root": str(work / "tables"), "catalog": None}))
    timings: dict[str, float] = {}
    t = time.perf_counter()

    # 1. Delta with the JVM connector: write (v0), MERGE (v1), time travel.
    tables.write(initial_customers(spark), "smoke.customers", mode="overwrite", options={"overwriteSchema": "true"})
    first_version = tables.version(spark, "smoke.customers")
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

    # 3. Features and labels in the (smoke's) gold tables, then the product's training set: Parquet for Petastorm.
    seed, features_cfg = cfg.training.seed, smoke_features(cfg.features)
    overwrite = {"overwriteSchema": "true"}
    gold.write(random_features(spark, features_cfg, SNAPSHOT, seed, customers), FEATURES, mode="overwrite",
               options=overwrite)
    gold.write(random_labels(gold.read(spark, FEATURES), seed), LABELS_TABLE, mode="overwrite", options=overwrite)
    t = _step("gold features + labels", timings, t, f"{customers} customers at {SNAPSHOT}")
    train_dir = work / "training"
    shutil.rmtree(train_dir, ignore_errors=True)      # no checkpoints of an earlier run to resume from
    ts = build_training_set(spark, gold, features_cfg, [SNAPSHOT], HORIZON_DAYS, str(train_dir / "data"), seed,
                            cfg.training.validation_share, ROWS_PER_GROUP, cfg.training.num_proc)
    t = _step("training set (parquet)", timings, t,
              f"{ts.train_rows} train + {ts.validation_rows} validation rows -> {ts.train_url}")

    # 4. The product's trainer on Horovod ranks launched by horovodrun, each reading its Petastorm shard.
    plan = training_plan(ts, train_dir / "data", train_dir, seed)
    reports = sorted(run_horovodrun(plan, cfg.training.num_proc), key=lambda r: r["rank"])
    val_loss = reports[0]["history"]["val_loss"]
    t = _step("horovod training", timings, t,
              f"{len(reports)} ranks x {reports[0]['steps_per_epoch']} steps x {len(val_loss)} epochs, "
              f"val_loss {val_loss[0]:.3f} -> {val_loss[-1]:.3f}")

    # 5. Those rows scored by the product's scoring path (mapInPandas), into Delta.
    snapshot_rows = gold.read(spark, FEATURES).where(F.col("snapshot_date") == F.lit(SNAPSHOT))
    scored = score_rows(snapshot_rows, plan["out_dir"], ts.spec, cfg.backtest.spend_fit_max_customers,
                        cfg.scoring.threads_per_worker)
    scored = scored.select(F.lit(SNAPSHOT).cast("date").alias("snapshot_date"), "*")
    tables.write(scored, "smoke.scores", mode="overwrite", options=overwrite)
    scored_rows = tables.read(spark, "smoke.scores").count()
    _step("score (mapInPandas) -> delta", timings, t, f"{scored_rows} rows")

    return SmokeResult(
        tables={n: t.location(n) for t, n in ((tables, "smoke.customers"), (tables, "smoke.scores"),
                                                (gold, FEATURES), (gold, LABELS_TABLE))},
        delta_versions=versions,
        jvm_free_rows=jvm_free,
        polars_rows=polars_rows,
        training_set=ts,
        plan=plan,
        horovod_reports=reports,
        model_path=plan["out_dir"],
        scored_rows=scored_rows,
        timings=timings,
    )
