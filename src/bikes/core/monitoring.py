"""One production window against the reference: quality, drift, performance, segments, service.

A ``Monitor`` is prepared once from the reference and the data contract (drift detectors,
reference metrics per segment) and then judges any number of windows: a backfill never
re-sorts the reference. Any contract works: regression or classification, numeric or text
features. Results are plain dicts with stable keys (the JSON other tools read) and, flattened,
the long-format rows of the ``monitoring_metrics`` table.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import typing as T
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import pydantic as pdt

from bikes.core import diagnostics
from bikes.core.comparison import Slicing
from bikes.core.contract import Contract, Feature, kind_of_values
from bikes.core.drift import SMALL_SAMPLE, Detector, DriftResult, Kind
from bikes.core.errors import ConfigError
from bikes.core.metrics import classification_metrics, regression_metrics
from bikes.core.quality import column_quality, counts, freshness, plain_value, sorted_values
from bikes.core.reference import HELD_OUT_TAG, HeldOutPerformance

# Worst last: a window with no rows at all says nothing about the model, which is an alert of
# its own, above ``detected``: every ``fail_on`` but ``never`` stops on it.
STATUSES = ("no_detection", "potential", "detected", "no_data")

REGRESSION_METRICS = ("rmse", "mae", "r2", "mape")
CLASSIFICATION_METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc", "log_loss")
HIGHER_IS_BETTER = frozenset({"r2", "accuracy", "precision", "recall", "f1", "roc_auc"})
DEFAULT_METRIC = {"regression": "rmse", "classification": "f1"}
NO_SEGMENTS = Slicing(columns=[])


class ColumnDrift(pdt.BaseModel, strict=True, frozen=True, extra="forbid"):
    """Override the method or threshold of one column."""

    method: (
        T.Literal[
            "ks",
            "chisquare",
            "z",
            "wasserstein",
            "jensenshannon",
            "psi",
            "hellinger",
            "total_variation",
        ]
        | None
    ) = pdt.Field(
        default=None,
        description="Drift method; default by kind and reference size (ks, chisquare or z at "
        "most small_sample reference rows; wasserstein or jensenshannon above).",
    )
    threshold: float | None = pdt.Field(
        default=None,
        description="p-value below which a test flags drift, or distance at or above which a "
        "distance does. Default: 0.05 for tests, 0.1 for distances.",
    )


class DriftSettings(pdt.BaseModel, strict=True, frozen=True, extra="forbid"):
    """How drift is decided, per column and for the dataset."""

    share: float = pdt.Field(
        default=0.5,
        gt=0,
        le=1,
        description="Dataset drift when this share of columns drifts: drifted columns over "
        "scored columns, both leaving out the contract's expected_drift columns (scored and "
        "shown, never counted) and missing columns (not scored).",
    )
    small_sample: int = pdt.Field(
        default=SMALL_SAMPLE,
        ge=1,
        description="References up to this many rows use statistical tests, larger ones "
        "distances (any test flags negligible differences on large samples).",
    )
    columns: dict[str, ColumnDrift] = pdt.Field(
        default_factory=dict, description="Per-column method or threshold overrides."
    )


class PerformanceSettings(pdt.BaseModel, strict=True, frozen=True, extra="forbid"):
    """The watched metric, and how much worse than the reference's it may get."""

    metric: str | None = pdt.Field(
        default=None,
        description="The watched metric. Regression: rmse (default), mae, r2 or mape; "
        "classification: f1 (default), accuracy, precision, recall, roc_auc or log_loss (these "
        "two need the contract's score columns). Precision, recall and F1 are of the positive "
        "class when binary, macro-averaged otherwise.",
    )
    threshold: float = pdt.Field(
        default=0.2,
        gt=0,
        description="Degraded when the watched metric is this share worse than the "
        "reference's: 0.2 is an RMSE 20% higher, or an F1 20% lower.",
    )

    def watched(self, contract: Contract) -> str:
        """The metric for this contract's task; an unknown one is a config error."""
        metric = self.metric or DEFAULT_METRIC[contract.task]
        allowed = CLASSIFICATION_METRICS if contract.is_classification else REGRESSION_METRICS
        if metric not in allowed:
            raise ConfigError(
                f"job.performance.metric: {metric!r} is not a {contract.task} metric "
                f"(one of {', '.join(allowed)})"
            )
        if metric in ("roc_auc", "log_loss") and not contract.score_columns:
            raise ConfigError(
                f"job.performance.metric: {metric} needs the classifier's probabilities: "
                "name their columns in job.contract.score"
            )
        return metric


