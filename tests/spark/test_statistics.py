"""The Spark aggregations against numpy on the same values: the sketch's quantiles within its
stated rank error, exact moments, exact bins and category counts, across partitions."""

from __future__ import annotations

import typing as T

import numpy as np
import pandas as pd
import pytest

from bikes.core.contract import Feature
from bikes.io.spark import SparkSettings, defaults

pytest.importorskip("pyspark")

from pyspark.sql import functions as F

from bikes.spark import statistics as S


@pytest.fixture(scope="module")
def frame(spark: T.Any) -> tuple[pd.DataFrame, T.Any]:
    """Continuous, discrete (rounded, ties on edges), with nulls, NaN and infinities, in four
    partitions."""
    rng = np.random.default_rng(3)
    n = 20_000
    normal = rng.normal(size=n)
    normal[:50] = np.nan
    normal[50:60] = np.inf
    data = pd.DataFrame(
        {
            "normal": normal,
            "rounded": np.round(rng.random(n), 2),
            "code": rng.integers(0, 5, n),
            "word": rng.choice(["a", "b", "c"], n),
        }
    )
    data.loc[::7, "word"] = None
    data["time"] = pd.Timestamp("2013-01-01") + pd.to_timedelta(rng.integers(0, 10**6, n), "s")
    data.loc[::11, "time"] = pd.NaT
    return data, spark.createDataFrame(data).repartition(4)


def _finite(values: pd.Series) -> np.ndarray:
    array = values.to_numpy(dtype=float)
    return np.sort(array[np.isfinite(array)])


def test_sample_quantiles_are_numpy_s_on_a_small_table_and_a_sample_on_a_large_one(
    frame: tuple[pd.DataFrame, T.Any],
) -> None:
    """Every row under ``sample_rows``: numpy's own ``inverted_cdf`` quantiles; above it a
    uniform sample's, whose ranks lie near the wanted ones (a few sample standard errors)."""
    data, spark_frame = frame
    probabilities = [float(p) for p in np.linspace(0, 1, 101)]
    columns = ["normal", "rounded"]
    n = len(data)
    whole = S.sample_quantiles(spark_frame, columns, probabilities, n)
    sampled = S.sample_quantiles(spark_frame, columns, probabilities, n, sample_rows=4_000)
    for column in columns:
        values = _finite(data[column])
        expected = np.quantile(values, probabilities, method="inverted_cdf")
        assert whole[column] == expected.tolist()
        ranks = np.searchsorted(values, sampled[column], "right") / values.size
        # 4,000 rows: a standard error of at most 0.8% in rank; 5 of them allowed
        assert np.abs(ranks - np.asarray(probabilities)).max() < 0.04, column
        assert whole[column] != sampled[column]  # it did sample


def test_one_scan_has_exact_moments_errors_times_and_quality(
    frame: tuple[pd.DataFrame, T.Any],
) -> None:
    """Every figure of a side from ONE pass, against numpy and pandas on the same rows and,
    for the times, Spark's own ``min``/``max`` (what the JVM aggregation returned)."""
    data, spark_frame = frame
    # no infinite target (inf - inf: NaN sums); its nulls stay (pandas' NaN crosses as null)
    finite_y = spark_frame.where(F.coalesce(F.abs("normal") != float("inf"), F.lit(True)))
    labelled = S.present(finite_y, "normal")
    contract = {
        "normal": Feature(name="normal", kind="numeric", min=-1.0, max=1.0),
        "code": Feature(name="code", kind="categorical", values=[0, 1, 2]),
        "word": Feature(name="word", kind="categorical", values=["a", "b"]),
    }
    found = S.scan(
        finite_y,
        {"normal": np.linspace(-2, 2, 41), "rounded": np.linspace(0, 1, 11)},
        ["code", "word"],
        labelled=("normal", "rounded"),  # numbers: labelled rows read off their doubles
        errors=True,
        stamps=[("time", False), ("time", True)],
        checks=contract,
    )
    data = data[~np.isinf(data["normal"])]
    assert found.rows == len(data)
    for column in ("normal", "rounded"):
        values = _finite(data[column])
        m = found.moments[column]
        assert m.rows == values.size
        assert m.mean == pytest.approx(values.mean(), rel=1e-12)
        assert m.std == pytest.approx(values.std(), rel=1e-12)
        assert (m.minimum, m.maximum) == (values[0], values[-1])
        assert (m.at_minimum, m.at_maximum) == (
            np.count_nonzero(values == values[0]),
            np.count_nonzero(values == values[-1]),
        )
    kept = data[data["normal"].notna()]
    y, p = kept["normal"].to_numpy(), kept["rounded"].to_numpy()
    assert found.errors is not None
    assert found.errors.rows == len(kept)
    assert found.errors.squared == pytest.approx(np.sum((y - p) ** 2), rel=1e-12)
    assert found.errors.absolute == pytest.approx(np.sum(np.abs(y - p)), rel=1e-12)
    assert found.errors.total_squares == pytest.approx(y.var() * y.size, rel=1e-12)
    times = finite_y.agg(F.min("time"), F.max("time")).first()
    labelled_times = finite_y.where(labelled).agg(F.min("time"), F.max("time")).first()
    assert found.stamps == [*times, *labelled_times]
    assert found.stamps[0] == data["time"].min()
    # a text column in the pair: the JVM says which rows are labelled
    texts = S.scan(finite_y, {}, [], labelled=("word", "normal"), stamps=[("time", True)])
    both = labelled & S.present(finite_y, "word")
    assert texts.stamps == [*finite_y.where(both).agg(F.min("time"), F.max("time")).first()]
    assert texts.errors is None
    for column, feature in contract.items():
        missing = data[column].isna()
        here = data.loc[~missing, column]
        out = ~here.isin(feature.values) if feature.values else (here < -1) | (here > 1)
        assert found.quality[column] == (int(missing.sum()), int(out.sum())), column


