"""One local Spark session for every Spark test: a JVM start costs seconds."""

from __future__ import annotations

import typing as T

import pytest


@pytest.fixture(scope="session")
def spark() -> T.Iterator[T.Any]:
    """Two cores, few shuffle partitions (the test tables are small); the jobs under test
    find it as the active session, as under spark-submit."""
    pytest.importorskip("pyspark")
    from bikes.io.spark import SparkSettings, session

    settings = SparkSettings(
        master="local[2]",
        app_name="bikes-tests",
        conf={"spark.sql.shuffle.partitions": "2", "spark.default.parallelism": "2"},
    )
    active = session(settings)
    yield active
    active.stop()
