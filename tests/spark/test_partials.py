"""A partition's figures (``partials``) against numpy on the whole: merged from hand-made
splits, in any order and grouping, they are numpy's figures of all the rows. No Spark: the
worker's code is numpy and Arrow only."""

from __future__ import annotations

import functools

import numpy as np
import pyarrow as pa
import pytest

from bikes.spark import partials as P

SPLITS = [[], [1], [0, 0, 7], [3, 500, 501, 1999], list(range(0, 2000, 97))]


def _parts(values: np.ndarray, cuts: list[int]) -> list[np.ndarray]:
    """``values`` cut at ``cuts`` (repeated cuts: empty parts)."""
    return np.split(values, sorted(cuts))


@pytest.fixture
def values() -> np.ndarray:
    """Large offset, small spread (where a sum of squares cancels), ties on both extremes."""
    rng = np.random.default_rng(4)
    found = 1e6 + np.round(rng.normal(size=2_000), 3)
    found[[10, 700, 1500]] = found.min()
    found[[20, 1900]] = found.max()
    return found


@pytest.mark.parametrize("cuts", SPLITS)
def test_merged_moments_are_numpy_s_whatever_the_split(values: np.ndarray, cuts: list[int]) -> None:
    parts = [P.moments(np.sort(p)) for p in _parts(values, cuts)]
    left = functools.reduce(P.merge_moments, parts, P.empty_moments())
    right = functools.reduce(lambda a, b: P.merge_moments(b, a), reversed(parts))
    for merged in (left, right):
        n, mean, m2, low, high, at_low, at_high = merged
        assert n == values.size
        assert mean == pytest.approx(values.mean(), rel=1e-15)
        assert np.sqrt(m2 / n) == pytest.approx(values.std(), rel=1e-9)
        assert (low, high) == (values.min(), values.max())
        assert at_low == np.count_nonzero(values == values.min()) == 4
        assert at_high == np.count_nonzero(values == values.max()) == 3


def test_no_rows_have_empty_moments_and_merge_as_nothing(values: np.ndarray) -> None:
    empty = P.moments(np.array([]))
    assert empty[0] == 0
    whole = P.moments(np.sort(values))
    np.testing.assert_array_equal(P.merge_moments(empty, whole), whole)
    np.testing.assert_array_equal(P.merge_moments(whole, empty), whole)


@pytest.mark.parametrize("cuts", SPLITS)
def test_merged_errors_are_numpy_s_whatever_the_split(values: np.ndarray, cuts: list[int]) -> None:
    rng = np.random.default_rng(6)
    y = values - 1e6 + 5  # mape's y + 1 crosses zero nowhere
    y[::50] = -1.0  # ... except here: the denominator is eps, as sklearn's
    p = y * rng.normal(1, 0.1, y.size)
    parts = [P.errors(a, b) for a, b in zip(_parts(y, cuts), _parts(p, cuts), strict=True)]
    n, squared, absolute, relative, mean, total = functools.reduce(
        P.merge_errors, parts, np.zeros(P.ERRORS)
    )
    gap = np.abs(y - p)
    assert n == y.size
    assert squared == pytest.approx(np.sum((y - p) ** 2), rel=1e-12)
    assert absolute == pytest.approx(gap.sum(), rel=1e-12)
    assert relative == pytest.approx(np.sum(gap / np.maximum(np.abs(y + 1), P.EPS)), rel=1e-12)
    assert mean == pytest.approx(y.mean(), rel=1e-12)
    assert total == pytest.approx(y.var() * y.size, rel=1e-9)


def test_merged_stamps_keep_the_first_and_last_and_skip_missing_times() -> None:
    assert P.merge_stamps([None, None], [5, 9]) == [5, 9]
    assert P.merge_stamps([3, 7], [5, 9]) == [3, 9]
    assert P.merge_stamps([3, 7, None, None], [None, None, 1, 2]) == [3, 7, 1, 2]


def test_number_checks_count_missing_and_out_of_contract_rows() -> None:
    column = pa.array([1.0, None, float("nan"), 5.0, -1.0, 2.0, float("inf")])
    bounded = P.Check("x", minimum=0.0, maximum=4.0)
    assert P.checked(bounded, column) == (2, 3)  # -1, 5 and inf out; null and NaN missing
    listed = P.Check("x", values=(1.0, 2.0))
    assert P.checked(listed, column) == (2, 3)
    codes = pa.array([0, 1, 2, 2, 0], pa.int8())
    assert P.checked(P.Check("q", coded=True), codes) == (1, 2)
    integers = pa.array([1, None, 3, 12], pa.int32())  # nulls of an int column: missing
    assert P.checked(P.Check("k", minimum=1.0, maximum=10.0), integers) == (1, 1)


def test_a_partition_s_record_is_numpy_s_figures_of_its_batches() -> None:
    rng = np.random.default_rng(8)
    n = 3_000
    x = np.round(rng.normal(size=n), 1)
    x[::13] = np.nan
    y = rng.integers(0, 100, n).astype(float)
    p = y + rng.normal(size=n)
    labelled = rng.random(n) < 0.8
    code = rng.integers(0, 4, n)
    stamp = rng.integers(0, 10**12, n)
    table = pa.table(
        {
            "x": x,
            "y": y,
            "p": p,
            "l": labelled,
            "k": code,
            "t": pa.array(stamp, pa.timestamp("us", tz="UTC")),
        }
    )
    edges = np.array([-1.0, 0.0, 0.5, 1.0])
    plan = P.Plan(
        binned=(("x", edges), ("y", np.array([10.0, 50.0]))),
        counted=("k",),
        labelled="l",
        errors=("y", "p"),
        stamps=(("t", False), ("t", True)),
        checks=(P.Check("x", minimum=-2.0, maximum=2.0),),
    )
    (record,) = P.scan(table.to_batches(max_chunksize=700), plan)
    assert record.schema.names == P.record_fields(plan)
    row = record.to_pylist()[0]
    assert row["rows"] == n
    finite = x[np.isfinite(x)]
    bucket = np.searchsorted(edges, finite, side="right")
    assert row["n0"] == np.bincount(bucket, minlength=edges.size + 1).tolist()
    m = row["m0"]
    assert m[0] == finite.size
    assert m[1] == pytest.approx(finite.mean(), rel=1e-12)
    assert np.sqrt(m[2] / m[0]) == pytest.approx(finite.std(), rel=1e-12)
    assert dict(zip(row["k0"], row["c0"], strict=True)) == dict(
        zip(*np.unique(code, return_counts=True), strict=True)
    )
    kept_y, kept_p = y[labelled], p[labelled]
    assert row["e"][0] == labelled.sum()
    assert row["e"][1] == pytest.approx(np.sum((kept_y - kept_p) ** 2), rel=1e-12)
    assert row["e"][5] == pytest.approx(kept_y.var() * kept_y.size, rel=1e-12)
    first, last = stamp.min(), stamp.max()
    assert row["t"] == [first, last, stamp[labelled].min(), stamp[labelled].max()]
    assert row["q"] == [int(np.isnan(x).sum()), int((np.abs(finite) > 2).sum())]


def test_an_empty_partition_sends_nothing() -> None:
    assert list(P.scan([], P.Plan(binned=(("x", np.array([0.0])),)))) == []
