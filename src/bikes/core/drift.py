"""Per-column drift between a reference and a current sample, with scipy's statistics.

Methods follow common practice (Evidently's defaults): with a small reference (at most
``small_sample`` rows) a statistical test at p < 0.05 — Kolmogorov-Smirnov for numeric
columns, chi-square for categorical, a two-proportion Z-test for binary; with a large
reference, where any test flags negligible differences, a distance at 0.1 — Wasserstein
normed by the reference's standard deviation for numeric, Jensen-Shannon for categorical.
PSI, Hellinger and total variation are available per column. A ``Detector`` is prepared once
from the reference (sorted values, bins, category frequencies) and then scores many windows.

Multiple testing: each column is judged on its own, uncorrected, as Evidently does; the
dataset-level decision is a share of drifted columns, which already tolerates a few false
alarms among many columns.
"""

from __future__ import annotations

import dataclasses
import typing as T

import numpy as np
import numpy.typing as npt
from scipy import stats
from scipy.spatial import distance

Kind = T.Literal["numeric", "categorical", "binary"]
Method = T.Literal[
    "ks", "chisquare", "z", "wasserstein", "jensenshannon", "psi", "hellinger", "total_variation"
]
TESTS: frozenset[str] = frozenset({"ks", "chisquare", "z"})  # score is a p-value
DEFAULT_THRESHOLDS: dict[str, float] = {
    "ks": 0.05,
    "chisquare": 0.05,
    "z": 0.05,
    "wasserstein": 0.1,
    "jensenshannon": 0.1,
    "psi": 0.1,
    "hellinger": 0.1,
    "total_variation": 0.1,
}
SMALL_SAMPLE = 1000
BINS = 20
EPSILON = 1e-4  # floor for empty bins in PSI, as usual


@dataclasses.dataclass(frozen=True)
class DriftResult:
    """A column's verdict: the method, its score and threshold, decided together."""

    column: str
    method: str
    score: float
    threshold: float
    drift: bool


def default_method(kind: Kind, reference_size: int, small_sample: int = SMALL_SAMPLE) -> str:
    if reference_size <= small_sample:
        return {"numeric": "ks", "categorical": "chisquare", "binary": "z"}[kind]
    return "wasserstein" if kind == "numeric" else "jensenshannon"


def is_drift(method: str, score: float, threshold: float) -> bool:
    """Tests drift below their p-value threshold, distances at or above theirs."""
    if not np.isfinite(score):
        return False
    return score < threshold if method in TESTS else score >= threshold