def feature_kind(feature: Feature, reference: pd.Series) -> Kind:
    """The drift detector a feature gets: two valid values (said by the contract, or else
    seen in the reference) make a binary one, a proportions test."""
    if feature.kind == "numeric":
        return "numeric"
    two = feature.binary if feature.values is not None else reference.nunique() == 2
    return "binary" if two else "categorical"


@dataclasses.dataclass(frozen=True, eq=False)
class ReferenceOrigin:
    """Where the reference rows came from, and the rows the reference *performance* comes from.

    The reference table serves drift (the distributions the model was trained on); its
    performance, when it is the model's own training rows (``in_sample``), is optimistic: the
    model has seen every label. ``held_out`` (the version's ``held_out_performance`` record,
    from training's validation part or the gate's test split) replaces it, and
    ``held_out_rows`` (those rows with their predictions, when kept) gives the per-segment
    reference figures.
    """

    name: str = "the reference table"
    """The reference table, for people: "the reference data of models:/bikes/3"."""
    in_sample: bool = False
    """True when the table is the model's training rows predicted by the model itself."""
    held_out: HeldOutPerformance | None = None
    held_out_rows: pd.DataFrame | None = None


def class_score_columns(contract: Contract, classes: list[T.Any]) -> tuple[list[str], T.Any] | None:
    """The contract's score columns matched to ``classes``: one column and its positive class
    (a binary model's single probability), or one column per class in ``classes`` order and
    None; None when they do not match (a single score for more than two classes, a class
    without its column, a positive class that is not one of them)."""
    score = contract.score
    if score is None:
        return None
    if isinstance(score, str):
        if len(classes) != 2:
            return None
        positive = classes[-1] if contract.positive_class is None else contract.positive_class
        positive = plain_value(positive)
        return ([score], positive) if positive in classes else None
    mapping = (
        {str(k): v for k, v in score.items()}
        if isinstance(score, dict)
        else dict(zip([str(c) for c in classes], score, strict=False))
    )
    if any(str(c) not in mapping for c in classes):
        return None
    return [mapping[str(c)] for c in classes], None


class WindowJudge:
    """What the job and the report read of any engine's monitor, beside ``window()``: the
    last window's binned shares and the watched metric's direction (``Monitor`` here,
    ``bikes.spark.monitoring.SparkMonitor`` on Spark)."""

    metric: str
    window_shares: list[dict[str, np.ndarray]]
    contract: Contract
    performance: PerformanceSettings
    reference_performance: dict[str, float] | None
    reference_source: dict[str, T.Any]
    in_sample_performance: dict[str, float] | None

    @property
    def latest_shares(self) -> dict[str, np.ndarray]:
        """The binned current shares of the last window judged (none before the first)."""
        return self.window_shares[-1] if self.window_shares else {}

    @property
    def higher_is_better(self) -> bool:
        return self.metric in HIGHER_IS_BETTER

    def _performance_figures(
        self, rows_labelled: int, label_coverage: float, now: dict[str, float] | None
    ) -> dict[str, T.Any]:
        """A window's ``performance`` entry from its labelled rows' figures (``now``; None
        below two rows): against the reference, its relative change and whether it degraded
        beyond the threshold, in the watched metric's direction."""
        figures: dict[str, T.Any] = {
            "task": self.contract.task,
            "metric": self.metric,
            "higher_is_better": self.higher_is_better,
            "label_coverage": label_coverage,
            "rows_labelled": rows_labelled,
            "current": None,
            "reference": self.reference_performance,
            "reference_source": dict(self.reference_source),
            "reference_in_sample": self.in_sample_performance,
            "relative_change": None,
            "degradation": None,
            "threshold": self.performance.threshold,
            "degraded": False,
        }
        if now is None:
            return figures
        reference = (self.reference_performance or {}).get(self.metric)
        change = _relative_change(now.get(self.metric), reference)
        degradation = None if change is None else (-change if self.higher_is_better else change)
        return figures | {
            "current": now,
            "relative_change": change,
            "degradation": degradation,
            "degraded": bool(degradation is not None and degradation >= self.performance.threshold),
        }


