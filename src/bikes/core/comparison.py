"""Candidate against baseline beyond MLflow's point estimates: noise and slices.

A candidate that beats the champion by less than the test set's noise has not beaten it;
a candidate that wins on average but loses badly at rush hour must not ship either.
"""

from __future__ import annotations

import dataclasses
import math
import typing as T
import warnings

import numpy as np
import numpy.typing as npt
import pandas as pd
import pydantic as pdt
from scipy import stats

from bikes.core.metrics import Labels, SklearnMetric


class Bootstrap(pdt.BaseModel, strict=True, frozen=True, extra="forbid"):
    """A paired bootstrap over rows: both models are scored on the same resampled rows."""

    enabled: bool = pdt.Field(default=True, description="Whether to compute the intervals.")
    resamples: int = pdt.Field(default=300, ge=10, description="Bootstrap resamples.")
    confidence: float = pdt.Field(
        default=0.95, gt=0, lt=1, description="Confidence level of the intervals."
    )
    seed: int = pdt.Field(default=42, description="Seed of the resampling, for reproducibility.")


@dataclasses.dataclass(frozen=True)
class Interval:
    """A confidence interval of ``metric(candidate) - metric(baseline)``."""

    difference: float
    low: float
    high: float
    confidence: float

    def better_beyond_noise(self, higher_is_better: bool) -> bool:
        """True when the whole interval lies on the better side of zero."""
        return self.low > 0 if higher_is_better else self.high < 0


def paired_difference_interval(
    metric: SklearnMetric,
    y_true: npt.ArrayLike,
    candidate: npt.ArrayLike,
    baseline: npt.ArrayLike,
    settings: Bootstrap,
    labels: Labels | None = None,
) -> Interval:
    """Percentile bootstrap interval of the metric difference, via ``scipy.stats.bootstrap``.

    Rows are resampled once for both models (paired). ``candidate``/``baseline``: predicted
    values or classes, or a classifier's scores for a score metric (a column, or one column
    per class: rows are resampled whole).
    """
    truth = _truth(y_true, labels)
    first, second = np.asarray(candidate), np.asarray(baseline)
    if labels is None:
        first, second = first.astype(float), second.astype(float)

    def difference(rows: np.ndarray) -> float:
        return _score(metric, truth[rows], first[rows], labels) - _score(
            metric, truth[rows], second[rows], labels
        )

    everything = np.arange(len(truth))
    # Resampling row numbers with ``paired=True`` draws exactly what scipy draws for the
    # paired arrays themselves; row numbers also carry 2-D scores and text labels along.
    result = stats.bootstrap(
        (everything,),
        difference,
        paired=True,
        vectorized=False,
        n_resamples=settings.resamples,
        confidence_level=settings.confidence,
        method="percentile",
        rng=np.random.default_rng(settings.seed),
    )
    return Interval(
        difference=difference(everything),
        low=float(result.confidence_interval.low),
        high=float(result.confidence_interval.high),
        confidence=settings.confidence,
    )


def _truth(y_true: npt.ArrayLike, labels: Labels | None) -> np.ndarray:
    values = np.asarray(y_true)
    return values if labels is not None else values.astype(float)


