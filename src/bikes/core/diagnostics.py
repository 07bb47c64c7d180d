"""Binned performance figures of one window, small enough to keep for every window.

A metric says *how much* a model is off; these say *where*: for a regression, predicted
against actual as a 2D histogram and the spread of the residuals; for a classification, the
confusion matrix and, when the rows carry the model's probabilities, its ROC curve and
calibration. Every figure is binned or thinned (a 20 x 20 grid, five quantiles, at most 50
ROC points, ten calibration bins), so a window of a million rows keeps a few kilobytes and a
27-window report stays small. The figures come from numpy and scikit-learn (imported on first
use: a run without labels never pays for it); ``to_dict`` gives the JSON the report reads.
"""

from __future__ import annotations

import dataclasses
import math
import typing as T

import numpy as np
import numpy.typing as npt

BINS = 20
"""Bins of each axis of the predicted-against-actual grid."""
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
"""The residual quantiles kept: the median, the middle half and the middle 90%."""
ROC_POINTS = 50
"""At most this many points of a ROC curve are kept (its first and last always)."""
CALIBRATION_BINS = 10
"""Equal-width probability bins of the calibration curve."""


def _plain(value: T.Any) -> T.Any:
    """A class label as JSON takes it: numpy scalars as Python ones."""
    return value.item() if isinstance(value, np.generic) else value


def _float(value: float) -> float | None:
    """A finite float, or None: JSON has no NaN."""
    number = float(value)
    return number if math.isfinite(number) else None


@dataclasses.dataclass(frozen=True)
class RegressionDiagnostics:
    """Predicted against actual on one grid, and the residuals (actual - predicted).

    ``counts[i][j]``: rows whose actual value falls in bin ``i`` of ``edges`` and whose
    prediction falls in bin ``j`` of the same edges, so the diagonal is a perfect prediction.
    """

    rows: int
    edges: tuple[float, ...]
    counts: tuple[tuple[int, ...], ...]
    residual_quantiles: tuple[tuple[float, float], ...]
    """``(q, value)`` pairs for each of ``QUANTILES``."""
    residual_mean: float

    def to_dict(self) -> dict[str, T.Any]:
        return {
            "task": "regression",
            "rows": self.rows,
            "residual": "actual - predicted",
            "edges": [_float(e) for e in self.edges],
            "counts": [list(row) for row in self.counts],
            "residual_quantiles": {f"{q:g}": _float(v) for q, v in self.residual_quantiles},
            "residual_mean": _float(self.residual_mean),
        }


@dataclasses.dataclass(frozen=True)
class Curve:
    """One class's ROC curve (thinned) and calibration (non-empty bins only)."""

    label: T.Any
    fpr: tuple[float, ...]
    tpr: tuple[float, ...]
    auc: float | None
    """Of every row, not of the thinned points; None when one class only is present."""
    mean_predicted: tuple[float, ...]
    observed: tuple[float, ...]
    bin_rows: tuple[int, ...]

    def to_dict(self) -> dict[str, T.Any]:
        return {
            "label": _plain(self.label),
            "roc": {
                "fpr": [_float(v) for v in self.fpr],
                "tpr": [_float(v) for v in self.tpr],
                "auc": None if self.auc is None else _float(self.auc),
            },
            "calibration": {
                "mean_predicted": [_float(v) for v in self.mean_predicted],
                "observed": [_float(v) for v in self.observed],
                "rows": list(self.bin_rows),
            },
        }


@dataclasses.dataclass(frozen=True)
class ClassificationDiagnostics:
    """The confusion matrix (rows: actual, columns: predicted, in ``labels`` order) and, with
    the model's probabilities, one curve per scored class: the positive class when binary,
    each class against the rest otherwise."""

    rows: int
    labels: tuple[T.Any, ...]
    matrix: tuple[tuple[int, ...], ...]
    curves: tuple[Curve, ...] = ()

    def to_dict(self) -> dict[str, T.Any]:
        return {
            "task": "classification",
            "rows": self.rows,
            "labels": [_plain(label) for label in self.labels],
            "confusion_matrix": [list(row) for row in self.matrix],
            "curves": [curve.to_dict() for curve in self.curves],
        }


def regression(
    truth: npt.ArrayLike,
    predicted: npt.ArrayLike,
    span: tuple[float, float] | None = None,
    bins: int = BINS,
) -> RegressionDiagnostics:
    """The grid spans ``span`` (the reference's range, so windows share their edges) widened
    to every value of this window: a window beyond the reference gets wider axes, never rows
    clipped into the outer bins."""
    actual = np.asarray(truth, dtype=float)
    guess = np.asarray(predicted, dtype=float)
    keep = np.isfinite(actual) & np.isfinite(guess)
    actual, guess = actual[keep], guess[keep]
    if actual.size == 0:
        raise ValueError("no finite pair of actual and predicted values")
    low = min(float(actual.min()), float(guess.min()))
    high = max(float(actual.max()), float(guess.max()))
    if span is not None:
        low, high = min(low, span[0]), max(high, span[1])
    if high <= low:
        high = low + 1.0
    edges = np.linspace(low, high, bins + 1)
    counts = _grid(actual, guess, edges)
    residuals = actual - guess
    values = np.quantile(residuals, QUANTILES)
    return RegressionDiagnostics(
        rows=int(actual.size),
        edges=tuple(float(e) for e in edges),
        counts=tuple(tuple(int(c) for c in row) for row in counts),
        residual_quantiles=tuple((q, float(v)) for q, v in zip(QUANTILES, values, strict=True)),
        residual_mean=float(residuals.mean()),
    )