class Monitor(WindowJudge):
    """Prepared from the reference once; ``window()`` judges one current window.

    The reference frame is not kept: detectors hold what drift and quality need (sorted
    values, category counts), so the raw reference can be freed once the monitor exists.
    ``columns``: the watched features (the contract's by default); each must be in the
    reference, which the job checks.
    """

    def __init__(
        self,
        reference: pd.DataFrame,
        contract: Contract,
        columns: list[str],
        drift: DriftSettings | None = None,
        slicing: Slicing = NO_SEGMENTS,
        performance: PerformanceSettings | None = None,
        origin: ReferenceOrigin | None = None,
    ) -> None:
        self.contract = contract
        self.columns = columns
        # Watched columns whose drift the contract expects: scored, shown, never counted.
        self.expected = frozenset(contract.expected_drift) & set(columns)
        self.drift = drift or DriftSettings()
        self.slicing = slicing
        self.performance = performance or PerformanceSettings()
        self.metric = self.performance.watched(contract)
        self.target = contract.target if contract.target in reference.columns else None
        self.prediction = contract.prediction if contract.prediction in reference else None
        self.scores = [c for c in contract.score_columns if c in reference.columns]
        self.features = {
            c: contract.feature(c) or Feature(name=c, kind=kind_of_values(reference[c]))
            for c in columns
        }
        self.kinds: dict[str, Kind] = {
            c: feature_kind(f, reference[c]) for c, f in self.features.items()
        }
        self.classes: list[T.Any] = []
        if contract.is_classification:
            outputs = [reference[c] for c in (self.target, self.prediction) if c is not None]
            self.classes = sorted_values(
                {plain_value(v) for s in outputs for v in pd.unique(s.dropna())}
            )
        for column in (self.target, self.prediction):
            if column is not None:
                self.kinds[column] = self._output_kind(column, reference)
        for column in self.scores:
            self.kinds[column] = "numeric"
        self.detectors = _per_column(
            lambda column: Detector(
                column,
                _values(reference[column], self.kinds[column]),
                self.kinds[column],
                method=self.drift.columns.get(column, ColumnDrift()).method,
                threshold=self.drift.columns.get(column, ColumnDrift()).threshold,
                small_sample=self.drift.small_sample,
            ),
            list(self.kinds),
        )
        self.known = {
            c: detector.categories.tolist()
            for c, detector in self.detectors.items()
            if detector.kind != "numeric"
        }
        self.origin = origin or ReferenceOrigin()
        self.in_sample_performance = self._figures(reference)
        self.reference_performance, self.reference_source = self._reference_performance(reference)
        segment_rows, segments_from = self._segment_reference(reference)
        self.reference_source["segments"] = segments_from
        self.reference_segments = self._segment_figures(segment_rows)
        self.origin = dataclasses.replace(self.origin, held_out_rows=None)  # figures kept only
        # Every window's binned current shares, oldest first, for the report's window switcher:
        # a few hundred floats per window whatever its rows.
        self.window_shares: list[dict[str, np.ndarray]] = []
        # What the report says the windows were compared with: the reference's rows and period.
        self.reference_rows = len(reference)
        stamps = (
            pd.to_datetime(reference[contract.timestamp], errors="coerce")
            if contract.timestamp in reference.columns
            else pd.Series(dtype="datetime64[ns]")
        )
        self.reference_period: tuple[str | None, str | None] = (
            (None, None)
            if stamps.isna().all()
            else (stamps.min().isoformat(), stamps.max().isoformat())
        )
        # Predicted-against-actual grids span the reference's range, so windows share edges.
        labelled = None if contract.is_classification else self._labelled(reference)
        self.span = (
            None
            if labelled is None or labelled.empty
            else (
                float(np.nanmin(labelled[[self.target, self.prediction]].to_numpy(dtype=float))),
                float(np.nanmax(labelled[[self.target, self.prediction]].to_numpy(dtype=float))),
            )
        )

    def _output_kind(self, column: str, reference: pd.DataFrame) -> Kind:
        if not self.contract.is_classification:
            return "numeric"
        return "binary" if reference[column].nunique() == 2 else "categorical"

    # -- one window -----------------------------------------------------------------------------
    def window(
        self,
        current: pd.DataFrame,
        start: dt.datetime | None,
        end: dt.datetime | None,
        now: dt.datetime,
        rejected: pd.DataFrame | None = None,
    ) -> dict[str, T.Any]:
        """``current``: the rows the model answered; ``rejected``: the rows the service
        refused, values as received (quality only: the model never saw them)."""
        rejected = rejected if rejected is not None else pd.DataFrame()
        rows = len(current)
        missing = [c for c in self.columns if rows and c not in current.columns]
        present = [c for c in self.columns if c in current.columns]
        quality = {c: self._quality(c, current, rejected, c in missing) for c in self.columns}
        drifts = _per_column(
            lambda column: self.detectors[column].score(
                _values(current[column], self.kinds[column])
            ),
            present if rows else [],
        )
        prediction_drift = self._drift_of(current, self.prediction)
        target_drift = self._drift_of(current, self.target)
        score_drift: dict[str, DriftResult] = {}
        for column in self.scores:
            score_drift |= self._drift_of(current, column)
        self.window_shares.append(shares_of(drifts, prediction_drift, score_drift, target_drift))
        total = rows + len(rejected)
        result = window_result(
            WindowFigures(
                start=start,
                end=end,
                rows=rows,
                rejected_rows=len(rejected),
                rejected_share=len(rejected) / total if total else None,
                model_version=_model_version(current),
                freshness=freshness(current["event_time"], now)
                if "event_time" in current
                else None,
                missing=missing,
                quality=quality,
                drifts=drifts,
                prediction_drift=prediction_drift,
                score_drift=score_drift,
                target_drift=target_drift,
                performance=self._performance(current),
                segments=self._segments(current),
                diagnostics=self._diagnostics(current),
                service=_service(current),
            ),
            self.detectors,
            self.expected,
            self.drift.share,
        )
        return result

    def _quality(
        self, column: str, current: pd.DataFrame, rejected: pd.DataFrame, absent: bool
    ) -> dict[str, T.Any]:
        feature = self.features[column]
        parts = [
            counts(current.get(column), len(current), feature),
            counts(rejected.get(column), len(rejected), feature),
        ]
        return with_issue(column_quality(parts, self.known.get(column), absent=absent), feature)

    def _drift_of(self, current: pd.DataFrame, column: str | None) -> dict[str, DriftResult]:
        """``{column: result}`` for an output column, or ``{}`` when it is absent or empty."""
        if column is None or column not in current.columns or column not in self.detectors:
            return {}
        if not current[column].notna().any():
            return {}
        return {column: self.detectors[column].score(_values(current[column], self.kinds[column]))}

    # -- performance --------------------------------------------------------------------------
    def _labelled(self, frame: pd.DataFrame) -> pd.DataFrame | None:
        if self.target is None or self.prediction is None:
            return None
        if self.target not in frame.columns or self.prediction not in frame.columns:
            return None
        return frame.loc[frame[self.target].notna() & frame[self.prediction].notna()]

    def _figures(self, frame: pd.DataFrame) -> dict[str, float] | None:
        """Every metric of the task on the labelled rows of ``frame``; None below two rows."""
        labelled = self._labelled(frame)
        if labelled is None or len(labelled) < 2:
            return None
        truth, predicted = labelled[self.target], labelled[self.prediction]
        if not self.contract.is_classification:
            return regression_metrics(truth.to_numpy(dtype=float), predicted.to_numpy(dtype=float))
        truth_values, predicted_values = _labels(truth), _labels(predicted)
        classes, probabilities = self._classes(labelled, truth_values, predicted_values)
        return classification_metrics(
            truth_values,
            predicted_values,
            positive_class=self.contract.positive_class,
            classes=classes,
            probabilities=probabilities,
        )

    def _classes(
        self, labelled: pd.DataFrame, truth: np.ndarray, predicted: np.ndarray
    ) -> tuple[list[T.Any], np.ndarray | None]:
        """The classes of these rows (the reference's, plus any new one) and the per-class
        probabilities in their order; none when a class the score columns cannot name shows."""
        seen = {plain_value(v) for v in (*pd.unique(truth), *pd.unique(predicted))}
        classes = (
            self.classes if seen <= set(self.classes) else sorted_values(seen | set(self.classes))
        )
        probabilities = self._probabilities(labelled) if classes == self.classes else None
        return classes, probabilities

    def _probabilities(self, labelled: pd.DataFrame) -> np.ndarray | None:
        """Per-class probabilities in ``self.classes`` order from the contract's score columns,
        or None when the rows lack them."""
        matched = class_score_columns(self.contract, self.classes)
        if matched is None or any(c not in labelled.columns for c in matched[0]):
            return None
        names, positive = matched
        if positive is not None:
            p = labelled[names[0]].to_numpy(dtype=float)
            columns = [p if c == positive else 1 - p for c in self.classes]
        else:
            columns = [labelled[name].to_numpy(dtype=float) for name in names]
        matrix = np.column_stack(columns)
        return None if np.isnan(matrix).any() else matrix

    def _diagnostics(self, current: pd.DataFrame) -> dict[str, T.Any] | None:
        """Where the model is off in this window, binned (``core.diagnostics``): predicted
        against actual and residuals, or the confusion matrix, ROC and calibration; None below
        two labelled rows, as the metrics."""
        labelled = self._labelled(current)
        if labelled is None or len(labelled) < 2:
            return None
        truth, predicted = labelled[self.target], labelled[self.prediction]
        if not self.contract.is_classification:
            figures = diagnostics.regression(
                truth.to_numpy(dtype=float), predicted.to_numpy(dtype=float), self.span
            )
            return figures.to_dict() | {"target": self.target}
        truth_values, predicted_values = _labels(truth), _labels(predicted)
        classes, probabilities = self._classes(labelled, truth_values, predicted_values)
        positive = self.contract.positive_class
        return diagnostics.classification(
            truth_values,
            predicted_values,
            classes,
            probabilities,
            None if positive is None else plain_value(positive),
        ).to_dict() | {"target": self.target}

    def _performance(self, current: pd.DataFrame) -> dict[str, T.Any] | None:
        labelled = self._labelled(current)
        if labelled is None or current.empty:
            return None  # no labels or no predictions; no rows at all is ``no_data``
        coverage = len(labelled) / len(current) if len(current) else 0.0
        return self._performance_figures(len(labelled), coverage, self._figures(labelled))

    def _reference_performance(
        self, reference: pd.DataFrame
    ) -> tuple[dict[str, float] | None, dict[str, T.Any]]:
        """The reference figures and where they come from: the held-out record when it has
        the watched metric, else the reference table's own rows, said plainly."""
        labelled = self._labelled(reference)
        return reference_performance(
            self.origin,
            self.metric,
            self.in_sample_performance,
            None if labelled is None else len(labelled),
            _period(labelled, self.contract.timestamp),
        )

    def _segment_reference(self, reference: pd.DataFrame) -> tuple[pd.DataFrame, str]:
        """The rows the per-segment reference figures come from, and their kind: the held-out
        rows with their predictions when the reference performance is held out and they were
        kept; else the reference table (``in_sample`` when it is the training rows)."""
        rows = self.origin.held_out_rows
        held_out = self.reference_source["kind"] == "held_out"
        if held_out and rows is not None and self._labelled(rows) is not None:
            return rows, "held_out"
        return reference, "in_sample" if self.origin.in_sample else "reference_table"

    # -- segments -------------------------------------------------------------------------------
    def _segment_masks(self, frame: pd.DataFrame) -> T.Iterator[tuple[str, str, np.ndarray]]:
        """``(column, value, row mask)`` for each value of each segment column and hour band
        present in ``frame``."""
        for column in self.slicing.columns or []:
            if column not in frame.columns:
                continue
            values = frame[column].to_numpy()
            for value in sorted_values({plain_value(v) for v in pd.unique(frame[column].dropna())}):
                yield column, str(value), values == value
        hour = self.slicing.hour_column
        if hour is not None and self.slicing.hour_bands and hour in frame.columns:
            hours = pd.to_numeric(frame[hour], errors="coerce").to_numpy()
            for name, band in self.slicing.hour_bands.items():
                yield "hour_band", name, (hours >= band.first) & (hours <= band.last)

    def _segment_figures(self, frame: pd.DataFrame) -> dict[tuple[str, str], tuple[int, float]]:
        """``{(column, value): (rows, watched metric)}`` for segments of ``min_rows`` or more."""
        labelled = self._labelled(frame)
        if labelled is None or labelled.empty:
            return {}
        found = {}
        for column, value, mask in self._segment_masks(labelled):
            rows = int(mask.sum())
            if rows < self.slicing.min_rows:
                continue
            figures = self._figures(labelled.loc[mask])
            if figures is not None and self.metric in figures:
                found[(column, value)] = (rows, figures[self.metric])
        return found

    def _segments(self, current: pd.DataFrame) -> list[dict[str, T.Any]]:
        entries = []
        for (column, value), (rows, figure) in self._segment_figures(current).items():
            reference = self.reference_segments.get((column, value))
            before = None if reference is None else reference[1]
            change = _relative_change(figure, before)
            entries.append(
                {
                    "segment": column,
                    "value": value,
                    "rows": rows,
                    "metric": self.metric,
                    "current": figure,
                    "reference": before,
                    "relative_change": change,
                }
            )
        return entries


