"""The monitoring job's ``spark`` engine: its reference and windows as Spark DataFrames.

``prepare(job)`` replaces the job's ``_monitor()`` and ``_windows()``; everything after
(results, status, long rows, MLflow, the report, alerts, ``fail_on``) is the job's own code.
The current is read from parquet (a file, a folder or a glob: ``ParquetReader``) or from the
lake (``LakeReader``, its windows by event time); never from the capture store, an OLTP
database a large scan would load.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import typing as T

import pandas as pd
from loguru import logger
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from bikes.core.contract import Contract
from bikes.core.errors import ConfigError, ContractError
from bikes.core.monitoring import ReferenceOrigin
from bikes.io import spark as io_spark
from bikes.io.datasets import ParquetReader
from bikes.io.lake import LakeReader
from bikes.io.monitoring import ChampionReference
from bikes.spark.monitoring import SparkMonitor

if T.TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from bikes.jobs.monitoring import MonitoringJob

SAMPLE_ROWS = 100  # the reference rows read to the driver, for the columns' pandas kinds


@dataclasses.dataclass(frozen=True)
class SparkWindow:
    """One window: its bounds and its rows, a Spark DataFrame (never collected)."""

    start: dt.datetime | None
    end: dt.datetime | None
    frame: T.Any  # a pyspark DataFrame
    rejected: pd.DataFrame | None = None


def prepare(job: MonitoringJob) -> tuple[SparkMonitor, list[SparkWindow], int]:
    """The Spark monitor, prepared from the job's reference, and the current's windows."""
    if job.current.KIND == "StoreReader":
        raise ConfigError(
            "job.current: the spark engine reads parquet (ParquetReader) or the lake "
            "(LakeReader, written by bikes confs/export.yaml), never the capture store"
        )
    spark = io_spark.session(job.spark)
    reference, contract, origin = _reference(job, spark)
    source = origin.name
    sample = reference.limit(SAMPLE_ROWS).toPandas()
    contract = contract.with_columns(sample)
    contract.check_kinds(sample, source)
    if contract.target is not None and contract.target not in reference.columns:
        raise ContractError(f"job.contract.target: {contract.target!r} is not a column of {source}")
    columns = job._columns(sample, contract, source)
    logger.info(
        "Watching {} column(s) of {} ({}) on Spark ({}): {}",
        len(columns),
        job.registered_model,
        contract.task,
        spark.sparkContext.master,
        ", ".join(columns),
    )
    monitor = SparkMonitor(
        reference,
        contract,
        columns,
        job.drift,
        job._slicing(contract),
        job.performance,
        origin,
    )
    monitor.segments_from_held_out(spark)
    from bikes.jobs.monitoring import _log_reference_performance

    _log_reference_performance(monitor)
    windows = _windows(job, spark, contract)
    return monitor, windows, len(windows)


def _reference(
    job: MonitoringJob, spark: SparkSession
) -> tuple[DataFrame, Contract, ReferenceOrigin]:
    contract = job.contract or Contract()
    if isinstance(job.reference, ChampionReference):
        # A version's training rows: a table that fits a model's training, handed to Spark.
        frame, contract, origin = job._reference()
        return spark.createDataFrame(frame), contract, origin
    if isinstance(job.reference, LakeReader):
        rows = _named(job.reference.read_spark(spark, job.registered_model), contract)
        return rows, contract, ReferenceOrigin(name=job.reference.source)
    reader: ParquetReader = job.reference
    rows = io_spark.read_parquet(spark, reader.path, "job.reference.path")
    if reader.limit:
        rows = rows.limit(reader.limit)
    return rows, contract, ReferenceOrigin(name=reader.source)


def _windows(job: MonitoringJob, spark: SparkSession, contract: Contract) -> list[SparkWindow]:
    """A lake's windows by event time (a backfill's steps); a parquet current is one window
    spanning the contract's timestamp column, as the pandas engine has it."""
    current = job.current
    if isinstance(current, LakeReader):
        windows = []
        for start, end in current.bounds():
            rows = _named(current.read_spark(spark, job.registered_model, start, end), contract)
            if start is None and end is None:
                start, end = _span(rows, "event_time")
            windows.append(SparkWindow(start, end, rows))
        return windows
    assert isinstance(current, ParquetReader)
    rows = io_spark.read_parquet(spark, current.path, "job.current.path")
    if current.limit:
        rows = rows.limit(current.limit)
    timestamp = contract.timestamp
    if timestamp is None or timestamp not in rows.columns:
        return [SparkWindow(None, None, rows)]
    rows = rows.withColumn(timestamp, F.col(timestamp).cast("timestamp"))
    start, end = _span(rows, timestamp)
    return [SparkWindow(start, end, rows.withColumnRenamed(timestamp, "event_time"))]


def _span(rows: DataFrame, column: str) -> tuple[dt.datetime | None, dt.datetime | None]:
    found = rows.agg(F.min(column), F.max(column)).first()
    if found is None or found[0] is None:
        return None, None
    return pd.Timestamp(found[0]).to_pydatetime(), pd.Timestamp(found[1]).to_pydatetime()


def _named(rows: DataFrame, contract: Contract) -> DataFrame:
    """Captured rows (the lake's) with the contract's prediction and target names."""
    names = {"prediction": contract.prediction}
    if contract.target is not None:
        names["target"] = contract.target
    for old, new in names.items():
        if old != new and old in rows.columns:
            rows = rows.withColumnRenamed(old, new)
    return rows