def classification(
    truth: npt.ArrayLike,
    predicted: npt.ArrayLike,
    labels: T.Sequence[T.Any],
    probabilities: npt.ArrayLike | None = None,
    positive: T.Any = None,
) -> ClassificationDiagnostics:
    """``probabilities``: one column per class of ``labels``, in that order (as the monitor
    reads them from the contract's score columns); ``positive``: the class a binary curve is
    of (default: the greater class, as scikit-learn and the metrics take it)."""
    from sklearn.metrics import confusion_matrix

    actual, guess = np.asarray(truth), np.asarray(predicted)
    classes = list(labels)
    # Class codes first (hashing, not sorting): sklearn on a million text labels takes seconds,
    # on their integer codes milliseconds. A value outside ``labels`` (code -1) is left out,
    # as sklearn leaves it out.
    codes = [_codes(values, classes) for values in (actual, guess)]
    known = (codes[0] >= 0) & (codes[1] >= 0)
    matrix = confusion_matrix(codes[0][known], codes[1][known], labels=np.arange(len(classes)))
    curves: tuple[Curve, ...] = ()
    if probabilities is not None and len(classes) >= 2:
        scores = np.asarray(probabilities, dtype=float)
        if len(classes) == 2:
            chosen = classes[-1] if positive is None else positive
            scored = [chosen] if chosen in classes else []
        else:
            scored = classes
        curves = tuple(
            _curve((codes[0] == classes.index(c)).astype(int), scores[:, classes.index(c)], c)
            for c in scored
        )
    return ClassificationDiagnostics(
        rows=int(actual.size),
        labels=tuple(classes),
        matrix=tuple(tuple(int(c) for c in row) for row in matrix),
        curves=curves,
    )


def _curve(hits: np.ndarray, score: np.ndarray, label: T.Any) -> Curve:
    """ROC and calibration of one class against the rest."""
    from sklearn.metrics import auc as area
    from sklearn.metrics import roc_curve

    both = bool(hits.any() and not hits.all())
    fpr: np.ndarray = np.array([])
    tpr: np.ndarray = np.array([])
    auc = None
    if both:  # a ROC curve needs positives and negatives
        fpr, tpr, _ = roc_curve(hits, score)
        auc = float(area(fpr, tpr))  # as roc_auc_score does, without sorting the rows again
        kept = thin(len(fpr), ROC_POINTS)
        fpr, tpr = fpr[kept], tpr[kept]
    # sklearn.calibration.calibration_curve's uniform binning, in three numpy lines: importing
    # sklearn.calibration costs about half a second (it loads sklearn.svm and linear_model),
    # a fixed cost every scored window would pay for two bincounts. The tests hold the two equal.
    probability = np.clip(score, 0.0, 1.0)
    bins = np.searchsorted(np.linspace(0.0, 1.0, CALIBRATION_BINS + 1)[1:-1], probability)
    rows = np.bincount(bins, minlength=CALIBRATION_BINS)
    seen = rows > 0
    mean_predicted = np.bincount(bins, probability, CALIBRATION_BINS)[seen] / rows[seen]
    observed = np.bincount(bins, hits, CALIBRATION_BINS)[seen] / rows[seen]
    return Curve(
        label=label,
        fpr=tuple(float(v) for v in fpr),
        tpr=tuple(float(v) for v in tpr),
        auc=auc,
        mean_predicted=tuple(float(v) for v in mean_predicted),
        observed=tuple(float(v) for v in observed),
        bin_rows=tuple(int(r) for r in rows[seen]),
    )


def _grid(actual: np.ndarray, guess: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """``np.histogram2d(actual, guess, bins=(edges, edges))``, five times faster: the same
    search for each value's bin (right-open, the last bin closed), then one bincount, where
    numpy's general d-dimensional code costs 0.2 s per million rows."""
    bins = len(edges) - 1
    rows = np.minimum(np.searchsorted(edges, actual, side="right") - 1, bins - 1)
    columns = np.minimum(np.searchsorted(edges, guess, side="right") - 1, bins - 1)
    return np.bincount(rows * bins + columns, minlength=bins * bins).reshape(bins, bins)


def _codes(values: np.ndarray, classes: list[T.Any]) -> np.ndarray:
    """Each value's index in ``classes``, -1 for any other value or a missing one."""
    import pandas as pd

    codes, uniques = pd.factorize(values)
    index = {label: k for k, label in enumerate(classes)}
    lookup = np.array([index.get(u, -1) for u in uniques] + [-1])  # code -1 (missing): -1
    return lookup[codes]


def thin(count: int, most: int) -> np.ndarray:
    """At most ``most`` indices of ``count`` points, evenly spread, first and last kept."""
    if count <= most:
        return np.arange(count)
    return np.unique(np.round(np.linspace(0, count - 1, most)).astype(int))