def reference_performance(
    origin: ReferenceOrigin,
    metric: str,
    own_figures: dict[str, float] | None,
    own_rows: int | None,
    own_period: tuple[str | None, str | None],
) -> tuple[dict[str, float] | None, dict[str, T.Any]]:
    """The reference figures and where they come from: the held-out record when it has the
    watched ``metric``, else the reference table's own labelled rows (``own_*``, computed by
    the engine), said plainly: in-sample figures are optimistic."""
    held_out = origin.held_out
    if held_out is not None and _finite(held_out.metrics.get(metric)):
        figures = {k: float(v) for k, v in held_out.metrics.items() if _finite(v)}
        return figures, {
            "kind": "held_out",
            "source": held_out.source,
            "rows": held_out.rows,
            "start": None if held_out.start is None else held_out.start.isoformat(),
            "end": None if held_out.end is None else held_out.end.isoformat(),
            "optimistic": False,
            "note": "held out: rows the model did not train on",
        }
    why = (
        f"no {HELD_OUT_TAG} record"
        if held_out is None
        else f"its {HELD_OUT_TAG} record has no {metric}"
    )
    if origin.in_sample:
        kind, optimistic = "in_sample", True
        note = (
            f"in-sample: optimistic ({why}): the model's fit on its own training rows, "
            "which it has seen; production will look worse than it is"
        )
    else:
        kind, optimistic = "reference_table", False
        note = (
            f"the reference table's own target and prediction columns ({why}): held out "
            "only if those predictions were made on rows the model did not train on"
        )
    start, end = own_period
    return own_figures, {
        "kind": kind,
        "source": f"{origin.name} ({own_rows or 0:,} labelled rows)",
        "rows": own_rows,
        "start": start,
        "end": end,
        "optimistic": optimistic,
        "note": note,
    }


