"""Distributed aggregations for monitoring: each function is one Spark job whose result on
the driver is a few thousand numbers per column, whatever the rows.

Nothing here collects rows: only counts, sums, quantile sketches and group counts come back.
Plain counts and sums are Spark aggregations; bins, sketches and category counts are one
``mapInArrow`` pass each, numpy or Arrow compute per partition, one small record per partition
summed on the driver (what Spark's ``treeAggregate`` does; a Bucketizer, an ``explode`` and a
``groupBy`` were 6x slower). The numpy scoring of these summaries is ``bikes.core.summaries``
(pure, tested on its own).
"""

from __future__ import annotations

import dataclasses
import typing as T

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as ST

from bikes.core.contract import Feature
from bikes.core.summaries import Bins

NUMERIC_TYPES = (ST.NumericType,)


def is_numeric(frame: DataFrame, column: str) -> bool:
    """A number column (booleans are not numbers, as in pandas' kinds)."""
    return isinstance(frame.schema[column].dataType, NUMERIC_TYPES)


def finite(frame: DataFrame, column: str) -> Column:
    """The column as a double where it is a finite number, else null (what a detector scores:
    ``drift._finite`` drops NaN and infinities)."""
    value = F.col(column).cast("double")
    return F.when(
        value.isNotNull() & ~F.isnan(value) & (F.abs(value) != float("inf")), value
    ).otherwise(F.lit(None).cast("double"))


def present(frame: DataFrame, column: str) -> Column:
    """Not missing as pandas sees it: not null and, for floats, not NaN."""
    kind = frame.schema[column].dataType
    if isinstance(kind, ST.FloatType | ST.DoubleType):
        return F.col(column).isNotNull() & ~F.isnan(F.col(column))
    return F.col(column).isNotNull()


@dataclasses.dataclass(frozen=True)
class Moments:
    """A numeric column's finite values: how many, their mean, population std, range."""

    rows: int
    mean: float
    std: float
    minimum: float
    maximum: float


def moments(
    frame: DataFrame,
    columns: list[str],
    timestamp: str | None = None,
    labelled: Column | None = None,
) -> tuple[int, dict[str, Moments], list[T.Any]]:
    """Exact counts, means, population standard deviations and ranges, with the table's rows
    and (``timestamp``) its first and last time, of all rows and of the ``labelled`` ones:
    one pass."""
    aggregates = [F.count(F.lit(1)).alias("rows")]
    if timestamp is not None:
        stamp = F.col(timestamp).cast("timestamp")
        kept = stamp if labelled is None else F.when(labelled, stamp)
        aggregates += [F.min(stamp), F.max(stamp), F.min(kept), F.max(kept)]
    for i, column in enumerate(columns):
        value = finite(frame, column)
        aggregates += [
            F.count(value).alias(f"n{i}"),
            F.avg(value).alias(f"mean{i}"),
            F.stddev_pop(value).alias(f"std{i}"),
            F.min(value).alias(f"min{i}"),
            F.max(value).alias(f"max{i}"),
        ]
    row = frame.agg(*aggregates).first()
    assert row is not None
    found = {
        column: Moments(
            int(row[f"n{i}"]),
            _number(row[f"mean{i}"]),
            _number(row[f"std{i}"]),
            _number(row[f"min{i}"]),
            _number(row[f"max{i}"]),
        )
        for i, column in enumerate(columns)
    }
    return int(row["rows"]), found, list(row[1:5]) if timestamp is not None else []


