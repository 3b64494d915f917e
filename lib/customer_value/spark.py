"""The one place that builds a SparkSession, for a laptop, spark-submit on a cluster and Databricks alike.

Why here: Delta needs its SQL extension and catalog set before the session starts, and its JVM jars on the
classpath. Locally the jars come from the cache that tools/bootstrap.sh filled from Maven Central once (never
from the network at run time); under spark-submit they are passed with --jars; on Databricks the runtime has
them, and adding jars there would clash. Jobs never build sessions themselves.
"""

from __future__ import annotations

import glob
import os
import sys
from contextlib import contextmanager
from typing import Iterator

from pyspark.sql import SparkSession

from customer_value import class_archive
from customer_value.config import Config

DELTA_SQL_CONF = {
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
}
JARS_ENV = "CUSTOMER_VALUE_JARS"


class SparkSetupError(RuntimeError):
    """Spark cannot be started as configured; the message says what to run."""


def on_databricks() -> bool:
    return "DATABRICKS_RUNTIME_VERSION" in os.environ


def launched_by_spark_submit() -> bool:
    """spark-submit starts the JVM first and hands its gateway to Python; static conf is fixed by then."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


def delta_jar_paths() -> list[str]:
    """The Delta jars in the local cache named by $CUSTOMER_VALUE_JARS (set by the Makefile from bootstrap)."""
    folder = os.environ.get(JARS_ENV)
    if not folder:
        cache = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
        candidates = sorted(glob.glob(os.path.join(cache, "customer-value", "jars-*")), key=os.path.getmtime)
        folder = candidates[-1] if candidates else None
    if not folder:
        raise SparkSetupError(
            f"no Delta jars: set {JARS_ENV} to the jar cache, or run tools/bootstrap.sh (make setup) once"
        )
    jars = sorted(glob.glob(os.path.join(folder, "*.jar")))
    names = " ".join(os.path.basename(j) for j in jars)
    if "delta-spark" not in names or "delta-storage" not in names:
        raise SparkSetupError(f"{folder} lacks delta-spark/delta-storage jars (found: {names or 'none'})")
    return jars


def build_spark(cfg: Config) -> SparkSession:
    """Get or create the session the environment calls for, with Delta enabled."""
    if on_databricks():
        return SparkSession.builder.getOrCreate()
    # Python workers must run this interpreter (the venv's), or pandas UDFs miss pyarrow and the model libs.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = SparkSession.builder.appName(cfg.spark.app_name)
    if cfg.spark.master and not launched_by_spark_submit():
        builder = builder.master(cfg.spark.master)
    conf = {**DELTA_SQL_CONF, **cfg.spark.conf}
    if not launched_by_spark_submit():      # a JVM this process starts: quiet from its first line
        log4j = os.path.join(os.path.dirname(os.path.abspath(__file__)), "log4j2.properties")
        extra = conf.get("spark.driver.extraJavaOptions", "")
        if "log4j2.configurationFile" not in extra:
            extra = f"{extra} -Dlog4j2.configurationFile=file:{log4j}"
        if "SharedArchive" not in extra and "ArchiveClassesAtExit" not in extra:   # seconds off each start
            extra = f"{extra} {class_archive.java_options()}"
        conf["spark.driver.extraJavaOptions"] = extra.strip()
    for key, value in conf.items():
        builder = builder.config(key, value)
    if cfg.spark.delta_jars == "auto" and not launched_by_spark_submit():
        builder = builder.config("spark.jars", ",".join(delta_jar_paths()))
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(cfg.spark.log_level)
    return spark


@contextmanager
def session_conf(spark: SparkSession, settings: dict[str, str]) -> Iterator[None]:
    """SQL settings for the jobs run inside the block only; the session's own values are restored after."""
    before = {k: spark.conf.get(k, None) for k in settings}
    for key, value in settings.items():
        spark.conf.set(key, value)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                spark.conf.unset(key)
            else:
                spark.conf.set(key, value)


@contextmanager
def spark_session(cfg: Config) -> Iterator[SparkSession]:
    """A session for the length of a job; stopped afterwards only where this process owns it."""
    spark = build_spark(cfg)
    try:
        yield spark
    finally:
        if not on_databricks():
            spark.stop()