@dataclasses.dataclass(frozen=True)
class WindowFigures:
    """What an engine (pandas here, Spark in ``bikes.spark``) computed for one window;
    ``window_result`` turns it into the result every consumer reads, the same for both."""

    start: dt.datetime | None
    end: dt.datetime | None
    rows: int
    rejected_rows: int
    rejected_share: float | None
    model_version: str | None
    freshness: dict[str, T.Any] | None
    missing: list[str]
    quality: dict[str, dict[str, T.Any]]
    drifts: dict[str, DriftResult]
    prediction_drift: dict[str, DriftResult]
    score_drift: dict[str, DriftResult]
    target_drift: dict[str, DriftResult]
    performance: dict[str, T.Any] | None
    segments: list[dict[str, T.Any]]
    diagnostics: dict[str, T.Any] | None
    service: dict[str, T.Any] | None


def window_result(
    figures: WindowFigures,
    detectors: T.Mapping[str, Detector],
    expected: frozenset[str],
    share_threshold: float,
) -> dict[str, T.Any]:
    """One window's result (JSON, metrics rows, report, alerts all read it), with its status.

    The dataset-drift share's denominator is the scored columns (a missing one is not scored)
    whose drift the contract does not expect; its numerator, those of them that drift.
    """
    drifts = figures.drifts
    counted = [result for column, result in drifts.items() if column not in expected]
    drifted = sum(result.drift for result in counted)
    share = drifted / len(counted) if counted else 0.0
    columns = {c: _drift_dict(r) | {"expected": c in expected} for c, r in drifts.items()}
    for column in figures.missing:
        detector = detectors[column]
        columns[column] = {
            "column": column,
            "method": detector.method,
            "score": None,
            "threshold": detector.threshold,
            "drift": False,
            "expected": column in expected,
            "missing_column": True,
        }
    start, end = figures.start, figures.end
    result: dict[str, T.Any] = {
        "window": {
            "start": None if start is None else pd.Timestamp(start).isoformat(),
            "end": None if end is None else pd.Timestamp(end).isoformat(),
            "rows": figures.rows,
        },
        "model_version": figures.model_version,
        "data_quality": {
            "rows": figures.rows,
            "rejected_rows": figures.rejected_rows,
            "rejected_share": figures.rejected_share,
            "missing_columns": figures.missing,
            "freshness": figures.freshness,
            "columns": figures.quality,
        },
        "data_drift": {
            "dataset_drift": bool(share >= share_threshold),
            "drift_share": share,
            "share_threshold": share_threshold,
            "drifted_columns": drifted,
            "counted_columns": len(counted),
            "expected_columns": sorted(expected),
            "expected_drifted_columns": sorted(
                c for c, r in drifts.items() if c in expected and r.drift
            ),
            "columns": columns,
        },
        "prediction_drift": _single_drift(figures.prediction_drift),
        "score_drift": {c: _drift_dict(r) for c, r in figures.score_drift.items()},
        "target_drift": _single_drift(figures.target_drift),
        "performance": figures.performance,
        "segments": figures.segments,
        "diagnostics": figures.diagnostics,
        "service": figures.service,
    }
    result["status"] = status_of(result)
    return result


