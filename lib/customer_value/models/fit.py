"""The training-set job and the launchers: Delta snapshots → Parquet for Petastorm → Horovod ranks.

The training set is materialised from the Delta tables *as of the versions read* (recorded with the model):
Spark reads exactly the files of that table version, never the table folder, which still holds files a
`replaceWhere` removed. Rows are split into training and validation by a hash of the customer id (stable across
runs and snapshots: a customer never sits on both sides), ordered by a hash of (customer, snapshot) so every
row group is a random sample, and written as many row groups as the ranks need to get equal shards. Which file a
row lands in is a fixed range of that hash (`file_of`), so the same rows make the same files, row groups and
shards in every run: a rebuilt training set (a rerun, a resumed training) trains the same model.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from customer_value.models.btyd_inputs import with_btyd_inputs_per_snapshot, with_btyd_spec
from customer_value.models.data import LABELS, ROW_KEY
from customer_value.models.spec import (NUMERIC_BLOCK, SEQUENCE_BLOCK, FeatureSpec, behavioural_inputs, encoded,
                                        feature_spec, fit_stats, packed, transformed)
from customer_value.tables import Tables

FEATURES, LABELS_TABLE = "gold.customer_features", "gold.customer_labels"
FILE = "_file"          # the training set's folders `_file=k/`: one file each, a fixed range of row keys


def file_of(files: int):
    """Which of `files` files a row goes to: its row key's range (the key is a 64-bit hash, so the ranges are
    near equal), a function of the row alone. Spark's range partitioner chose its bounds from a sample whose seed
    follows the RDD's id, which differs run to run: the row groups, each rank's shard and so the trained model
    differed between two builds of the same rows (601/608 rows per rank in one, 606/603 in the other)."""
    unit = F.col(ROW_KEY).cast("double") / float(2 ** 64) + F.lit(0.5)         # in [0, 1]
    return F.least(F.floor(unit * files), F.lit(files - 1)).cast("int")


@dataclass
class TrainingSet:
    train_url: str
    validation_url: str
    train_rows: int
    validation_rows: int
    snapshots: list[str]
    horizon_days: int
    delta_versions: dict[str, int]
    spec: FeatureSpec

    def describe(self) -> dict:
        d = asdict(self)
        d.pop("spec")
        return d


def validation_flag(seed: int, share: float):
    """True for the customers of the validation split: a hash of the id, so the split never moves."""
    return (F.pmod(F.xxhash64(F.col("customer_id"), F.lit(f"split-{seed}")), F.lit(10_000)) < int(share * 10_000))


def labelled_rows(spark: SparkSession, tables: Tables, snapshots: list[date], horizon_days: int,
                  versions: dict[str, int], btyd_max_customers: int | None = None) -> DataFrame:
    """Features joined with labels for these snapshots, from the given Delta versions; with
    `btyd_max_customers`, the features get BG/NBD's inputs from each snapshot's own fit first (labels unseen)."""
    in_list = ", ".join(f"'{s}'" for s in snapshots)
    feats = tables.read(spark, FEATURES, version=versions[FEATURES]).where(f"snapshot_date IN ({in_list})")
    if btyd_max_customers is not None:
        feats = with_btyd_inputs_per_snapshot(feats, snapshots, horizon_days, btyd_max_customers)
    labels = tables.read(spark, LABELS_TABLE, version=versions[LABELS_TABLE]).where(
        f"snapshot_date IN ({in_list}) AND horizon_days = {horizon_days}")
    return feats.join(labels.select("customer_id", "snapshot_date", "future_spend", "churned"),
                      ["customer_id", "snapshot_date"])


def build_training_set(spark: SparkSession, tables: Tables, features_cfg, snapshots: list[date], horizon_days: int,
                       out_dir: str, seed: int, validation_share: float, rows_per_group: int,
                       ranks: int, btyd_max_customers: int | None = None) -> TrainingSet:
    """Write train/ and validation/ Parquet under `out_dir` (replaced) and return where, how big, from what.
    `btyd_max_customers`: add BG/NBD + Gamma-Gamma's predictions as inputs (`models.btyd_inputs`)."""
    versions = {n: tables.version(spark, n) for n in (FEATURES, LABELS_TABLE)}
    rows = labelled_rows(spark, tables, snapshots, horizon_days, versions, btyd_max_customers)
    spec = feature_spec(features_cfg, dict(rows.dtypes))
    if btyd_max_customers is not None:
        spec = with_btyd_spec(spec, horizon_days)
    # the labels ride along (`carry`) rather than being joined back: a join of `rows` with itself computed the
    # labelled rows, BG/NBD's pandas UDFs and all, once per side
    base = transformed(rows, spec, carry=LABELS).withColumns({c: F.col(c).cast("float") for c in LABELS})
    base = base.withColumn(ROW_KEY, F.xxhash64("customer_id", "snapshot_date", F.lit(f"order-{seed}"))) \
               .withColumn("_validation", validation_flag(seed, validation_share)).cache()
    counts = {r["_validation"]: r["count"] for r in base.groupBy("_validation").count().collect()}
    spec = fit_stats(base.where(~F.col("_validation")), spec)
    spec.stats["behaviour_inputs"] = behavioural_inputs(features_cfg, spec)
    out = Path(out_dir)
    if out.exists():
        shutil.rmtree(out)
    keep = ["customer_id", ROW_KEY, NUMERIC_BLOCK, SEQUENCE_BLOCK, *spec.categorical_inputs, *LABELS]
    enc = packed(encoded(base, spec), spec)
    urls = {}
    for split, flag in (("train", False), ("validation", True)):
        n = counts.get(flag, 0)
        if n == 0:
            raise ValueError(f"the {split} split is empty: {sum(counts.values())} labelled rows in {snapshots}")
        files = max(2 * ranks, math.ceil(n / rows_per_group))
        path = out / split
        # one task per file (all of a file's rows hash to one partition), sorted by key within it: one Parquet
        # file per `_file=k` folder, whatever the partitions' order (Petastorm reads the folders as a dataset)
        (enc.where(F.col("_validation") == flag).select(*keep).withColumn(FILE, file_of(files))
            .repartition(files, FILE).sortWithinPartitions(FILE, ROW_KEY)
            .write.mode("overwrite").partitionBy(FILE).parquet(str(path)))
        urls[split] = path.resolve().as_uri()
    base.unpersist()
    (out / "spec.json").write_text(spec.to_json())
    return TrainingSet(urls["train"], urls["validation"], counts.get(False, 0), counts.get(True, 0),
                       [str(s) for s in snapshots], horizon_days, versions, spec)


