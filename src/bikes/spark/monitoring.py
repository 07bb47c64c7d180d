"""``core.monitoring.Monitor`` on Spark DataFrames: the same result dict from aggregations.

``SparkMonitor`` has the attributes the monitoring job and the report read from a ``Monitor``
(``contract``, ``detectors``, ``window_shares``, ``origin``, ``reference_rows``,
``reference_period``, ``reference_performance``, ``reference_source``, ``metric``, ``target``)
and its ``window()`` returns the same dict, so status, long rows, JSON, MLflow, the report,
alerts and ``fail_on`` are the pandas engine's code. What is exact and what is bounded:
``core.summaries``; a classifier's ROC AUC is an estimate within a stated interval and its
log loss exact (``spark.scores``). Not computed on Spark: the diagnostics grids (None, said
in the log).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import typing as T

import numpy as np
import pandas as pd
from loguru import logger
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from bikes.core.comparison import Slicing
from bikes.core.contract import Contract, Feature
from bikes.core.drift import Detector, DriftResult, Kind
from bikes.core.monitoring import (
    NO_SEGMENTS,
    ColumnDrift,
    DriftSettings,
    PerformanceSettings,
    ReferenceOrigin,
    WindowFigures,
    WindowJudge,
    _relative_change,
    class_score_columns,
    reference_performance,
    shares_of,
    window_result,
    with_issue,
)
from bikes.core.quality import Counts, column_quality, plain_value, sorted_values
from bikes.core.summaries import (
    FINE_BINS,
    Bins,
    SummaryDetector,
    coarse_from_bins,
    fine_probabilities,
    with_ends,
)
from bikes.spark import statistics as S


class SparkMonitor(WindowJudge):
    """Prepared from a Spark reference once; ``window()`` judges one Spark window."""

    def __init__(
        self,
        reference: DataFrame,
        contract: Contract,
        columns: list[str],
        drift: DriftSettings | None = None,
        slicing: Slicing = NO_SEGMENTS,
        performance: PerformanceSettings | None = None,
        origin: ReferenceOrigin | None = None,
        *,
        fine_bins: int = FINE_BINS,
    ) -> None:
        names = set(reference.columns)
        self._said: set[str] = set()  # what the log said once already
        self.contract = contract
        self.columns = columns
        self.expected = frozenset(contract.expected_drift) & set(columns)
        self.drift = drift or DriftSettings()
        self.slicing = slicing
        self.performance = performance or PerformanceSettings()
        self.metric = self.performance.watched(contract)
        self.fine_bins = fine_bins
        self.target = contract.target if contract.target in names else None
        self.prediction = contract.prediction if contract.prediction in names else None
        self.scores = [c for c in contract.score_columns if c in names]
        self.features = {
            c: contract.feature(c)
            or Feature(name=c, kind="numeric" if S.is_numeric(reference, c) else "categorical")
            for c in columns
        }
        outputs = [c for c in (self.target, self.prediction) if c is not None]
        numeric = [c for c, f in self.features.items() if f.kind == "numeric"]
        if not contract.is_classification:
            numeric += outputs
        numeric += self.scores
        others = list(dict.fromkeys(c for c in [*columns, *outputs] if c not in numeric))
        timestamp = contract.timestamp if contract.timestamp in names else None
        labelled = self._labelled_rows_of(reference)
        # A sample in the JVM places the fine edges (no bound depends on them); its fraction
        # needs the rows, which parquet's footers hold (no scan).
        quantiles = S.sample_quantiles(
            reference, numeric, fine_probabilities(fine_bins), reference.count()
        )
        # ONE pass in Python workers: exact bins on the sample's inner edges, moments with the
        # extremes that close them (``with_ends``), category counts, time span, error sums.
        inner = {c: _finite_sorted(quantiles[c][1:-1]) for c in numeric}
        found = S.scan(
            reference,
            inner,
            others,
            labelled=self._labelled_pair(names),
            errors=not self.contract.is_classification,
            stamps=[(timestamp, False), (timestamp, True)] if timestamp is not None else [],
        )
        self.reference_rows = found.rows
        moments, counted = found.moments, found.counts
        periods = [None if v is None else pd.Timestamp(v).isoformat() for v in found.stamps]
        self.reference_period: tuple[str | None, str | None] = (
            (periods[0], periods[1]) if periods else (None, None)
        )
        self._labelled_period = (periods[2], periods[3]) if periods else (None, None)
        self.fine: dict[str, np.ndarray] = {}
        reference_bins: dict[str, Bins] = {}
        for column in numeric:
            m = moments[column]
            if m.rows:
                closed = with_ends(
                    found.bins[column], m.minimum, m.at_minimum, m.maximum, m.at_maximum
                )
            else:
                none = np.zeros(3, dtype=np.int64)
                closed = Bins(np.array([0.0, 1.0]), none, none, np.zeros(3))
            reference_bins[column], self.fine[column] = closed, closed.edges
        self.kinds: dict[str, Kind] = {}
        for column in columns:
            feature = self.features[column]
            if feature.kind == "numeric":
                self.kinds[column] = "numeric"
            else:
                two = feature.binary if feature.values is not None else len(counted[column]) == 2
                self.kinds[column] = "binary" if two else "categorical"
        self.classes: list[T.Any] = []
        if contract.is_classification:
            self.classes = sorted_values(
                {plain_value(v) for c in outputs for v in counted.get(c, {})}
            )
        for column in outputs:
            self.kinds[column] = (
                "numeric"
                if not contract.is_classification
                else ("binary" if len(counted[column]) == 2 else "categorical")
            )
        for column in self.scores:
            self.kinds[column] = "numeric"
        coarse = {
            c: coarse_from_bins(reference_bins[c]) if moments[c].rows else np.array([0.0, 1.0])
            for c in numeric
        }
        self.summaries: dict[str, SummaryDetector] = {}
        for column, kind in self.kinds.items():
            override = self.drift.columns.get(column, ColumnDrift())
            common: dict[str, T.Any] = {
                "method": override.method,
                "threshold": override.threshold,
                "small_sample": self.drift.small_sample,
            }
            if kind == "numeric":
                self.summaries[column] = SummaryDetector(
                    column,
                    kind,
                    size=moments[column].rows,
                    bins=reference_bins[column],
                    std=moments[column].std if moments[column].rows else 0.0,
                    coarse=coarse[column],
                    **common,
                )
            else:
                categories, numbers = _sorted_counts(counted[column])
                self.summaries[column] = SummaryDetector(
                    column,
                    kind,
                    size=int(numbers.sum()),
                    categories=categories,
                    counts=numbers,
                    **common,
                )
        # What the job and the report read: Monitor's own attribute.
        self.detectors: dict[str, Detector] = dict(self.summaries)
        self.known = {
            c: d.categories.tolist() for c, d in self.detectors.items() if d.kind != "numeric"
        }
        # Per window and column, the interval each numeric score lies in (core.summaries).
        self.bounds: list[dict[str, tuple[float, float]]] = []
        self.origin = origin or ReferenceOrigin()
        self._labelled_rows: int | None = None
        self.in_sample_performance: dict[str, float] | None = None
        if labelled is not None:
            self._labelled_rows, self.in_sample_performance = self._figures_of(
                reference, labelled, found.errors
            )
        self.reference_performance, self.reference_source = reference_performance(
            self.origin,
            self.metric,
            self.in_sample_performance,
            self._labelled_rows,
            self._labelled_period,
        )
        self.reference_source["segments"] = (
            "in_sample" if self.origin.in_sample else "reference_table"
        )
        self.reference_segments = self._segment_figures(reference)
        self.window_shares: list[dict[str, np.ndarray]] = []
        self.span = None

    def segments_from_held_out(self, spark: SparkSession) -> None:
        """Per-segment reference figures from the version's held-out rows, as the pandas
        engine takes them (``Monitor._segment_reference``): when the reference performance is
        the held-out record and its rows (with their predictions) were kept, a segment's
        current figure is compared with the same segment on rows the model did not train on,
        not with its training rows (in-sample: optimistic, every segment would look degraded).
        The rows are dropped from ``origin`` either way: only their figures are kept."""
        rows = self.origin.held_out_rows
        self.origin = dataclasses.replace(self.origin, held_out_rows=None)
        if rows is None or self.reference_source.get("kind") != "held_out":
            return
        frame = spark.createDataFrame(rows)
        if self._labelled(frame) is None:
            return
        self.reference_segments = self._segment_figures(frame)
        self.reference_source["segments"] = "held_out"

    # -- one window -----------------------------------------------------------------------------
    def window(
        self,
        current: T.Any,
        start: dt.datetime | None,
        end: dt.datetime | None,
        now: dt.datetime,
        rejected: pd.DataFrame | None = None,
    ) -> dict[str, T.Any]:
        """``Monitor.window`` on a Spark window (no rejected rows: a lake holds answers).
        ``current``: a pyspark DataFrame (typed Any: callers need not import PySpark)."""
        names = set(current.columns)
        present = [c for c in self.columns if c in names]
        labelled = self._labelled_rows_of(current)
        # ONE pass in Python workers: quality counts, error sums, times, bins and counts.
        received = "received_time" if "received_time" in names else "event_time"
        times = list(dict.fromkeys(["event_time", received])) if "event_time" in names else []
        outputs = self._outputs(names)
        numeric = [c for c in [*present, *outputs] if self.kinds[c] == "numeric"]
        categorical = [c for c in [*present, *outputs] if self.kinds[c] != "numeric"]
        found = S.scan(
            current,
            {c: self.fine[c] for c in numeric},
            list(dict.fromkeys([*categorical, *(c for c in present if c in self.known)])),
            labelled=self._labelled_pair(names),
            errors=not self.contract.is_classification,
            stamps=[(c, False) for c in times],
            checks={c: self.features[c] for c in present},
        )
        rows = found.rows
        pairs = zip(found.stamps[::2], found.stamps[1::2], strict=True)
        spans = dict(zip(times, pairs, strict=True))  # (first, last) of each time column
        quality_counts = found.quality
        missing = [c for c in self.columns if rows and c not in names]
        if not rows:  # nothing to score (as the pandas engine: no drift on no rows)
            numeric, categorical = [], []
        current_bins, counted = found.bins, found.counts
        results: dict[str, DriftResult] = {}
        bounds: dict[str, tuple[float, float]] = {}
        for column in numeric:
            detector = self.summaries[column]
            results[column] = detector.score_bins(current_bins[column])
            bounds[column] = low, high = detector.bounds
            if low < detector.threshold <= high:  # the exact score could decide otherwise
                logger.warning(
                    "{}: {} {:.4g} (exact within [{:.4g}, {:.4g}]) is this close to its "
                    "threshold {:g}: the pandas engine, exact, may decide otherwise",
                    column,
                    detector.method,
                    results[column].score,
                    low,
                    high,
                    detector.threshold,
                )
        for column in categorical:
            categories, numbers = _sorted_counts(counted[column])
            results[column] = self.summaries[column].score_counts(categories, numbers)
        self.bounds.append(bounds)
        quality = {}
        for column in self.columns:
            absent = column in missing
            missing_rows, outside = quality_counts.get(column, (rows, 0))
            if column not in names:
                missing_rows = rows
            part = Counts(
                rows=rows,
                missing=missing_rows,
                out_of_range=outside,
                values=frozenset(plain_value(v) for v in counted.get(column, {}))
                if self.features[column].kind == "categorical"
                else frozenset(),
            )
            quality[column] = with_issue(
                column_quality([part, Counts()], self.known.get(column), absent=absent),
                self.features[column],
            )
        drifts = {c: results[c] for c in present if c in results}
        prediction_drift = self._output_drift(results, self.prediction)
        target_drift = self._output_drift(results, self.target)
        score_drift: dict[str, DriftResult] = {}
        for column in self.scores:
            score_drift |= self._output_drift(results, column)
        self.window_shares.append(shares_of(drifts, prediction_drift, score_drift, target_drift))
        result = window_result(
            WindowFigures(
                start=start,
                end=end,
                rows=rows,
                rejected_rows=0,
                rejected_share=0.0 if rows else None,
                model_version=self._model_version(current),
                freshness=self._freshness(spans["event_time"][1], now) if spans else None,
                missing=missing,
                quality=quality,
                drifts=drifts,
                prediction_drift=prediction_drift,
                score_drift=score_drift,
                target_drift=target_drift,
                performance=self._performance(current, labelled, rows, found.errors),
                segments=self._segments(current),
                diagnostics=None,
                service=self._service(current, rows, spans.get(received)),
            ),
            self.detectors,
            self.expected,
            self.drift.share,
        )
        self._no_diagnostics()
        return result

    def _outputs(self, names: set[str]) -> list[str]:
        found = [c for c in (self.prediction, self.target, *self.scores) if c is not None]
        return [c for c in found if c in names and c in self.detectors]

    def _output_drift(
        self, results: dict[str, DriftResult], column: str | None
    ) -> dict[str, DriftResult]:
        """As ``Monitor._drift_of``: nothing when the column is absent or wholly missing."""
        if column is None or column not in results:
            return {}
        result = results[column]
        return {} if not np.isfinite(result.score) and not result.shares.sum() else {column: result}

    # -- performance --------------------------------------------------------------------------
    def _labelled_rows_of(self, frame: DataFrame) -> Column | None:
        """The condition a labelled row meets (target and prediction present); None when
        either column is missing from the frame."""
        if self.target is None or self.prediction is None:
            return None
        if self.target not in frame.columns or self.prediction not in frame.columns:
            return None
        return S.present(frame, self.target) & S.present(frame, self.prediction)

    def _labelled_pair(self, names: set[str]) -> tuple[str, str] | None:
        """(target, prediction) when the frame has both: a side's labelled rows are where
        both are present (``_labelled_rows_of``)."""
        if self.target is None or self.prediction is None:
            return None
        if self.target not in names or self.prediction not in names:
            return None
        return self.target, self.prediction

    def _labelled(self, frame: DataFrame) -> DataFrame | None:
        condition = self._labelled_rows_of(frame)
        return None if condition is None else frame.where(condition)

    def _figures_of(
        self, frame: DataFrame, labelled: Column, errors: S.Errors | None
    ) -> tuple[int, dict[str, float] | None]:
        """The rows and every metric of the task on the ``labelled`` rows, None below two: a
        regression's from the side's error sums (``S.scan``), a classifier's from one count
        per (label, predicted) pair."""
        assert self.target is not None
        assert self.prediction is not None
        if not self.contract.is_classification:
            assert errors is not None
            return errors.rows, (errors.metrics() if errors.rows >= 2 else None)
        pairs = frame.where(labelled).groupBy(self.target, self.prediction).count().collect()
        rows = sum(int(r["count"]) for r in pairs)
        if rows < 2:
            return rows, None
        figures = self._classification(pairs)
        seen = {plain_value(r[c]) for r in pairs for c in (self.target, self.prediction)}
        if seen <= set(self.classes):  # as the pandas engine: a new class drops the scores
            figures |= self._score_figures(frame.where(labelled))
        return rows, figures

    def _score_figures(self, labelled: DataFrame) -> dict[str, float]:
        """ROC AUC (its estimate: the exact value lies within one fine bin's ties, see
        ``spark.scores``) and log loss of the contract's score columns, in one pass; nothing
        when the rows lack them (as ``Monitor._probabilities``)."""
        from bikes.spark.scores import score_summary

        assert self.target is not None
        matched = class_score_columns(self.contract, self.classes)
        if matched is None:
            return {}
        columns, positive = matched
        if any(c not in labelled.columns for c in columns):
            return {}
        # The reference's fine edges of each score; a reference without scores (a training
        # table) gives none: then a uniform grid on [0, 1], the probabilities' range.
        grid = np.linspace(0.0, 1.0, self.fine_bins + 1)
        edges = {c: self.fine.get(c, grid) for c in columns}
        summary = score_summary(labelled, self.target, columns, self.classes, edges, positive)
        return summary.metrics()

    def _classification(self, pairs: list[T.Any]) -> dict[str, float]:
        """``metrics.classification_metrics`` without probabilities, on the confusion counts
        (each distinct (label, predicted) pair weighted by its rows)."""
        from sklearn import metrics

        assert self.target is not None
        assert self.prediction is not None
        truth = np.asarray([_label(r[self.target]) for r in pairs], dtype=object)
        predicted = np.asarray([_label(r[self.prediction]) for r in pairs], dtype=object)
        weights = np.asarray([int(r["count"]) for r in pairs], dtype=float)
        seen = {plain_value(v) for v in (*truth, *predicted)}
        labels = (
            self.classes if seen <= set(self.classes) else sorted_values(seen | set(self.classes))
        )
        binary = len(labels) <= 2
        positive = self.contract.positive_class
        positive = positive if positive is not None else (labels[-1] if labels else None)
        averaging: dict[str, T.Any] = (
            {"average": "binary", "pos_label": positive} if binary else {"average": "macro"}
        )
        truth, predicted = _same_type(truth), _same_type(predicted)
        figures = {
            "accuracy": float(metrics.accuracy_score(truth, predicted, sample_weight=weights))
        }
        for name in ("precision", "recall", "f1"):
            function = getattr(metrics, f"{name}_score")
            figures[name] = float(
                function(truth, predicted, sample_weight=weights, zero_division=0, **averaging)
            )
        return figures

    def _performance(
        self,
        current: DataFrame,
        labelled: Column | None,
        rows: int,
        errors: S.Errors | None,
    ) -> dict[str, T.Any] | None:
        if labelled is None or rows == 0:
            return None
        count, now = self._figures_of(current, labelled, errors)
        return self._performance_figures(count, count / rows, now)

    # -- segments -------------------------------------------------------------------------------
    def _segment_figures(self, frame: DataFrame) -> dict[tuple[str, str], tuple[int, float]]:
        """``{(column, value): (rows, watched metric)}`` for segments of ``min_rows`` or more:
        one aggregation per segment column and one for every hour band together."""
        labelled = self._labelled(frame)
        if labelled is None:
            return {}
        groups: list[tuple[str, DataFrame, str]] = [
            (column, labelled, column)
            for column in self.slicing.columns or []
            if column in labelled.columns
        ]
        hour = self.slicing.hour_column
        if hour is not None and self.slicing.hour_bands and hour in labelled.columns:
            hours = F.col(hour).cast("double")
            bands = F.array(
                *(
                    F.when((hours >= band.first) & (hours <= band.last), F.lit(name))
                    for name, band in self.slicing.hour_bands.items()
                )
            )
            stacked = labelled.withColumn("_band", F.explode(bands)).where(
                F.col("_band").isNotNull()
            )
            groups.append(("hour_band", stacked, "_band"))
        found = {}
        for segment, rows, key in groups:
            figures = self._grouped_figures(rows, key)
            if segment == "hour_band":
                order = [name for name in self.slicing.hour_bands if name in figures]
            else:
                order = sorted_values(figures)
            for value in order:
                count, metrics = figures[value]
                if count < self.slicing.min_rows or metrics is None or self.metric not in metrics:
                    continue
                found[(segment, str(value))] = (count, metrics[self.metric])
        return found

    def _grouped_figures(
        self, labelled: DataFrame, key: str
    ) -> dict[T.Any, tuple[int, dict[str, float] | None]]:
        """Per value of ``key`` (plain values), its rows and metrics: one aggregation."""
        assert self.target is not None
        assert self.prediction is not None
        found: dict[T.Any, tuple[int, dict[str, float] | None]] = {}
        if not self.contract.is_classification:
            aggregates = S.error_aggregates(self.target, self.prediction)
            for row in labelled.groupBy(F.col(key).alias("_key")).agg(*aggregates).collect():
                if row["_key"] is None:
                    continue
                errors = S.errors_of(row)
                figures = errors.metrics() if errors.rows >= 2 else None
                found[plain_value(row["_key"])] = (errors.rows, figures)
            return found
        pairs = (
            labelled.groupBy(F.col(key).alias("_key"), self.target, self.prediction)
            .count()
            .collect()
        )
        by_key: dict[T.Any, list[T.Any]] = {}
        for row in pairs:
            if row["_key"] is not None:
                by_key.setdefault(plain_value(row["_key"]), []).append(row)
        for value, rows in by_key.items():
            count = sum(int(r["count"]) for r in rows)
            found[value] = (count, self._classification(rows) if count >= 2 else None)
        return found

    def _segments(self, current: DataFrame) -> list[dict[str, T.Any]]:
        entries = []
        for (column, value), (rows, figure) in self._segment_figures(current).items():
            reference = self.reference_segments.get((column, value))
            before = None if reference is None else reference[1]
            entries.append(
                {
                    "segment": column,
                    "value": value,
                    "rows": rows,
                    "metric": self.metric,
                    "current": figure,
                    "reference": before,
                    "relative_change": _relative_change(figure, before),
                }
            )
        return entries

    def _no_diagnostics(self) -> None:
        if self.target is not None and "diagnostics" not in self._said:
            self._said.add("diagnostics")
            logger.info("Spark engine: no diagnostics grids (pandas engine only)")

    # -- window facts ---------------------------------------------------------------------------
    def _model_version(self, frame: DataFrame) -> str | None:
        if "model_version" not in frame.columns:
            return None
        values = frame.groupBy(F.col("model_version").cast("string")).count().collect()
        versions = sorted({r[0] for r in values if r[0] is not None})
        return ",".join(versions) or None

    def _freshness(self, latest: T.Any, now: dt.datetime) -> dict[str, T.Any]:
        if latest is None:
            return {"latest_event": None, "age_hours": None}
        stamp = pd.Timestamp(latest)
        return {
            "latest_event": stamp.isoformat(),
            "age_hours": (pd.Timestamp(now) - stamp).total_seconds() / 3600,
        }

    def _service(
        self, frame: DataFrame, rows: int, received: tuple[T.Any, T.Any] | None
    ) -> dict[str, T.Any] | None:
        """Rows per hour exactly (``received``: the first and last received time, from the
        window's pass); latency percentiles from ``percentile_approx`` (rank error 1/10,000;
        the pandas engine interpolates between rows), a job of their own."""
        if "latency_ms" not in frame.columns or received is None or rows == 0:
            return None
        latency = F.col("latency_ms").cast("double")
        found = frame.agg(F.percentile_approx(latency, [0.5, 0.95, 0.99], 10000)).first()
        assert found is not None
        span = pd.Timestamp(received[1]) - pd.Timestamp(received[0])
        hours = max(span.total_seconds(), 0)
        return {
            "rows_per_hour": rows / max(hours / 3600, 1.0),
            "latency_ms": {f"p{q}": float(v) for q, v in zip((50, 95, 99), found[0], strict=True)},
        }


def bounds_of(monitor: SparkMonitor) -> dict[str, tuple[float, float]]:
    """The last window's score intervals (for the tests and the log)."""
    return monitor.bounds[-1] if monitor.bounds else {}


def _sorted_counts(counts: dict[T.Any, int]) -> tuple[np.ndarray, np.ndarray]:
    """Categories and counts in ``np.unique``'s order, as ``Detector`` holds them."""
    if not counts:
        return np.array([]), np.array([], dtype=np.int64)
    keys = list(counts)
    if all(isinstance(k, float) for k in keys):
        categories: np.ndarray = np.asarray(keys, dtype=float)
    else:
        categories = np.empty(len(keys), dtype=object)
        categories[:] = keys
    order = np.argsort(categories, kind="stable")
    categories = categories[order]
    numbers = np.asarray([counts[k] for k in keys], dtype=np.int64)[order]
    return categories, numbers


def _label(value: T.Any) -> T.Any:
    return plain_value(value)


def _same_type(values: np.ndarray) -> np.ndarray:
    """Labels as one type for sklearn: numbers as numbers, else as they are."""
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return values.astype(float)
    return values


def _finite_sorted(values: list[float]) -> np.ndarray:
    """The distinct finite values, sorted (a sample's quantiles as inner fine edges)."""
    array = np.asarray(values, dtype=float)
    return np.unique(array[np.isfinite(array)])


def _finite(value: float | None) -> bool:
    return value is not None and bool(np.isfinite(value))