def shares_of(*results: dict[str, DriftResult]) -> dict[str, np.ndarray]:
    """Every scored column's binned current shares: what the report's window switcher draws."""
    return {column: result.shares for group in results for column, result in group.items()}


def with_issue(figures: dict[str, T.Any], feature: Feature) -> dict[str, T.Any]:
    """A column's quality figures flagged: absent, missing where not nullable, out of range,
    or an unseen category."""
    figures["issue"] = bool(
        figures.get("missing_column")
        or (figures["missing_share"] > 0 and not feature.nullable)
        or figures["out_of_range_share"] > 0
        or figures["unseen_categories"]
    )
    return figures


def status_of(result: dict[str, T.Any]) -> str:
    """``no_data``: no row at all; ``detected``: dataset drift or degraded performance;
    ``potential``: anything else moved (a drifted column, prediction, score or target drift,
    a quality issue, a missing column, rejected rows)."""
    if result["window"]["rows"] == 0:
        return "no_data"
    performance = result.get("performance") or {}
    if result["data_drift"]["dataset_drift"] or performance.get("degraded"):
        return "detected"
    quality = result["data_quality"]
    signals = [
        result["data_drift"]["drifted_columns"] > 0,
        bool((result.get("prediction_drift") or {}).get("drift")),
        bool((result.get("target_drift") or {}).get("drift")),
        any(r["drift"] for r in (result.get("score_drift") or {}).values()),
        any(q.get("issue") for q in quality["columns"].values()),
        bool(quality.get("missing_columns")),
        bool(quality.get("rejected_rows")),
    ]
    return "potential" if any(signals) else "no_detection"


