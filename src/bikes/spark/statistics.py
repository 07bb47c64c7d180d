"""Distributed aggregations for monitoring: each side of a monitoring (the reference, a
window) is ONE pass over its rows whose result on the driver is a few thousand numbers per
column, whatever the rows.

Nothing here collects rows: only counts, sums, moments, a sample's quantiles and group
counts come back. The pass (``scan``) is a ``mapInArrow``: numpy and Arrow compute per
partition (``partials.scan``), one small record per partition merged on the driver (what
Spark's ``treeAggregate`` does; a Bucketizer, an ``explode`` and a ``groupBy`` were 6x
slower). Everything a side needs -- bins, category counts, moments, quality counts, error
sums, first and last times -- shares that pass: the rows' crossing from the JVM to Python is
what it costs, and a JVM aggregation beside it was a second scan of the same columns (a
fifth of the engine's time at 10M rows). The numpy scoring of these summaries is
``bikes.core.summaries`` (pure, tested on its own).
"""

from __future__ import annotations

import dataclasses
import functools
import typing as T

import numpy as np
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as ST

from bikes.core.contract import Feature
from bikes.core.summaries import Bins
from bikes.spark import partials as P

NUMERIC_TYPES = (ST.NumericType,)
SAMPLE_ROWS = 200_000  # rows sampled to place the fine edges (sample_quantiles)


def is_numeric(frame: DataFrame, column: str) -> bool:
    """A number column (booleans are not numbers, as in pandas' kinds)."""
    return isinstance(frame.schema[column].dataType, NUMERIC_TYPES)


def present(frame: DataFrame, column: str) -> Column:
    """Not missing as pandas sees it: not null and, for floats, not NaN."""
    kind = frame.schema[column].dataType
    if isinstance(kind, ST.FloatType | ST.DoubleType):
        return F.col(column).isNotNull() & ~F.isnan(F.col(column))
    return F.col(column).isNotNull()


@dataclasses.dataclass(frozen=True)
class Moments:
    """A numeric column's finite values: how many, their mean, population std, range and
    the rows on its ends (which close the reference's fine bins: ``summaries.with_ends``)."""

    rows: int
    mean: float
    std: float
    minimum: float
    maximum: float
    at_minimum: int  # rows equal to the minimum
    at_maximum: int


def sample_quantiles(
    frame: DataFrame,
    columns: list[str],
    probabilities: list[float],
    rows: int,
    sample_rows: int = SAMPLE_ROWS,
    seed: int = 0,
) -> dict[str, list[float]]:
    """Each column's quantiles (``inverted_cdf``: values of the column) among the finite
    values of a uniform sample of about ``sample_rows`` rows, every row when the table has
    fewer. They only place the fine edges: the counts on those edges are exact whatever the
    edges (``summaries.Bins``), so the sample bounds no score; it makes each fine bin hold
    about ``1 / len(probabilities)`` of the rows. Sampling is a filter in the JVM and the
    sample crosses to the driver through Arrow: no Python worker, no pass over the rows in
    Python (a per-partition sort was the costliest pass of the engine)."""
    if not columns:
        return {}
    picked = _doubles(frame, columns)
    if rows > sample_rows:
        picked = picked.sample(fraction=min(1.0, 1.1 * sample_rows / rows), seed=seed)
    table = picked.toArrow()
    wanted = np.asarray(probabilities, dtype=float)
    found: dict[str, list[float]] = {}
    for i, column in enumerate(columns):
        values = P.finite(table.column(i))
        if not values.size:
            found[column] = [float("nan")] * len(probabilities)
            continue
        found[column] = np.quantile(values, wanted, method="inverted_cdf").tolist()
    return found


@dataclasses.dataclass(frozen=True)
class Scan:
    """One side's figures from ONE pass over its rows (``scan``)."""

    rows: int
    bins: dict[str, Bins]  # on the edges asked for
    moments: dict[str, Moments]  # of the binned columns' finite values
    counts: dict[str, dict[T.Any, int]]  # the counted columns' rows per present value
    errors: Errors | None  # the labelled rows' error sums, when asked
    stamps: list[T.Any]  # per stamp asked, its first and last time (None: no time)
    quality: dict[str, tuple[int, int]]  # per checked column (missing, out of range)


