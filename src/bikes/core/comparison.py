"""Candidate against baseline beyond MLflow's point estimates: noise and slices.

A candidate that beats the champion by less than the test set's noise has not beaten it;
a candidate that wins on average but loses badly at rush hour must not ship either.
"""

from __future__ import annotations

import dataclasses
import typing as T

import numpy as np
import numpy.typing as npt
import pandas as pd
import pydantic as pdt
from scipy import stats

from bikes.core.metrics import SklearnMetric


class Bootstrap(pdt.BaseModel, strict=True, frozen=True, extra="forbid"):
    """A paired bootstrap over rows: both models are scored on the same resampled rows."""

    enabled: bool = True
    resamples: int = pdt.Field(default=300, ge=10)
    confidence: float = pdt.Field(default=0.95, gt=0, lt=1)
    seed: int = 42


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
) -> Interval:
    """Percentile bootstrap interval of the metric difference, via ``scipy.stats.bootstrap``."""
    truth, first, second = (
        np.asarray(values, dtype=float) for values in (y_true, candidate, baseline)
    )

    def difference(t: np.ndarray, c: np.ndarray, b: np.ndarray) -> float:
        return metric.score(t, c) - metric.score(t, b)

    result = stats.bootstrap(
        (truth, first, second),
        difference,
        paired=True,
        vectorized=False,
        n_resamples=settings.resamples,
        confidence_level=settings.confidence,
        method="percentile",
        rng=np.random.default_rng(settings.seed),
    )
    return Interval(
        difference=difference(truth, first, second),
        low=float(result.confidence_interval.low),
        high=float(result.confidence_interval.high),
        confidence=settings.confidence,
    )


class HourBand(pdt.BaseModel, strict=True, frozen=True, extra="forbid"):
    """Hours ``first`` to ``last`` inclusive, e.g. the evening rush 16..19."""

    first: int = pdt.Field(ge=0, le=23)
    last: int = pdt.Field(ge=0, le=23)


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

    columns: list[str] = pdt.Field(default_factory=lambda: ["season", "workingday", "weathersit"])
    hour_column: str = "hr"
    hour_bands: dict[str, HourBand] = pdt.Field(default_factory=lambda: dict(DEFAULT_HOUR_BANDS))
    metric: str = "root_mean_squared_error"
    max_relative_regression: float | None = pdt.Field(default=None, ge=0)
    min_rows: int = pdt.Field(default=30, ge=1)


def segments(frame: pd.DataFrame, slicing: Slicing) -> T.Iterator[tuple[str, str, np.ndarray]]:
    """``(column, value, row mask)`` for every value of every slicing column and hour band."""
    for column in slicing.columns:
        values = frame[column].to_numpy()
        for value in np.unique(values):
            yield column, str(value), values == value
    if slicing.hour_bands:
        hours = frame[slicing.hour_column].to_numpy()
        for name, band in slicing.hour_bands.items():
            yield "hour_band", name, (hours >= band.first) & (hours <= band.last)


def slice_table(
    frame: pd.DataFrame,
    y_true: npt.ArrayLike,
    candidate: npt.ArrayLike,
    baseline: npt.ArrayLike | None,
    metric: SklearnMetric,
    slicing: Slicing,
) -> pd.DataFrame:
    """One row per segment: rows, candidate and baseline metric, relative change, verdict."""
    truth = np.asarray(y_true, dtype=float)
    first = np.asarray(candidate, dtype=float)
    second = None if baseline is None else np.asarray(baseline, dtype=float)
    rows = []
    for column, value, mask in segments(frame, slicing):
        count = int(mask.sum())
        if count == 0:
            continue
        cand = metric.score(truth[mask], first[mask])
        base = None if second is None else metric.score(truth[mask], second[mask])
        change = None if base is None or base == 0 else (cand - base) / abs(base)
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
                "candidate": cand,
                "baseline": base,
                "relative_change": change,
                "verdict": "failed" if failed else "passed",
            }
        )
    return pd.DataFrame(rows)