def test_bins_are_the_exact_counts_on_the_edges(frame: tuple[pd.DataFrame, T.Any]) -> None:
    data, spark_frame = frame
    edges = {"normal": np.linspace(-2, 2, 41), "rounded": np.round(np.linspace(0, 1, 21), 2)}
    found = S.scan(spark_frame, edges, []).bins
    for column, e in edges.items():
        values = _finite(data[column])
        bucket = np.searchsorted(e, values, side="right")
        equal = (bucket > 0) & (values == e[np.maximum(bucket - 1, 0)])
        expected = np.bincount(bucket, minlength=e.size + 1)
        assert found[column].counts.tolist() == expected.tolist()
        assert (
            found[column].at_edge.tolist()
            == np.bincount(bucket[equal], minlength=e.size + 1).tolist()
        )
        sums = np.bincount(bucket[~equal], weights=values[~equal], minlength=e.size + 1)
        np.testing.assert_allclose(found[column].inner_sums, sums, rtol=1e-9, atol=1e-9)
    assert found["rounded"].at_edge.sum() > 0  # ties on edges were exercised


def test_category_counts_are_exact_and_skip_missing(frame: tuple[pd.DataFrame, T.Any]) -> None:
    data, spark_frame = frame
    found = S.scan(spark_frame, {}, ["code", "word"]).counts
    assert found["code"] == {float(k): int(v) for k, v in data["code"].value_counts().items()}
    assert found["word"] == {str(k): int(v) for k, v in data["word"].value_counts().items()}


def test_bins_and_counts_in_one_pass_equal_the_separate_ones(
    frame: tuple[pd.DataFrame, T.Any],
) -> None:
    _, spark_frame = frame
    edges = {"normal": np.linspace(-2, 2, 41)}
    together = S.scan(spark_frame, edges, ["code", "word"])
    bins, counts = together.bins, together.counts
    alone = S.scan(spark_frame, edges, []).bins["normal"]
    assert bins["normal"].counts.tolist() == alone.counts.tolist()
    assert bins["normal"].at_edge.tolist() == alone.at_edge.tolist()
    assert counts == S.scan(spark_frame, {}, ["code", "word"]).counts
    assert sum(counts["word"].values()) < len(frame[0])  # nulls are not a category


def test_session_defaults_fit_a_local_master_and_yield_to_the_settings() -> None:
    local = defaults(SparkSettings(master="local[3]"))
    assert local["spark.sql.shuffle.partitions"] == "6"
    assert local["spark.sql.execution.arrow.maxRecordsPerBatch"] == "100000"
    assert "spark.sql.shuffle.partitions" not in defaults(SparkSettings(master="yarn"))
    mine = SparkSettings(master="local[2]", conf={"spark.sql.shuffle.partitions": "9"})
    assert defaults(mine)["spark.sql.shuffle.partitions"] == "9"


def test_a_local_jvm_collects_with_the_parallel_collector_unless_told_otherwise(
    spark: T.Any,
) -> None:
    """The throughput collector on a local master, and only there; the user's JVM options
    win whole (a merge could contradict them: two collectors make the JVM refuse to start)."""
    option = "spark.driver.extraJavaOptions"
    assert defaults(SparkSettings(master="local[2]"))[option] == "-XX:+UseParallelGC"
    assert option not in defaults(SparkSettings(master="spark://host:7077"))
    mine = SparkSettings(master="local[*]", conf={option: "-XX:+UseG1GC -Xss4m"})
    assert defaults(mine)[option] == "-XX:+UseG1GC -Xss4m"
    # the test session's JVM (local[2], no option of its own) runs it
    beans = spark.sparkContext._jvm.java.lang.management.ManagementFactory
    names = {bean.getName() for bean in beans.getGarbageCollectorMXBeans()}
    assert names == {"PS Scavenge", "PS MarkSweep"}, names