def scan(
    frame: DataFrame,
    edges: dict[str, np.ndarray],
    counted: list[str],
    *,
    labelled: tuple[str, str] | None = None,
    errors: bool = False,
    stamps: T.Sequence[tuple[str, bool]] = (),
    checks: dict[str, Feature] | None = None,
) -> Scan:
    """Every figure of one side in ONE pass over its rows, whatever the rows.

    The numeric columns' exact counts on their fine edges (``summaries.Bins``) and exact
    moments (count, mean, population std, extremes and the rows on them), the ``counted``
    columns' rows per present value, with ``errors`` a regression's error sums on the
    labelled rows (where both columns of ``labelled``, target and prediction, are present),
    each ``stamps`` column's first and last time (on every row, or on the labelled ones when
    its flag is set) and the ``checks`` columns' quality counts (``_invalid``).

    Each partition runs ``partials.scan`` in a Python worker (numpy binary searches, moments
    and sums, Arrow's ``value_counts`` per batch) and sends one record; the driver merges them
    (``partials.merge_*``: Chan's pairwise update for means and squared deviations, no sum
    of squares to cancel). The rows' crossing from the JVM to Python is what a pass costs: a
    JVM aggregation beside it scanned the rows a second time for figures numpy gets for
    little more on the rows it has anyway. So a column crosses once whatever its roles (a
    regression's target is binned, checked and summed from the same doubles) and, when the
    target and prediction are numbers, which rows are labelled is read off their doubles
    rather than sent. A counted numeric column's values come back as floats, as the pandas
    engine scores them."""
    checks = checks or {}
    numeric = list(edges)
    ordered = [np.asarray(edges[c], dtype=float) for c in numeric]
    doubles = {c: f"_x{i}" for i, c in enumerate(numeric)}
    selection = [F.col(c).cast("double").alias(doubles[c]) for c in numeric]
    raws = {c: f"_k{j}" for j, c in enumerate(counted)}
    selection += [F.col(c).alias(raws[c]) for c in counted]
    wanted = errors and labelled is not None
    if wanted:
        assert labelled is not None
        for role, column in zip(("_y", "_p"), labelled, strict=True):
            if column not in doubles:
                doubles[column] = role
                selection.append(F.col(column).cast("double").alias(role))
    flag = None  # a column of the JVM's labelled verdicts, when numpy cannot tell
    numbers = labelled is not None and all(
        isinstance(frame.schema[c].dataType, ST.IntegralType | ST.FloatType | ST.DoubleType)
        for c in labelled
    )
    some = wanted or any(only for _, only in stamps)
    if labelled is not None and some and not (wanted and numbers):
        flag = "_l"
        here = present(frame, labelled[0]) & present(frame, labelled[1])
        selection.append(F.coalesce(here, F.lit(False)).alias(flag))
    by_errors = wanted and numbers  # labelled: both error doubles are numbers
    kinds_of_stamps = []
    for s, (column, _) in enumerate(stamps):
        kind = frame.schema[column].dataType
        if not isinstance(kind, ST.TimestampType | ST.TimestampNTZType):
            kind = ST.TimestampType()
            selection.append(F.col(column).cast("timestamp").alias(f"_t{s}"))
        else:
            selection.append(F.col(column).alias(f"_t{s}"))
        kinds_of_stamps.append(kind)
    plan_checks = []
    for r, (column, feature) in enumerate(checks.items()):
        name = doubles.get(column) if column in numeric else raws.get(column)
        check = _check(frame, column, feature, name)
        if check is None:
            check = P.Check(f"_q{r}", coded=True)
            selection.append(_coded(frame, column, feature).alias(check.column))
        plan_checks.append(check)
    plan = P.Plan(
        binned=tuple((doubles[c], e) for c, e in zip(numeric, ordered, strict=True)),
        counted=tuple(raws[c] for c in counted),
        labelled=flag,
        errors=(doubles[labelled[0]], doubles[labelled[1]]) if wanted and labelled else None,
        stamps=tuple(
            (f"_t{s}", only and (flag is not None or by_errors))
            for s, (_, only) in enumerate(stamps)
        ),
        checks=tuple(plan_checks),
    )
    selected = frame.select(*selection) if selection else frame.select(F.lit(0).alias("_n"))
    record = _record_schema(plan, [selected.schema[raws[c]].dataType for c in counted])
    rows = 0
    totals = [
        (np.zeros(e.size + 1, np.int64), np.zeros(e.size + 1, np.int64), np.zeros(e.size + 1))
        for e in ordered
    ]
    moments = [P.empty_moments() for _ in numeric]
    found: dict[str, dict[T.Any, int]] = {c: {} for c in counted}
    floats = [is_numeric(frame, c) for c in counted]
    error = np.zeros(P.ERRORS)
    times: list[int | None] = [None] * (2 * len(stamps))
    quality = np.zeros(2 * len(plan_checks), dtype=np.int64)
    summarise = functools.partial(P.scan, plan=plan)
    for row in selected.mapInArrow(summarise, record).collect():
        rows += int(row["rows"])
        for i in range(len(numeric)):
            n, at, sx = totals[i]
            n += np.asarray(row[f"n{i}"], dtype=np.int64)
            at += np.asarray(row[f"a{i}"], dtype=np.int64)
            sx += np.asarray(row[f"s{i}"], dtype=float)
            moments[i] = P.merge_moments(moments[i], np.asarray(row[f"m{i}"], dtype=float))
        for j, column in enumerate(counted):
            into = found[column]
            for value, count in zip(row[f"k{j}"], row[f"c{j}"], strict=True):
                if value is None or (isinstance(value, float) and not np.isfinite(value)):
                    continue
                if floats[j]:
                    value = float(value)
                into[value] = into.get(value, 0) + int(count)
        if plan.errors is not None:
            error = P.merge_errors(error, np.asarray(row["e"], dtype=float))
        times = P.merge_stamps(times, list(row["t"]))
        quality += np.asarray(row["q"], dtype=np.int64)
    return Scan(
        rows=rows,
        bins={
            c: Bins(ordered[i], totals[i][0], totals[i][1], totals[i][2])
            for i, c in enumerate(numeric)
        },
        moments={c: _moments(moments[i]) for i, c in enumerate(numeric)},
        counts=found,
        errors=_errors(error) if wanted else None,
        stamps=[
            None if t is None else kinds_of_stamps[k // 2].fromInternal(t)
            for k, t in enumerate(times)
        ],
        quality={c: (int(quality[2 * r]), int(quality[2 * r + 1])) for r, c in enumerate(checks)},
    )


def _record_schema(plan: P.Plan, kinds: list[ST.DataType]) -> ST.StructType:
    """The Spark schema of ``partials.scan``'s record (``partials.record_fields``' order)."""
    longs, doubles = ST.ArrayType(ST.LongType()), ST.ArrayType(ST.DoubleType())
    types: list[ST.DataType] = [ST.LongType()]
    for _ in plan.binned:
        types += [longs, longs, doubles, doubles]
    for kind in kinds:
        types += [ST.ArrayType(kind), longs]
    types += [doubles, longs, longs]
    names = P.record_fields(plan)
    return ST.StructType([ST.StructField(n, t) for n, t in zip(names, types, strict=True)])


def _moments(vector: np.ndarray) -> Moments:
    """``Moments`` from ``partials.MOMENTS`` (NaN figures when no finite value)."""
    n = int(vector[0])
    std = float(np.sqrt(vector[2] / n)) if n else float("nan")
    return Moments(
        n,
        float(vector[1]) if n else float("nan"),
        std,
        float(vector[3]),
        float(vector[4]),
        int(vector[5]),
        int(vector[6]),
    )


def _errors(vector: np.ndarray) -> Errors:
    """``Errors`` from ``partials.ERRORS``: the total sum of squares is the target's M2."""
    return Errors(
        int(vector[0]), float(vector[1]), float(vector[2]), float(vector[3]), float(vector[5])
    )


def _doubles(frame: DataFrame, columns: list[str]) -> DataFrame:
    """Only these columns, as doubles (positional names: any column name is safe)."""
    return frame.select(*(F.col(c).cast("double").alias(f"_x{i}") for i, c in enumerate(columns)))


def _invalid(frame: DataFrame, column: str, feature: Feature) -> Column:
    """True where the column's value breaks the contract's values or bounds (never null)."""
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
    return F.coalesce(invalid, F.lit(False))


def _check(frame: DataFrame, column: str, feature: Feature, name: str | None) -> P.Check | None:
    """The quality check of ``column`` judged in the Python pass on its transferred column
    ``name``; None when numpy cannot judge it as Spark does (``_coded`` then)."""
    kind = frame.schema[column].dataType
    plain = (int, float)
    if name is None or not isinstance(kind, ST.IntegralType | ST.FloatType | ST.DoubleType):
        return None
    if feature.values is not None and not all(
        isinstance(v, plain) and not isinstance(v, bool) for v in feature.values
    ):
        return None
    values = None if feature.values is None else tuple(float(v) for v in feature.values)
    return P.Check(name, False, values, feature.min, feature.max)


def _coded(frame: DataFrame, column: str, feature: Feature) -> Column:
    """The JVM's verdict on each row, for ``P.Check(coded=True)``: 0 fine, 1 missing, 2 out."""
    here = present(frame, column)
    invalid = _invalid(frame, column, feature)
    return F.when(~here, 1).when(invalid, 2).otherwise(0).cast("byte")


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


def error_aggregates(target: str, prediction: str, where: Column | None = None) -> list[Column]:
    """The sums of ``Errors`` over the rows ``where`` holds (all when None); mape on ``y + 1``
    as ``metrics.regression_metrics`` has it (``errors_of``)."""
    y, p = F.col(target).cast("double"), F.col(prediction).cast("double")
    if where is not None:
        y, p = F.when(where, y), F.when(where, p)
    eps = float(np.finfo(np.float64).eps)
    rows = F.count(F.lit(1)) if where is None else F.count(F.when(where, 1))
    return [
        rows.alias("e_rows"),
        F.sum((y - p) * (y - p)).alias("e_squared"),
        F.sum(F.abs(y - p)).alias("e_absolute"),
        F.sum(F.abs(y - p) / F.greatest(F.abs(y + 1), F.lit(eps))).alias("e_relative"),
        (F.var_pop(y) * rows).alias("e_total_squares"),
    ]


def errors_of(row: T.Any) -> Errors:
    return Errors(
        int(row["e_rows"]),
        float(row["e_squared"] or 0.0),
        float(row["e_absolute"] or 0.0),
        float(row["e_relative"] or 0.0),
        float(row["e_total_squares"] or 0.0),
    )