def _score(
    metric: SklearnMetric, truth: np.ndarray, predicted: np.ndarray, labels: Labels | None
) -> float:
    """The metric, NaN where these rows leave it undefined (one class only, for ROC AUC)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # undefined-metric warnings: the NaN says it
        try:
            return metric.score(truth, predicted, labels)
        except ValueError:
            return math.nan


class HourBand(pdt.BaseModel, strict=True, frozen=True, extra="forbid"):
    """Hours ``first`` to ``last`` inclusive, e.g. the evening rush 16..19."""

    first: int = pdt.Field(ge=0, le=23, description="First hour of the band.")
    last: int = pdt.Field(ge=0, le=23, description="Last hour of the band (inclusive).")


DEFAULT_HOUR_BANDS = {
    "night": HourBand(first=0, last=5),
    "morning_rush": HourBand(first=6, last=9),
    "midday": HourBand(first=10, last=15),
    "evening_rush": HourBand(first=16, last=19),
    "evening": HourBand(first=20, last=23),
}


class Slicing(pdt.BaseModel, strict=True, frozen=True, extra="forbid"):
    """Segments to score separately, and how much worse a segment may get.

    ``max_relative_regression`` (None: report only) fails the gate when the candidate's
    metric on any segment of at least ``min_rows`` rows is worse than the baseline's by more
    than that share.
    """

    columns: list[str] | None = pdt.Field(
        default=None,
        description="Columns whose values are scored separately. Default: the contract's segments.",
    )
    hour_column: str | None = pdt.Field(
        default=None,
        description="An hour-of-day column (0..23) to score by hour band; none by default.",
    )
    hour_bands: dict[str, HourBand] = pdt.Field(
        default_factory=lambda: dict(DEFAULT_HOUR_BANDS),
        description="Named bands of hours, used with hour_column.",
    )
    metric: str | None = pdt.Field(
        default=None,
        description="The sklearn metric scored per segment. Default: root_mean_squared_error "
        "(regression), balanced_accuracy_score (classification).",
    )
    max_relative_regression: float | None = pdt.Field(
        default=None,
        ge=0,
        description="Fail when a segment's metric is worse than the baseline's by more than "
        "this share; None reports only.",
    )
    min_rows: int = pdt.Field(
        default=30, ge=1, description="Segments with fewer rows are reported, never failed."
    )

    def resolved(self, segments: T.Sequence[str], metric: str) -> Slicing:
        """A copy with the defaults filled in: the contract's ``segments``, the task's metric."""
        return self.model_copy(
            update={
                "columns": list(segments) if self.columns is None else self.columns,
                "metric": self.metric or metric,
            }
        )

    @property
    def needed_columns(self) -> list[str]:
        hours = [self.hour_column] if self.hour_column and self.hour_bands else []
        return [*(self.columns or []), *hours]


def segments(frame: pd.DataFrame, slicing: Slicing) -> T.Iterator[tuple[str, str, np.ndarray]]:
    """``(column, value, row mask)`` for every value of every slicing column and hour band."""
    for column in slicing.columns or []:
        values = frame[column].to_numpy()
        for value in np.unique(frame[column].dropna().to_numpy()):
            yield column, str(value), values == value
    if slicing.hour_column is not None and slicing.hour_bands:
        hours = pd.to_numeric(frame[slicing.hour_column], errors="coerce").to_numpy()
        for name, band in slicing.hour_bands.items():
            yield "hour_band", name, (hours >= band.first) & (hours <= band.last)


def slice_table(
    frame: pd.DataFrame,
    y_true: npt.ArrayLike,
    candidate: npt.ArrayLike,
    baseline: npt.ArrayLike | None,
    metric: SklearnMetric,
    slicing: Slicing,
    labels: Labels | None = None,
) -> pd.DataFrame:
    """One row per segment: rows, candidate and baseline metric, relative change, verdict.

    ``candidate``/``baseline`` as for ``paired_difference_interval``. A metric undefined on a
    segment (ROC AUC where one class only occurs) is missing there, and never fails it.
    """
    truth = _truth(y_true, labels)
    first = np.asarray(candidate)
    second = None if baseline is None else np.asarray(baseline)
    rows = []
    for column, value, mask in segments(frame, slicing):
        count = int(mask.sum())
        if count == 0:
            continue
        cand = _score(metric, truth[mask], first[mask], labels)
        base = None if second is None else _score(metric, truth[mask], second[mask], labels)
        change = (
            None
            if base is None or base == 0 or math.isnan(base) or math.isnan(cand)
            else (cand - base) / abs(base)
        )
        worse = None if change is None else (-change if metric.higher_is_better else change)
        failed = (
            slicing.max_relative_regression is not None
            and worse is not None
            and count >= slicing.min_rows
            and worse > slicing.max_relative_regression
        )
        rows.append(
            {
                "segment": column,
                "value": value,
                "rows": count,
                "candidate": None if math.isnan(cand) else cand,
                "baseline": None if base is None or math.isnan(base) else base,
                "relative_change": change,
                "verdict": "failed" if failed else "passed",
            }
        )
    return pd.DataFrame(rows)
