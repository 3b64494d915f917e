"""A class-data-sharing archive of the classes a local Spark + Delta job loads, made once at set-up.

Why: every job, test and CLI stage started here starts a new JVM, and a new JVM spends seconds loading and
verifying the same ten thousand Spark, Delta and Parquet classes before its first commit. The JVM can map those
classes from an archive written by an earlier run instead (Java's dynamic class-data sharing, JDK 13+): on this
project's 2-core machine a session's start and first two Delta writes took 10.0 s against 13.5-16.4 s, a CLI
score stage on the test shop 38-40 s against 44-50 s; the suite starts some fifty JVMs.

Safe by construction: the archive is only an accelerator. The JVM checks it against its own version and class
path and, where it does not match (another JDK, other jars), ignores it and loads the classes as usual
(`-Xshare:auto`, the default); its messages about that are switched off, so a stale archive costs nothing but
the seconds. It is written under a temporary name and renamed when the JVM that wrote it has exited, so a crash
never leaves half an archive, and it lives in the virtual environment (whose jars it describes), not the clone.

    python -m customer_value.class_archive      # write it where missing (`make setup` runs this)
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

ARCHIVE_NAME = "customer-value-spark-classes.jsa"
# the JVM's own lines about the archive (e.g. "shared class paths mismatch" after a JDK upgrade) stay off
QUIET = "-Xlog:cds*=off"


def archive_path() -> Path:
    """Where the archive of this interpreter's environment lives (next to the pyspark jars it describes)."""
    return Path(sys.prefix) / ARCHIVE_NAME


def java_options() -> str:
    """The driver JVM options that use the archive; empty where there is none (the JVM then starts as usual)."""
    path = archive_path()
    return f"-XX:SharedArchiveFile={path} {QUIET}" if path.is_file() else ""


def _session(java_option: str, root: str):
    """A local session of the project's local configuration, its driver JVM started with `java_option`."""
    from customer_value.config import load_config
    from customer_value.spark import build_spark

    return build_spark(load_config(Path(__file__).resolve().parents[2] / "conf" / "local.yaml", [
        f"storage.root={root}", f"spark.conf.spark.driver.extraJavaOptions={java_option} {QUIET}"]))


def _workload(out: str) -> None:
    """Run in a child process: a session with the archive being recorded, a Delta write, read, MERGE and an
    aggregate (the classes every stage loads), then the JVM stopped and waited for: it writes the archive as it
    exits."""
    from delta.tables import DeltaTable
    from pyspark import SparkContext
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    with tempfile.TemporaryDirectory() as root:
        spark = _session(f"-XX:ArchiveClassesAtExit={out}", root)
        path = f"{root}/t"
        spark.range(1000).selectExpr("id", "id % 7 AS k", "CAST(id AS DOUBLE) AS x").write.format("delta").save(path)
        changes = spark.range(500, 1500).selectExpr("id", "id % 7 AS k", "CAST(id AS DOUBLE) * 2 AS x")
        (DeltaTable.forPath(spark, path).alias("t").merge(changes.alias("s"), "t.id = s.id")
         .whenMatchedUpdateAll().whenNotMatchedInsertAll().execute())
        table = spark.read.format("delta").load(path)
        table.groupBy("k").agg({"x": "sum"}).collect()
        DeltaTable.forPath(spark, path).history(1).collect()
        # what ingest, features and scoring add: text and JSON sources, windows, joins, Arrow batches to Python
        spark.createDataFrame([('{"a": 1}',)], "line string").write.mode("overwrite").text(f"{root}/lines")
        lines = spark.read.option("sep", "\u0001").csv(f"{root}/lines").withColumnRenamed("_c0", "line")
        lines.select(F.from_json("line", "a string")).collect()
        window = Window.partitionBy("k").orderBy("id")
        table.withColumn("r", F.row_number().over(window)).join(table.select("id"), "id").count()
        table.mapInPandas(lambda frames: (f for f in frames), table.schema).count()
        gateway = SparkContext._gateway
        spark.stop()
        proc = getattr(gateway, "proc", None)
        gateway.shutdown()
        if proc is not None:
            proc.stdin.close()          # the gateway JVM exits when its stdin closes
            proc.wait(timeout=300)


def _check(archive: str) -> None:
    """Run in a child process: a session that maps `archive` runs a job (a damaged archive crashes the JVM)."""
    with tempfile.TemporaryDirectory() as root:
        spark = _session(f"-XX:SharedArchiveFile={archive}", root)
        assert spark.range(10).count() == 10
        spark.stop()


def _child(call: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("PYSPARK_GATEWAY_PORT", None)
    return subprocess.run([sys.executable, "-c", f"import customer_value.class_archive as a; a.{call}"],
                          env=env, capture_output=True, text=True)


def ensure_archive() -> Path | None:
    """Write the archive where it is missing; the path, or None where this JVM could not write one."""
    path = archive_path()
    if path.is_file():
        return path
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    print("[setup] recording the JVM classes a Spark + Delta job loads, once (about 30 s)", file=sys.stderr, flush=True)
    proc = _child(f"_workload({str(tmp)!r})")
    if proc.returncode == 0 and tmp.is_file():
        proc = _child(f"_check({str(tmp)!r})")          # the archive is used only once a JVM ran with it
    if proc.returncode != 0 or not tmp.is_file():
        tmp.unlink(missing_ok=True)
        print(f"[setup] no JVM class archive (Spark starts without it): {(proc.stderr or '').strip()[-500:]}",
              file=sys.stderr)
        return None
    tmp.replace(path)
    return path


if __name__ == "__main__":
    written = ensure_archive()
    if written:
        print(f"jvm class archive: {written}")
