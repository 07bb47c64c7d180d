"""What a Spark Python worker runs on one partition: numpy and Arrow only.

These functions are shipped to the workers by ``bikes.spark.statistics``; a worker imports
this module, so it imports nothing heavier than numpy and pyarrow (no pydantic, scipy or
PySpark's SQL layer: each worker would pay for them at its start). ``scan`` reads a
partition's Arrow batches and yields one small record of partial sums that the driver adds
up: the rows never leave the worker.

Every figure of a side of the monitoring is gathered in that one pass (``Plan``), because the
rows' crossing from the JVM to Python is what a pass costs: a second scan (a JVM aggregation
beside it) cost as much as the numpy work of all the figures together. The partial figures
merge with the ``merge_*`` functions below, in a partition (batch after batch) and on the
driver (partition after partition) alike; the merges are associative, so the figures do not
depend on how Spark splits the rows.
"""

from __future__ import annotations

import dataclasses
import typing as T

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# A numeric column's moments as one vector: finite rows, mean, sum of squared deviations from
# the mean (M2), minimum, maximum, rows equal to the minimum, rows equal to the maximum.
MOMENTS = 7
# The labelled rows' error sums: rows, sum of squared errors, of absolute errors, of relative
# errors, the target's mean and M2 (its total sum of squares).
ERRORS = 6
EPS = float(np.finfo(np.float64).eps)