def horovodrun_module(num_proc: int, module: str, args: list[str]) -> list[str]:
    """`horovodrun -np N --gloo` on this host, running `python -m module args` with this interpreter."""
    horovodrun = Path(sys.executable).with_name("horovodrun")
    exe = str(horovodrun) if horovodrun.exists() else (shutil.which("horovodrun") or "horovodrun")
    return [exe, "-np", str(num_proc), "-H", f"localhost:{num_proc}", "--gloo", sys.executable, "-m", module, *args]


def horovodrun_command(num_proc: int, plan_path: str) -> list[str]:
    """The product's training ranks: `customer_value.models.train --plan P` on N processes."""
    return horovodrun_module(num_proc, "customer_value.models.train", ["--plan", plan_path])


def horovod_env(plan: dict) -> dict[str, str]:
    """The environment of the ranks: quiet TensorFlow, Horovod's tensor-fusion knobs from the plan."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")   # no CUDA and TensorRT lines on a CPU box
    knobs = plan.get("horovod", {})
    if knobs.get("fusion_threshold_mb") is not None:
        env["HOROVOD_FUSION_THRESHOLD"] = str(int(knobs["fusion_threshold_mb"] * 1024 * 1024))
    if knobs.get("cycle_time_ms") is not None:
        env["HOROVOD_CYCLE_TIME"] = str(knobs["cycle_time_ms"])
    return env


def rank_reports(plan: dict, size: int) -> list[dict]:
    return [json.loads((Path(plan["report_dir"]) / f"rank-{r}.json").read_text()) for r in range(size)]


def run_horovodrun(plan: dict, num_proc: int) -> list[dict]:
    """Launch the ranks with horovodrun on this machine; raise with their output if any fails."""
    plan_path = Path(plan["report_dir"]).parent / "plan.json"
    plan_path.parent.mkdir(parents=True, exist_ok=True)
    plan_path.write_text(json.dumps(plan, indent=1))
    shutil.rmtree(plan["report_dir"], ignore_errors=True)
    cmd = horovodrun_command(num_proc, str(plan_path))
    proc = subprocess.run(cmd, env=horovod_env(plan), capture_output=True, text=True)
    if proc.returncode != 0:
        log = plan_path.with_name("horovodrun.log")
        log.write_text(f"$ {' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}")
        raise RuntimeError(f"horovodrun failed (exit {proc.returncode}): {failed_rank(proc.stdout + proc.stderr)}; "
                           f"the ranks' output is in {log}")
    return rank_reports(plan, num_proc)


def failed_rank(output: str) -> str:
    """Horovod's own account of which rank failed first and how, in one line (the ranks' output, tracebacks
    and all, goes to a log file: a pipeline's failure is one line)."""
    import re

    found = re.search(r"Process name: (\S+)\s+Exit code: (-?\d+)", output)
    if not found:
        last = [ln.strip() for ln in output.splitlines() if ln.strip()]
        return last[-1][:300] if last else "no output"
    rank, code = found.group(1), int(found.group(2))
    how = {137: " (SIGKILL: killed, or out of memory)", -9: " (SIGKILL: killed, or out of memory)",
           139: " (SIGSEGV)", 143: " (SIGTERM)"}.get(code, "")
    return f"rank {rank} exited with code {code}{how} first, and Horovod stopped the others"


def run_in_spark(plan: dict, num_proc: int) -> list[dict]:
    """Launch the ranks as Spark tasks with `horovod.spark.run` (a cluster's executors; local[N] here)."""
    import horovod.spark

    from customer_value.models.train import train

    shutil.rmtree(plan["report_dir"], ignore_errors=True)
    results = horovod.spark.run(train, args=(plan,), num_proc=num_proc, use_gloo=True, env=horovod_env(plan),
                                verbose=0, executable=sys.executable)
    return sorted(results, key=lambda r: r["rank"])


def launch(plan: dict, num_proc: int, launcher: str) -> list[dict]:
    t0 = time.perf_counter()
    if launcher == "horovodrun":
        reports = run_horovodrun(plan, num_proc)
    elif launcher == "spark":
        reports = run_in_spark(plan, num_proc)
    else:
        raise ValueError(f"unknown launcher {launcher!r}: horovodrun or spark")
    reports[0]["launch_seconds"] = time.perf_counter() - t0
    return reports
