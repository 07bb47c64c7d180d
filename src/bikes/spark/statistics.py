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
import functools
import typing as T

import numpy as np
from pyspark.sql import Column, DataFrame, Row
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


def one_row(frame: DataFrame, aggregates: list[Column]) -> Row:
    """Every aggregate in ONE Spark job (one scan): the callers below each give a list of
    aliased aggregates and read their own fields back with the matching ``*_of``."""
    row = frame.agg(F.count(F.lit(1)).alias("rows"), *aggregates).first()
    assert row is not None
    return row


def moments_aggregates(frame: DataFrame, columns: list[str]) -> list[Column]:
    """Exact counts, means, population standard deviations and ranges of the finite values."""
    aggregates = []
    for i, column in enumerate(columns):
        value = finite(frame, column)
        aggregates += [
            F.count(value).alias(f"m_n{i}"),
            F.avg(value).alias(f"m_mean{i}"),
            F.stddev_pop(value).alias(f"m_std{i}"),
            F.min(value).alias(f"m_min{i}"),
            F.max(value).alias(f"m_max{i}"),
        ]
    return aggregates


def moments_of(row: Row, columns: list[str]) -> dict[str, Moments]:
    return {
        column: Moments(
            int(row[f"m_n{i}"]),
            _number(row[f"m_mean{i}"]),
            _number(row[f"m_std{i}"]),
            _number(row[f"m_min{i}"]),
            _number(row[f"m_max{i}"]),
        )
        for i, column in enumerate(columns)
    }


def span_aggregates(timestamp: str, labelled: Column | None = None) -> list[Column]:
    """The first and last time of all rows and of the ``labelled`` ones (``span_of``)."""
    stamp = F.col(timestamp).cast("timestamp")
    kept = stamp if labelled is None else F.when(labelled, stamp)
    return [
        F.min(stamp).alias("t_first"),
        F.max(stamp).alias("t_last"),
        F.min(kept).alias("t_first_labelled"),
        F.max(kept).alias("t_last_labelled"),
    ]


def span_of(row: Row) -> list[T.Any]:
    return [row[f"t_{name}"] for name in ("first", "last", "first_labelled", "last_labelled")]


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


def summaries(
    frame: DataFrame, edges: dict[str, np.ndarray], counted: list[str]
) -> tuple[dict[str, Bins], dict[str, dict[T.Any, int]]]:
    """The numeric columns' exact counts on their fine edges (``summaries.Bins``) and the
    ``counted`` columns' rows per present value, in ONE pass over every column at once.

    Each partition runs ``partials.summarise`` in a Python worker (numpy binary searches and
    Arrow's ``value_counts`` per batch) and sends one record: per numeric column three arrays
    of ``len(edges) + 1`` numbers, per counted column its distinct values and their rows; the
    driver adds them up. The rows' crossing from the JVM to Python is what a pass costs, so
    bins and counts share it. A counted numeric column's values come back as floats, as the
    pandas engine scores them."""
    numeric = list(edges)
    ordered = [np.asarray(edges[c], dtype=float) for c in numeric]
    if not numeric and not counted:
        return {}, {}
    selected = frame.select(
        *(F.col(c).cast("double").alias(f"_x{i}") for i, c in enumerate(numeric)),
        *(F.col(c).alias(f"_k{j}") for j, c in enumerate(counted)),
    )
    kinds = [selected.schema[f"_k{j}"].dataType for j in range(len(counted))]
    fields = [
        ST.StructField(f"{name}{i}", ST.ArrayType(kind))
        for i in range(len(numeric))
        for name, kind in (("n", ST.LongType()), ("a", ST.LongType()), ("s", ST.DoubleType()))
    ]
    fields += [
        field
        for j, kind in enumerate(kinds)
        for field in (
            ST.StructField(f"k{j}", ST.ArrayType(kind)),
            ST.StructField(f"c{j}", ST.ArrayType(ST.LongType())),
        )
    ]
    schema = ST.StructType(fields)
    summarise = functools.partial(P.summarise, edges=ordered, counted=len(counted))
    totals = [
        (np.zeros(e.size + 1, np.int64), np.zeros(e.size + 1, np.int64), np.zeros(e.size + 1))
        for e in ordered
    ]
    found: dict[str, dict[T.Any, int]] = {c: {} for c in counted}
    floats = [is_numeric(frame, c) for c in counted]
    for row in selected.mapInArrow(summarise, schema).collect():
        for i in range(len(numeric)):
            n, at, sx = totals[i]
            n += np.asarray(row[f"n{i}"], dtype=np.int64)
            at += np.asarray(row[f"a{i}"], dtype=np.int64)
            sx += np.asarray(row[f"s{i}"], dtype=float)
        for j, column in enumerate(counted):
            into = found[column]
            for value, rows in zip(row[f"k{j}"], row[f"c{j}"], strict=True):
                if value is None or (isinstance(value, float) and not np.isfinite(value)):
                    continue
                if floats[j]:
                    value = float(value)
                into[value] = into.get(value, 0) + int(rows)
    bins = {
        c: Bins(ordered[i], totals[i][0], totals[i][1], totals[i][2]) for i, c in enumerate(numeric)
    }
    return bins, found


def bins(frame: DataFrame, edges: dict[str, np.ndarray]) -> dict[str, Bins]:
    """Each column's exact counts on its fine edges (``summaries``, without counts)."""
    return summaries(frame, edges, [])[0] if edges else {}


def _doubles(frame: DataFrame, columns: list[str]) -> DataFrame:
    """Only these columns, as doubles (positional names: any column name is safe)."""
    return frame.select(*(F.col(c).cast("double").alias(f"_x{i}") for i, c in enumerate(columns)))


def category_counts(frame: DataFrame, columns: list[str]) -> dict[str, dict[T.Any, int]]:
    """``{column: {value: rows}}`` of the present values of each column (``summaries``,
    without bins)."""
    return summaries(frame, {}, columns)[1] if columns else {}


def quality_aggregates(
    frame: DataFrame, features: dict[str, Feature], columns: list[str]
) -> list[Column]:
    """Per present column its missing rows and its rows out of the contract's bounds and
    values (``quality.counts``; ``quality_of``)."""
    aggregates = []
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
            F.sum(F.when(here, 0).otherwise(1)).alias(f"q_m{i}"),
            F.sum(F.when(here & F.coalesce(invalid, F.lit(False)), 1).otherwise(0)).alias(
                f"q_o{i}"
            ),
        ]
    return aggregates


def quality_of(row: Row, columns: list[str]) -> dict[str, tuple[int, int]]:
    """``{column: (missing, out of range)}``."""
    return {c: (int(row[f"q_m{i}"] or 0), int(row[f"q_o{i}"] or 0)) for i, c in enumerate(columns)}


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


def _number(value: T.Any) -> float:
    return float("nan") if value is None else float(value)