def long_rows(result: dict[str, T.Any]) -> list[dict[str, T.Any]]:
    """The window's figures as ``(check, column, value, threshold, status)`` rows."""
    rows: list[dict[str, T.Any]] = []

    def add(
        check: str,
        column: str,
        value: float | None,
        threshold: float | None = None,
        status: str = "ok",
    ) -> None:
        if value is not None and np.isfinite(value):
            rows.append(
                {
                    "check": check,
                    "column": column,
                    "value": float(value),
                    "threshold": threshold,
                    "status": status,
                }
            )

    add("status", "*", STATUSES.index(result["status"]), None, result["status"])
    add("rows", "*", result["window"]["rows"])
    quality = result["data_quality"]
    add("rejected_rows", "*", quality["rejected_rows"], None, _issue(quality["rejected_rows"]))
    add("rejected_share", "*", quality["rejected_share"], 0.0, _issue(quality["rejected_rows"]))
    for column in quality["missing_columns"]:
        add("missing_column", column, 1.0, 0.0, "issue")
    for column, figures in quality["columns"].items():
        add(
            "missing_share", column, figures["missing_share"], 0.0, _issue(figures["missing_share"])
        )
        outside = figures["out_of_range_share"]
        add("out_of_range_share", column, outside, 0.0, _issue(outside))
        unseen = len(figures["unseen_categories"])
        add("unseen_categories", column, unseen, 0.0, _issue(unseen))
    drift = result["data_drift"]
    add(
        "dataset_drift_share",
        "*",
        drift["drift_share"],
        drift["share_threshold"],
        "drift" if drift["dataset_drift"] else "ok",
    )
    for column, figures in drift["columns"].items():
        verdict = "expected" if figures.get("expected") and figures["drift"] else _drift(figures)
        add("drift_score", column, figures["score"], figures["threshold"], verdict)
    outputs = [
        ("prediction_drift_score", result.get("prediction_drift")),
        *(("prediction_drift_score", f) for f in (result.get("score_drift") or {}).values()),
        ("target_drift_score", result.get("target_drift")),
    ]
    for check, figures in outputs:
        if figures:
            add(check, figures["column"], figures["score"], figures["threshold"], _drift(figures))
    performance = result.get("performance")
    if performance:
        metric = performance["metric"]
        add("label_coverage", "*", performance["label_coverage"])
        for name, value in (performance.get("current") or {}).items():
            add("performance", name, value)
        for name, value in (performance.get("reference") or {}).items():
            add("performance_reference", name, value)
        add("performance_relative_change", metric, performance.get("relative_change"))
        add(
            "performance_degradation",
            metric,
            performance.get("degradation"),
            performance["threshold"],
            "degraded" if performance.get("degraded") else "ok",
        )
    for segment in result["segments"]:
        add("segment_performance", f"{segment['segment']}={segment['value']}", segment["current"])
    service = result.get("service")
    if service:
        add("rows_per_hour", "*", service["rows_per_hour"])
        for name, value in service["latency_ms"].items():
            add(f"latency_{name}_ms", "*", value)
    return rows