def sketches(
    frame: DataFrame, columns: list[str], probabilities: list[float], relative_error: float
) -> tuple[dict[str, list[float]], dict[str, Moments]]:
    """Quantiles of the finite values with a rank error of at most ``relative_error * rows``
    (plus one per partition), and their exact ``Moments``, all columns in one pass.

    Each partition sorts its finite values (numpy, in the Python worker: one column of one
    partition in memory, as any sort) and keeps ``k = ceil(1 / relative_error)`` of them, each
    weighted by the rows it stands for; the driver merges these weighted points (a few
    thousand per partition and column, never rows) and reads the quantiles off their
    cumulative weights. A partition's count of values below any point is known to within one
    point's weight (``ceil(n_p / k)``), so the merged rank error is at most ``n / k`` plus the
    partitions. Spark's ``approxQuantile`` gives the same guarantee but inserts every row into
    a Greenwald-Khanna summary in the JVM, an order of magnitude slower at this accuracy.
    The moments: each partition's count, mean, sum of squared deviations and range, merged
    as Chan et al.'s parallel variance (what Spark's ``stddev_pop`` does).
    """
    if not columns:
        return {}, {}
    points = max(int(np.ceil(1 / relative_error)), 1)
    schema = "c int, v array<double>, w array<long>, m array<double>"

    def summarise(batches: T.Iterator[pa.RecordBatch]) -> T.Iterator[pa.RecordBatch]:
        values = _finite_values(batches, len(columns))
        out: dict[str, list[T.Any]] = {"c": [], "v": [], "w": [], "m": []}
        for i, found in enumerate(values):
            if not found.size:
                continue
            found.sort()
            mean = float(found.mean())
            deviations = float(np.square(found - mean).sum())
            out["m"].append([float(found.size), mean, deviations, found[0], found[-1]])
            ranks = np.unique(np.ceil(np.arange(1, points + 1) * found.size / points))
            ranks = ranks.astype(np.int64)
            out["c"].append(i)
            out["v"].append(found[ranks - 1].tolist())
            out["w"].append(np.diff(ranks, prepend=0).tolist())
        if out["c"]:
            yield pa.RecordBatch.from_pydict(out, schema=_QUANTILE_SCHEMA)

    rows = _doubles(frame, columns).mapInArrow(summarise, schema).collect()
    merged: dict[int, tuple[list[float], list[int]]] = {i: ([], []) for i in range(len(columns))}
    parts: dict[int, list[list[float]]] = {i: [] for i in range(len(columns))}
    for row in rows:
        merged[row["c"]][0].extend(row["v"])
        merged[row["c"]][1].extend(row["w"])
        parts[row["c"]].append(row["m"])
    found: dict[str, list[float]] = {}
    wanted = np.asarray(probabilities, dtype=float)
    for i, column in enumerate(columns):
        values, weights = np.asarray(merged[i][0]), np.asarray(merged[i][1], dtype=np.int64)
        if not values.size:
            found[column] = [float("nan")] * len(probabilities)
            continue
        order = np.argsort(values, kind="stable")
        values, cumulative = values[order], np.cumsum(weights[order])
        # the smallest point whose cumulative weight reaches q * n (rank ceil(q n), at least 1)
        ranks = np.maximum(np.ceil(wanted * cumulative[-1]), 1)
        picked = np.minimum(np.searchsorted(cumulative, ranks), values.size - 1)
        found[column] = [float(v) for v in values[picked]]
    return found, {c: _merged_moments(parts[i]) for i, c in enumerate(columns)}


def _merged_moments(parts: list[list[float]]) -> Moments:
    """Partitions' ``[rows, mean, squared deviations, min, max]`` as one column's moments."""
    if not parts:
        nan = float("nan")
        return Moments(0, nan, nan, nan, nan)
    rows, mean, squares, low, high = parts[0]
    for n, m, s, lo, hi in parts[1:]:
        total = rows + n
        delta = m - mean
        squares += s + delta * delta * rows * n / total
        mean += delta * n / total
        rows, low, high = total, min(low, lo), max(high, hi)
    return Moments(int(rows), mean, float(np.sqrt(squares / rows)), low, high)


def bins(frame: DataFrame, edges: dict[str, np.ndarray]) -> dict[str, Bins]:
    """Each column's exact counts on its fine edges (``summaries.Bins``): one pass over every
    column at once. Each partition sorts each Arrow batch's finite values and finds the edges
    in them (``np.searchsorted``: rows per bucket, rows equal to its left edge, and the sum
    between, in numpy in the Python worker) and sends one small record per column (three
    arrays of ``len(edges) + 1`` numbers); the driver adds them up."""
    if not edges:
        return {}
    columns = list(edges)
    ordered = [np.asarray(edges[c], dtype=float) for c in columns]

    def count(batches: T.Iterator[pa.RecordBatch]) -> T.Iterator[pa.RecordBatch]:
        sizes = [e.size + 1 for e in ordered]
        counts = [np.zeros(n, dtype=np.int64) for n in sizes]
        at = [np.zeros(n, dtype=np.int64) for n in sizes]
        sums = [np.zeros(n) for n in sizes]
        seen = [False] * len(columns)
        for batch in batches:
            for i in range(len(columns)):
                x = _finite(batch.column(i))
                if not x.size:
                    continue
                seen[i] = True
                part = _bucketed(ordered[i], np.sort(x))
                counts[i] += part[0]
                at[i] += part[1]
                sums[i] += part[2]
        out: dict[str, list[T.Any]] = {"c": [], "n": [], "at": [], "sx": []}
        for i in range(len(columns)):
            if seen[i]:
                out["c"].append(i)
                out["n"].append(counts[i].tolist())
                out["at"].append(at[i].tolist())
                out["sx"].append(sums[i].tolist())
        if out["c"]:
            yield pa.RecordBatch.from_pydict(out, schema=_BINS_SCHEMA)

    schema = "c int, n array<long>, at array<long>, sx array<double>"
    rows = _doubles(frame, columns).mapInArrow(count, schema).collect()
    totals = [
        (np.zeros(e.size + 1, np.int64), np.zeros(e.size + 1, np.int64), np.zeros(e.size + 1))
        for e in ordered
    ]
    for row in rows:
        n, at, sx = totals[row["c"]]
        n += np.asarray(row["n"], dtype=np.int64)
        at += np.asarray(row["at"], dtype=np.int64)
        sx += np.asarray(row["sx"], dtype=float)
    return {
        c: Bins(ordered[i], totals[i][0], totals[i][1], totals[i][2]) for i, c in enumerate(columns)
    }