@dataclasses.dataclass(frozen=True)
class Check:
    """A column's quality count (``quality.counts``: missing rows, present rows out of the
    contract). ``coded``: the column holds the JVM's verdict per row (0 fine, 1 missing, 2
    out), for types numpy cannot judge as Spark does (text cast to numbers); otherwise it is a
    number column judged here on ``values``, ``minimum`` and ``maximum``."""

    column: str
    coded: bool = False
    values: tuple[float, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None


@dataclasses.dataclass(frozen=True)
class Plan:
    """What one pass computes, by column name of the batches.

    ``binned``: double columns and their sorted distinct edges (``bucketed``) -- their
    moments come along; ``counted``: columns counted by value; ``labelled``: a boolean column,
    true on the rows with target and prediction (None with ``errors``: the rows where both
    error columns are numbers, not null nor NaN); ``errors``: the double target and
    prediction columns whose errors are summed on those rows; ``stamps``: timestamp columns
    whose first and last time are wanted, each on every row or on the labelled rows only;
    ``checks``: quality counts."""

    binned: tuple[tuple[str, np.ndarray], ...] = ()
    counted: tuple[str, ...] = ()
    labelled: str | None = None
    errors: tuple[str, str] | None = None
    stamps: tuple[tuple[str, bool], ...] = ()
    checks: tuple[Check, ...] = ()


def finite(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A double column's finite values (nulls, NaN and infinities dropped, as a detector)."""
    values = _doubles(column)
    kept: np.ndarray = values[np.isfinite(values)]
    return kept


def _doubles(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A number column as doubles, nulls as NaN."""
    return np.asarray(column.to_numpy(zero_copy_only=False), dtype=float)


def bucketed(edges: np.ndarray, ordered: np.ndarray) -> tuple[np.ndarray, ...]:
    """``summaries.Bins``' three arrays for sorted finite values on sorted distinct ``edges``:
    bucket ``j`` holds ``e_(j-1) <= x < e_j`` (bucket 0 everything below ``e_0``, the last
    everything from ``e_m`` up); per bucket its rows, those equal to its left edge, and the sum
    of the others. The values are sorted and the edges searched in them: numpy's sort of a
    batch and two searches per edge beat a search per value (5 against 8 ms per 100,000)."""
    below = np.searchsorted(ordered, edges, side="left")  # values < e_j
    upto = np.searchsorted(ordered, edges, side="right")  # values <= e_j
    counts = np.diff(np.concatenate(([0], below, [ordered.size])))
    at = np.concatenate(([0], upto - below))
    cumulative = np.concatenate(([0.0], np.cumsum(ordered)))
    inside = cumulative[np.concatenate((below, [ordered.size]))]
    inside -= cumulative[np.concatenate(([0], upto))]
    return counts.astype(np.int64), at.astype(np.int64), inside


def moments(ordered: np.ndarray) -> np.ndarray:
    """The ``MOMENTS`` vector of sorted finite values (all zeros and NaN when none)."""
    n = ordered.size
    if not n:
        return empty_moments()
    mean = float(ordered.mean())
    m2 = float(np.square(ordered - mean).sum())
    low, high = ordered[0], ordered[-1]
    at_low = np.searchsorted(ordered, low, side="right")
    at_high = n - np.searchsorted(ordered, high, side="left")
    return np.array([n, mean, m2, low, high, at_low, at_high], dtype=float)


def empty_moments() -> np.ndarray:
    return np.array([0.0, np.nan, 0.0, np.nan, np.nan, 0.0, 0.0])


def merge_moments(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Two ``MOMENTS`` vectors of disjoint rows as one: Chan, Golub and LeVeque's pairwise
    update of the mean and M2 (no sum of squares, whose difference cancels), the extremes
    and the rows on them. Counts stay exact in doubles up to 2**53 rows."""
    na, nb = a[0], b[0]
    if not nb:
        return a.copy()
    if not na:
        return b.copy()
    n = na + nb
    delta = b[1] - a[1]
    mean = a[1] + delta * (nb / n)
    m2 = a[2] + b[2] + delta * delta * (na * nb / n)
    low, at_low = _extreme(a[3], a[5], b[3], b[5], lower=True)
    high, at_high = _extreme(a[4], a[6], b[4], b[6], lower=False)
    return np.array([n, mean, m2, low, high, at_low, at_high], dtype=float)


def _extreme(x: float, nx: float, y: float, ny: float, *, lower: bool) -> tuple[float, float]:
    if x == y:
        return x, nx + ny
    return (x, nx) if (x < y) == lower else (y, ny)


def errors(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """The ``ERRORS`` vector of a regression's labelled rows (mape on ``y + 1``, as
    ``metrics.regression_metrics``)."""
    n = y.size
    if not n:
        return np.zeros(ERRORS)
    gap = np.abs(y - p)
    mean = float(y.mean())
    return np.array(
        [
            n,
            float(np.square(y - p).sum()),
            float(gap.sum()),
            float((gap / np.maximum(np.abs(y + 1), EPS)).sum()),
            mean,
            float(np.square(y - mean).sum()),
        ]
    )


def merge_errors(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Two ``ERRORS`` vectors as one: sums added, the target's mean and M2 merged as moments."""
    if not b[0]:
        return a.copy()
    if not a[0]:
        return b.copy()
    n = a[0] + b[0]
    delta = b[4] - a[4]
    mean = a[4] + delta * (b[0] / n)
    m2 = a[5] + b[5] + delta * delta * (a[0] * b[0] / n)
    return np.array([n, a[1] + b[1], a[2] + b[2], a[3] + b[3], mean, m2])


def merge_stamps(a: list[int | None], b: list[int | None]) -> list[int | None]:
    """``[first, last, first, last, ...]`` of two parts (None: no time) as one."""
    merged: list[int | None] = []
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        if x is None or y is None:
            merged.append(y if x is None else x)
        else:
            merged.append(min(x, y) if i % 2 == 0 else max(x, y))
    return merged


def checked(check: Check, column: pa.Array | pa.ChunkedArray) -> tuple[int, int]:
    """One batch's (missing rows, present rows out of the contract) of a column, as
    ``statistics._invalid`` decides them in Spark."""
    if check.coded:
        codes = np.asarray(column.to_numpy(zero_copy_only=False))
        return int((codes == 1).sum()), int((codes == 2).sum())
    values = _doubles(column)  # nulls and NaN alike: missing, as pandas sees them
    present = ~np.isnan(values)
    invalid = np.zeros(values.size, dtype=bool)
    if check.values is not None:
        invalid |= ~np.isin(values, np.asarray(check.values, dtype=float))
    if check.minimum is not None:
        invalid |= values < check.minimum
    if check.maximum is not None:
        invalid |= values > check.maximum
    return int(values.size - present.sum()), int((present & invalid).sum())


def scan(batches: T.Iterable[pa.RecordBatch], plan: Plan) -> T.Iterator[pa.RecordBatch]:
    """One partition's figures of ``plan``, one record (``record_fields`` names them):
    ``rows``; per binned column ``i``, ``n{i}``/``a{i}``/``s{i}`` (``bucketed``'s arrays) and
    ``m{i}`` (``MOMENTS``); per counted column ``j``, ``k{j}``/``c{j}`` (its distinct values
    and their rows); ``e`` (``ERRORS``, empty without errors), ``t`` (per stamp its first and
    last time in microseconds, null when none) and ``q`` (per check its two counts)."""
    sizes = [e.size + 1 for _, e in plan.binned]
    counts = [np.zeros(n, dtype=np.int64) for n in sizes]
    at = [np.zeros(n, dtype=np.int64) for n in sizes]
    sums = [np.zeros(n) for n in sizes]
    found = [empty_moments() for _ in plan.binned]
    parts: list[list[pa.StructArray]] = [[] for _ in plan.counted]
    error = np.zeros(ERRORS)
    stamps: list[int | None] = [None] * (2 * len(plan.stamps))
    quality = np.zeros(2 * len(plan.checks), dtype=np.int64)
    rows = 0
    kinds: list[pa.DataType] | None = None  # the counted columns' types; None: no batch
    for batch in batches:
        rows += batch.num_rows
        kinds = [batch.schema.field(c).type for c in plan.counted]
        for i, (name, edges) in enumerate(plan.binned):
            ordered = np.sort(finite(batch.column(name)))
            if ordered.size:
                part = bucketed(edges, ordered)
                counts[i] += part[0]
                at[i] += part[1]
                sums[i] += part[2]
                found[i] = merge_moments(found[i], moments(ordered))
        for j, name in enumerate(plan.counted):
            parts[j].append(pc.value_counts(batch.column(name)))
        mask = None
        if plan.labelled is not None:
            mask = np.asarray(batch.column(plan.labelled).to_numpy(zero_copy_only=False), bool)
        if plan.errors is not None:
            y = _doubles(batch.column(plan.errors[0]))
            p = _doubles(batch.column(plan.errors[1]))
            if mask is None:  # numbers: labelled where both are (nulls are NaN here)
                mask = ~(np.isnan(y) | np.isnan(p))
            error = merge_errors(error, errors(y[mask], p[mask]))
        for s, (name, labelled_only) in enumerate(plan.stamps):
            times = batch.column(name).cast(pa.int64())
            if labelled_only and mask is not None:
                times = times.filter(pa.array(mask))
            ends = pc.min_max(times)
            here = [ends["min"].as_py(), ends["max"].as_py()]
            stamps[2 * s : 2 * s + 2] = merge_stamps(stamps[2 * s : 2 * s + 2], here)
        for r, check in enumerate(plan.checks):
            quality[2 * r : 2 * r + 2] += checked(check, batch.column(check.column))
    if kinds is None:
        return  # an empty partition: nothing to add
    arrays: list[pa.Array] = [pa.array([rows], pa.int64())]
    for i in range(len(plan.binned)):
        arrays += [_one(pa.array(counts[i])), _one(pa.array(at[i])), _one(pa.array(sums[i]))]
        arrays.append(_one(pa.array(found[i], pa.float64())))
    for j, kind in enumerate(kinds):
        table = pa.table(
            {
                "v": pa.concat_arrays([p.field("values") for p in parts[j]]),
                "n": pa.concat_arrays([p.field("counts") for p in parts[j]]),
            }
        )
        summed = table.group_by("v").aggregate([("n", "sum")])
        arrays.append(_one(summed["v"].combine_chunks().cast(kind)))
        arrays.append(_one(summed["n_sum"].combine_chunks().cast(pa.int64())))
    arrays.append(_one(pa.array(error if plan.errors is not None else [], pa.float64())))
    arrays.append(_one(pa.array(stamps, pa.int64())))
    arrays.append(_one(pa.array(quality, pa.int64())))
    yield pa.RecordBatch.from_arrays(arrays, names=record_fields(plan))


def record_fields(plan: Plan) -> list[str]:
    """The names of ``scan``'s record, in order."""
    names = ["rows"]
    for i in range(len(plan.binned)):
        names += [f"n{i}", f"a{i}", f"s{i}", f"m{i}"]
    for j in range(len(plan.counted)):
        names += [f"k{j}", f"c{j}"]
    return [*names, "e", "t", "q"]


def _one(values: pa.Array) -> pa.Array:
    """``values`` as a list array of one list (one record's array field)."""
    return pa.ListArray.from_arrays(pa.array([0, len(values)], pa.int32()), values)