class Detector:
    """A reference column, prepared once, that scores any number of current windows."""

    def __init__(
        self,
        column: str,
        reference: npt.ArrayLike,
        kind: Kind,
        method: str | None = None,
        threshold: float | None = None,
        small_sample: int = SMALL_SAMPLE,
    ) -> None:
        values = np.asarray(reference)
        self.column = column
        self.kind = kind
        self.reference = _finite(values, kind)
        self.method = method or default_method(kind, self.reference.size, small_sample)
        if self.method not in DEFAULT_THRESHOLDS:
            raise ValueError(f"{column}: unknown drift method {self.method!r}")
        self.threshold = DEFAULT_THRESHOLDS[self.method] if threshold is None else threshold
        self.categories: np.ndarray = np.array([])
        self.edges: np.ndarray = np.array([])
        if kind == "numeric":
            self.std = float(np.std(self.reference)) if self.reference.size else 0.0
            self.sorted_reference = np.sort(self.reference)  # once, for every window
            self.edges = _quantile_edges(self.sorted_reference)
        else:
            self.categories = np.unique(self.reference)
        self.reference_frequencies = self.frequencies(self.reference)

    def score(self, current: npt.ArrayLike) -> DriftResult:
        values = _finite(np.asarray(current), self.kind)
        if values.size == 0 or self.reference.size == 0:
            return DriftResult(self.column, self.method, float("nan"), self.threshold, False)
        value = self._statistic(values)
        return DriftResult(
            self.column,
            self.method,
            value,
            self.threshold,
            is_drift(self.method, value, self.threshold),
        )

    def _statistic(self, current: np.ndarray) -> float:
        method = self.method
        if method == "ks":
            return float(stats.ks_2samp(self.reference, current).pvalue)
        if method == "wasserstein":
            raw = wasserstein_sorted(self.sorted_reference, np.sort(current))
            return float(raw / self.std) if self.std > 0 else float(raw > 0)
        if method == "z":
            return _proportions_z_pvalue(self.reference, current)
        expected, observed = self.reference_frequencies, self.frequencies(current)
        if method == "chisquare":
            return _chisquare_pvalue(self.reference, current, self.categories)
        if method == "jensenshannon":
            return float(distance.jensenshannon(expected, observed, base=2))
        if method == "psi":
            e, o = np.maximum(expected, EPSILON), np.maximum(observed, EPSILON)
            return float(np.sum((o - e) * np.log(o / e)))
        if method == "hellinger":
            return float(np.sqrt(0.5 * np.sum((np.sqrt(expected) - np.sqrt(observed)) ** 2)))
        return float(0.5 * np.sum(np.abs(expected - observed)))  # total_variation

    def frequencies(self, values: np.ndarray) -> np.ndarray:
        """Shares per reference bin (numeric) or category (current's unseen ones in a last bin)."""
        if self.kind == "numeric":
            counts = np.histogram(np.clip(values, self.edges[0], self.edges[-1]), self.edges)[0]
        else:
            index = np.searchsorted(self.categories, values)
            index = np.clip(index, 0, len(self.categories))
            known = (index < len(self.categories)) & (
                self.categories[np.minimum(index, len(self.categories) - 1)] == values
            )
            counts = np.bincount(
                np.where(known, index, len(self.categories)), minlength=len(self.categories) + 1
            )
        total = counts.sum()
        return counts / total if total else counts.astype(float)


def wasserstein_sorted(u: np.ndarray, v: np.ndarray) -> float:
    """``scipy.stats.wasserstein_distance`` for already sorted samples, without re-sorting.

    The same integral of the absolute difference of the two empirical CDFs as scipy's
    ``_cdf_distance`` (p=1, unweighted); merging two sorted runs is linear, so a reference
    sorted once serves every window.
    """
    merged = np.concatenate((u, v))
    merged.sort(kind="mergesort")
    deltas = np.diff(merged)
    u_cdf = np.searchsorted(u, merged[:-1], "right") / u.size
    v_cdf = np.searchsorted(v, merged[:-1], "right") / v.size
    return float(np.sum(np.abs(u_cdf - v_cdf) * deltas))


def _finite(values: np.ndarray, kind: Kind) -> np.ndarray:
    if values.dtype.kind in "fc":
        finite: np.ndarray = values[np.isfinite(values)]
        return finite
    if values.dtype == object:
        return np.asarray([v for v in values if v is not None and v == v])
    return values


def _quantile_edges(reference: np.ndarray) -> np.ndarray:
    if reference.size == 0:
        return np.array([0.0, 1.0])
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, BINS + 1)))
    if edges.size < 2:
        edges = np.array([edges[0] - 0.5, edges[0] + 0.5])
    return edges


def _chisquare_pvalue(reference: np.ndarray, current: np.ndarray, categories: np.ndarray) -> float:
    """Chi-square test of homogeneity on the 2 x k table of category counts."""
    keys = np.union1d(categories, np.unique(current))
    table = np.vstack(
        [np.array([np.sum(sample == key) for key in keys]) for sample in (reference, current)]
    )
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2:
        return 1.0
    return float(stats.chi2_contingency(table, correction=False).pvalue)


def _proportions_z_pvalue(reference: np.ndarray, current: np.ndarray) -> float:
    """Two-proportion Z-test on the share of the reference's most common value."""
    values, counts = np.unique(reference, return_counts=True)
    positive = values[np.argmax(counts)]
    n1, n2 = reference.size, current.size
    p1, p2 = np.mean(reference == positive), np.mean(current == positive)
    pooled = (p1 * n1 + p2 * n2) / (n1 + n2)
    spread = np.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if spread == 0:
        return 1.0 if p1 == p2 else 0.0
    return float(2 * stats.norm.sf(abs(p1 - p2) / spread))
