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


def test_moments_and_errors_in_one_job_are_exact(frame: tuple[pd.DataFrame, T.Any]) -> None:
    data, spark_frame = frame
    labelled = S.present(spark_frame, "normal")
    row = S.one_row(
        spark_frame,
        [
            *S.moments_aggregates(spark_frame, ["normal", "rounded"]),
            *S.error_aggregates("normal", "rounded", labelled),
        ],
    )
    assert int(row["rows"]) == len(data)
    for column in ("normal", "rounded"):
        values = _finite(data[column])
        m = S.moments_of(row, ["normal", "rounded"])[column]
        assert m.rows == values.size
        assert m.mean == pytest.approx(values.mean(), rel=1e-12)
        assert m.std == pytest.approx(values.std(), rel=1e-12)
        assert (m.minimum, m.maximum) == (values[0], values[-1])
    kept = data[data["normal"].notna()]
    y, p = kept["normal"].to_numpy(), kept["rounded"].to_numpy()
    errors = S.errors_of(row)
    assert errors.rows == len(kept)
    with np.errstate(invalid="ignore"):
        assert errors.squared == pytest.approx(np.sum((y - p) ** 2), rel=1e-12, nan_ok=True)


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


def test_bins_and_counts_in_one_pass_equal_the_separate_ones(
    frame: tuple[pd.DataFrame, T.Any],
) -> None:
    _, spark_frame = frame
    edges = {"normal": np.linspace(-2, 2, 41)}
    bins, counts = S.summaries(spark_frame, edges, ["code", "word"])
    alone = S.bins(spark_frame, edges)["normal"]
    assert bins["normal"].counts.tolist() == alone.counts.tolist()
    assert bins["normal"].at_edge.tolist() == alone.at_edge.tolist()
    assert counts == S.category_counts(spark_frame, ["code", "word"])
    assert sum(counts["word"].values()) < len(frame[0])  # nulls are not a category


def test_session_defaults_fit_a_local_master_and_yield_to_the_settings() -> None:
    local = defaults(SparkSettings(master="local[3]"))
    assert local["spark.sql.shuffle.partitions"] == "6"
    assert local["spark.sql.execution.arrow.maxRecordsPerBatch"] == "100000"
    assert "spark.sql.shuffle.partitions" not in defaults(SparkSettings(master="yarn"))
    mine = SparkSettings(master="local[2]", conf={"spark.sql.shuffle.partitions": "9"})
    assert defaults(mine)["spark.sql.shuffle.partitions"] == "9"