def _issue(value: float) -> str:
    return "issue" if value else "ok"


def _drift(figures: dict[str, T.Any]) -> str:
    return "drift" if figures["drift"] else "ok"


_Result = T.TypeVar("_Result")


def _per_column(work: T.Callable[[str], _Result], columns: list[str]) -> dict[str, _Result]:
    """``{column: work(column)}`` on every core: numpy releases the GIL while it sorts and
    searches, which is where drift detection spends its time on large windows."""
    workers = min(len(columns), os.cpu_count() or 1)
    if workers <= 1:
        return {column: work(column) for column in columns}
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="drift") as pool:
        return dict(zip(columns, pool.map(work, columns), strict=True))


def _values(values: pd.Series, kind: Kind) -> np.ndarray:
    """What a detector scores: numbers for a numeric column (text reads as missing), and for
    a categorical one its numbers, or its values as they are (text, booleans)."""
    numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
    if kind == "numeric" or numeric:
        return pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
    array = values.to_numpy(dtype=object)
    array[values.isna().to_numpy()] = None  # NaN, None or pd.NA alike: missing
    return array


def _labels(values: pd.Series) -> np.ndarray:
    """Class labels as one type: whole numbers as integers (a label stored as 1.0 is class 1),
    anything else as it is."""
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        numbers = values.to_numpy(dtype=float)
        return numbers.astype(np.int64) if np.all(numbers == np.round(numbers)) else numbers
    return values.to_numpy(dtype=object)


def _finite(value: float | None) -> bool:
    return value is not None and bool(np.isfinite(value))


def _period(frame: pd.DataFrame | None, timestamp: str | None) -> tuple[str | None, str | None]:
    """The first and last event time of ``frame``, ISO; ``(None, None)`` when unknown."""
    if frame is None or frame.empty or timestamp is None or timestamp not in frame.columns:
        return None, None
    times = pd.to_datetime(frame[timestamp], errors="coerce").dropna()
    if times.empty:
        return None, None
    return times.min().isoformat(), times.max().isoformat()


def _relative_change(current: float | None, reference: float | None) -> float | None:
    if current is None or reference is None or reference == 0:
        return None
    return (current - reference) / abs(reference)


def _single_drift(results: dict[str, DriftResult]) -> dict[str, T.Any] | None:
    return next((_drift_dict(result) for result in results.values()), None)


def _drift_dict(result: DriftResult) -> dict[str, T.Any]:
    return {
        "column": result.column,
        "method": result.method,
        "score": None if not np.isfinite(result.score) else result.score,
        "threshold": result.threshold,
        "drift": result.drift,
    }


def _model_version(frame: pd.DataFrame) -> str | None:
    if "model_version" not in frame.columns or frame.empty:
        return None
    versions = sorted({str(v) for v in frame["model_version"].dropna()})
    return ",".join(versions) or None


def _service(frame: pd.DataFrame) -> dict[str, T.Any] | None:
    if "latency_ms" not in frame.columns or "event_time" not in frame.columns or frame.empty:
        return None
    received = pd.to_datetime(frame.get("received_time", frame["event_time"]))
    hours = max((received.max() - received.min()).total_seconds() / 3600, 1.0)
    latency = frame["latency_ms"].to_numpy(dtype=float)
    return {
        "rows_per_hour": len(frame) / hours,
        "latency_ms": {f"p{q}": float(np.percentile(latency, q)) for q in (50, 95, 99)},
    }