_QUANTILE_SCHEMA = pa.schema(
    [
        ("c", pa.int32()),
        ("v", pa.list_(pa.float64())),
        ("w", pa.list_(pa.int64())),
        ("m", pa.list_(pa.float64())),
    ]
)
_BINS_SCHEMA = pa.schema(
    [
        ("c", pa.int32()),
        ("n", pa.list_(pa.int64())),
        ("at", pa.list_(pa.int64())),
        ("sx", pa.list_(pa.float64())),
    ]
)


def _doubles(frame: DataFrame, columns: list[str]) -> DataFrame:
    """Only these columns, as doubles (positional names: any column name is safe)."""
    return frame.select(*(F.col(c).cast("double").alias(f"_x{i}") for i, c in enumerate(columns)))


def _finite(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A double column's finite values (nulls, NaN and infinities dropped, as a detector)."""
    values: np.ndarray = np.asarray(column.to_numpy(zero_copy_only=False), dtype=float)
    finite: np.ndarray = values[np.isfinite(values)]
    return finite


def _bucketed(edges: np.ndarray, ordered: np.ndarray) -> tuple[np.ndarray, ...]:
    """``Bins``' three arrays for sorted values: bucket ``j`` holds ``e_(j-1) <= x < e_j``."""
    below = np.searchsorted(ordered, edges, side="left")  # values < e_j
    upto = np.searchsorted(ordered, edges, side="right")  # values <= e_j
    counts = np.diff(np.concatenate(([0], below, [ordered.size])))
    at = np.concatenate(([0], upto - below))
    cumulative = np.concatenate(([0.0], np.cumsum(ordered)))
    inside = cumulative[np.concatenate((below, [ordered.size]))]
    inside -= cumulative[np.concatenate(([0], upto))]
    return counts, at, inside


def _finite_values(batches: T.Iterable[pa.RecordBatch], columns: int) -> list[np.ndarray]:
    """Every batch's finite values per column, concatenated (one partition's)."""
    parts: list[list[np.ndarray]] = [[] for _ in range(columns)]
    for batch in batches:
        for i in range(columns):
            parts[i].append(_finite(batch.column(i)))
    return [np.concatenate(p) if p else np.array([]) for p in parts]


def category_counts(frame: DataFrame, columns: list[str]) -> dict[str, dict[T.Any, int]]:
    """``{column: {value: rows}}`` of the present values of each column: one pass over every
    column at once. Each partition counts its values with Arrow's ``value_counts`` (in the
    Python worker) and sends one record: per column, its distinct values and their rows; the
    driver adds them up. A numeric column's values come back as floats, as the pandas engine
    scores them."""
    if not columns:
        return {}
    keyed = frame.select(*(F.col(c).alias(f"_k{i}") for i, c in enumerate(columns)))
    schema = ST.StructType(
        [
            field
            for i, column in enumerate(keyed.schema.fields)
            for field in (
                ST.StructField(f"k{i}", ST.ArrayType(column.dataType)),
                ST.StructField(f"n{i}", ST.ArrayType(ST.LongType())),
            )
        ]
    )
    width = len(columns)

    def count(batches: T.Iterator[pa.RecordBatch]) -> T.Iterator[pa.RecordBatch]:
        parts: list[list[pa.StructArray]] = [[] for _ in range(width)]
        types: list[pa.DataType] = []
        for batch in batches:
            types = [batch.schema.field(i).type for i in range(width)]
            for i in range(width):
                parts[i].append(pc.value_counts(batch.column(i)))
        if not types:
            return
        arrays: list[pa.Array] = []
        for i in range(width):
            counted = pa.concat_arrays(parts[i])
            table = pa.table({"v": counted.field("values"), "n": counted.field("counts")})
            summed = table.group_by("v").aggregate([("n", "sum")])
            values = summed["v"].combine_chunks().cast(types[i])
            numbers = summed["n_sum"].combine_chunks().cast(pa.int64())
            arrays.append(pa.ListArray.from_arrays(pa.array([0, len(values)], pa.int32()), values))
            arrays.append(
                pa.ListArray.from_arrays(pa.array([0, len(numbers)], pa.int32()), numbers)
            )
        names = [name for i in range(width) for name in (f"k{i}", f"n{i}")]
        yield pa.RecordBatch.from_arrays(arrays, names=names)

    found: dict[str, dict[T.Any, int]] = {c: {} for c in columns}
    for row in keyed.mapInArrow(count, schema).collect():
        for i, column in enumerate(columns):
            for value, rows in zip(row[f"k{i}"], row[f"n{i}"], strict=True):
                if value is None or (isinstance(value, float) and not np.isfinite(value)):
                    continue
                if is_numeric(frame, column):
                    value = float(value)
                found[column][value] = found[column].get(value, 0) + int(rows)
    return found


def quality_counts(
    frame: DataFrame, features: dict[str, Feature], columns: list[str]
) -> tuple[int, dict[str, tuple[int, int]]]:
    """The rows, and per present column ``(missing, out of range)`` against the contract's
    bounds and values (``quality.counts``): one pass."""
    aggregates = [F.count(F.lit(1)).alias("rows")]
    for i, column in enumerate(columns):
        feature = features[column]
        here = present(frame, column)
        invalid = F.lit(False)
        if feature.values is not None:
            invalid = invalid | ~F.col(column).isin(list(feature.values))
        if feature.kind == "numeric" and not is_numeric(frame, column):
            invalid = invalid | F.col(column).cast("double").isNull()
        number = F.col(column).cast("double")
        if feature.min is not None:
            invalid = invalid | (number < F.lit(feature.min))
        if feature.max is not None:
            invalid = invalid | (number > F.lit(feature.max))
        aggregates += [
            F.sum(F.when(here, 0).otherwise(1)).alias(f"m{i}"),
            F.sum(F.when(here & F.coalesce(invalid, F.lit(False)), 1).otherwise(0)).alias(f"o{i}"),
        ]
    row = frame.agg(*aggregates).first()
    assert row is not None
    return int(row["rows"]), {
        c: (int(row[f"m{i}"] or 0), int(row[f"o{i}"] or 0)) for i, c in enumerate(columns)
    }


@dataclasses.dataclass(frozen=True)
class Errors:
    """A regression's labelled rows summed: what rmse, mae, r2 and mape need, exactly."""

    rows: int
    squared: float
    absolute: float
    relative: float
    total_squares: float

    def metrics(self) -> dict[str, float]:
        """``metrics.regression_metrics`` from the sums (sklearn's formulas: r2 is 1.0 for a
        perfect fit of a constant target, 0.0 for an imperfect one)."""
        n = self.rows
        if self.total_squares > 0:
            r2 = 1 - self.squared / self.total_squares
        else:
            r2 = 1.0 if self.squared == 0 else 0.0
        return {
            "rmse": float(np.sqrt(self.squared / n)),
            "mae": self.absolute / n,
            "r2": float(r2),
            "mape": self.relative / n,
        }


def error_aggregates(target: str, prediction: str) -> list[Column]:
    """The sums of ``Errors``; mape on ``y + 1`` as ``metrics.regression_metrics`` has it."""
    y, p = F.col(target).cast("double"), F.col(prediction).cast("double")
    eps = float(np.finfo(np.float64).eps)
    return [
        F.count(F.lit(1)).alias("rows"),
        F.sum((y - p) * (y - p)).alias("squared"),
        F.sum(F.abs(y - p)).alias("absolute"),
        F.sum(F.abs(y - p) / F.greatest(F.abs(y + 1), F.lit(eps))).alias("relative"),
        (F.var_pop(y) * F.count(F.lit(1))).alias("total_squares"),
    ]


def errors_of(row: T.Any) -> Errors:
    return Errors(
        int(row["rows"]),
        float(row["squared"] or 0.0),
        float(row["absolute"] or 0.0),
        float(row["relative"] or 0.0),
        float(row["total_squares"] or 0.0),
    )


def _number(value: T.Any) -> float:
    return float("nan") if value is None else float(value)
