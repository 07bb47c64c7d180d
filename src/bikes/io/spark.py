"""The Spark session of the ``spark`` engine: configured from ``job.spark``, imported lazily.

PySpark is an optional dependency (``uv sync --extra spark``) and a JVM start costs seconds:
nothing here imports it until a job asks for a session, so ``bikes --help`` and the pandas
engine never pay for it. The session's Python workers run this interpreter (the project's
environment), the web UI is off (no port to collide with, nothing to leak) and the log is
quiet: Spark's INFO lines and progress bars would drown the job's own.
"""

from __future__ import annotations

import os
import shutil
import sys
import typing as T

import pydantic as pdt

from bikes.core.errors import ConfigError, InputError, first_line

if T.TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

INSTALL_HINT = "install the spark extra: uv sync --extra spark"


class SparkSettings(pdt.BaseModel, strict=True, frozen=True, extra="forbid"):
    """Where the ``spark`` engine runs: a master URL, an application name, any Spark conf."""

    master: str = pdt.Field(
        default="local[*]",
        description="Spark master URL: local[*] (this machine, every core), spark://host:7077, "
        "yarn, k8s://... Ignored under spark-submit, whose --master wins.",
    )
    app_name: str = pdt.Field(default="bikes", description="The Spark application's name.")
    conf: dict[str, str] = pdt.Field(
        default_factory=dict,
        description="Spark properties passed to the session builder as they are, e.g. "
        "spark.driver.memory: 2g, spark.sql.shuffle.partitions: '8'.",
    )
    log_level: T.Literal["ERROR", "WARN", "INFO"] = pdt.Field(
        default="ERROR", description="Spark's own log level (its INFO lines are many)."
    )
    progress: bool = pdt.Field(
        default=False, description="Show Spark's console progress bars on stderr."
    )


def session(settings: SparkSettings | None = None) -> SparkSession:
    """The active session, or a new one from ``settings``; a clear error without PySpark or
    Java. Under ``spark-submit`` the session exists already and its settings win."""
    settings = settings or SparkSettings()
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise ConfigError(f"job.engine: spark needs PySpark ({INSTALL_HINT})") from None
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    if not os.environ.get("JAVA_HOME") and shutil.which("java") is None:
        raise ConfigError(
            "job.engine: spark needs Java 17 (no java on PATH and JAVA_HOME unset; Debian: "
            "apt-get install openjdk-17-jre-headless)"
        )
    # Workers must run this interpreter: a bare ``python3`` lacks the project's packages.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = (
        SparkSession.builder.master(settings.master)
        .appName(settings.app_name)
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", str(settings.progress).lower())
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
    )
    for key, value in defaults(settings).items():
        builder = builder.config(key, value)
    try:
        spark = builder.getOrCreate()
    except Exception as error:  # the JVM did not start: Java missing or broken, bad conf
        raise ConfigError(f"job.spark: the Spark session did not start ({error})") from None
    spark.sparkContext.setLogLevel(settings.log_level)
    return spark


def defaults(settings: SparkSettings) -> dict[str, str]:
    """``settings.conf`` over this engine's defaults: Arrow batches of 100,000 rows (the
    monitoring statistics stream columns to numpy; Spark's 10,000 costs a third more time)
    and, on a local master, as many shuffle partitions as twice the cores (Spark's 200 are
    for a cluster: on one machine most are empty tasks) and the throughput garbage collector
    for the one JVM that is driver and executors (``-XX:+UseParallelGC``: a batch job wants
    throughput, not G1's short pauses; the monitoring benchmark at 10M rows ran about 8%
    faster, benchmarks/README). It is a JVM option, so it is set only when the settings give
    no ``spark.driver.extraJavaOptions`` of their own: theirs replace it whole (merging could
    name two collectors, and the JVM refuses to start)."""
    found = {"spark.sql.execution.arrow.maxRecordsPerBatch": "100000"}
    if settings.master.startswith("local"):
        inside = settings.master.removeprefix("local").strip("[]").split(",")[0]
        cores = int(inside) if inside.isdigit() else (os.cpu_count() or 1)
        found["spark.sql.shuffle.partitions"] = str(2 * cores)
        found["spark.driver.extraJavaOptions"] = "-XX:+UseParallelGC"
    return found | settings.conf


def read_parquet(spark: SparkSession, path: str, key: str) -> DataFrame:
    """A parquet file, a folder of them (a lake partition tree) or a glob, as a Spark
    DataFrame; the error names the config key and the path."""
    from pyspark.errors import AnalysisException

    try:
        frame = spark.read.parquet(path)
    except AnalysisException as error:
        if "TIMESTAMP(NANOS" in str(error):
            raise InputError(
                f"{key}: {path}: nanosecond timestamps, which Spark cannot read: write the "
                "file with microseconds (pandas: to_parquet(..., coerce_timestamps='us', "
                "allow_truncated_timestamps=True); the lake bikes exports has them)"
            ) from None
        raise InputError(f"{key}: {path}: no readable parquet ({first_line(error)})") from None
    # pandas keeps a non-default index as a column of its own: not data, never a feature.
    index = [c for c in frame.columns if c.startswith("__index_level_")]
    return frame.drop(*index) if index else frame
