"""The Spark aggregations against numpy on the same values: the sketch's quantiles within its
stated rank error, exact moments, exact bins and category counts, across partitions."""

from __future__ import annotations

import typing as T

import numpy as np
import pandas as pd
import pytest

from bikes.io.spark import SparkSettings, defaults

pytest.importorskip("pyspark")

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
    return data, spark.createDataFrame(data).repartition(4)


def _finite(values: pd.Series) -> np.ndarray:
    array = values.to_numpy(dtype=float)
    return np.sort(array[np.isfinite(array)])


def test_sketch_quantiles_lie_within_the_rank_error_and_moments_are_exact(
    frame: tuple[pd.DataFrame, T.Any],
) -> None:
    data, spark_frame = frame
    probabilities = [float(p) for p in np.linspace(0, 1, 101)]
    relative_error = 2e-3
    found, moments = S.sketches(spark_frame, ["normal", "rounded"], probabilities, relative_error)
    for column in ("normal", "rounded"):
        values = _finite(data[column])
        n = values.size
        allowed = relative_error * n + 4  # plus one per partition
        for p, q in zip(probabilities, found[column], strict=True):
            # the ranks q takes in the data: from values below it + 1 to values up to it
            low, high = np.searchsorted(values, q, "left") + 1, np.searchsorted(values, q, "right")
            target = max(np.ceil(p * n), 1)
            assert low - allowed <= target <= high + allowed, (column, p)
        m = moments[column]
        assert m.rows == n
        assert m.mean == pytest.approx(values.mean(), rel=1e-12)
        assert m.std == pytest.approx(values.std(), rel=1e-12)
        assert (m.minimum, m.maximum) == (values[0], values[-1])


def test_bins_are_the_exact_counts_on_the_edges(frame: tuple[pd.DataFrame, T.Any]) -> None:
    data, spark_frame = frame
    edges = {"normal": np.linspace(-2, 2, 41), "rounded": np.round(np.linspace(0, 1, 21), 2)}
    found = S.bins(spark_frame, edges)
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
    found = S.category_counts(spark_frame, ["code", "word"])
    assert found["code"] == {float(k): int(v) for k, v in data["code"].value_counts().items()}
    assert found["word"] == {str(k): int(v) for k, v in data["word"].value_counts().items()}


def test_session_defaults_fit_a_local_master_and_yield_to_the_settings() -> None:
    local = defaults(SparkSettings(master="local[3]"))
    assert local["spark.sql.shuffle.partitions"] == "6"
    assert local["spark.sql.execution.arrow.maxRecordsPerBatch"] == "100000"
    assert "spark.sql.shuffle.partitions" not in defaults(SparkSettings(master="yarn"))
    mine = SparkSettings(master="local[2]", conf={"spark.sql.shuffle.partitions": "9"})
    assert defaults(mine)["spark.sql.shuffle.partitions"] == "9"
