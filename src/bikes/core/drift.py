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
    """A column's verdict: the method, its score and threshold, decided together.

    ``shares`` is the current sample binned like the reference (``Detector.reference_shares``),
    a by-product of scoring that the report draws without touching the raw values again.
    """

    column: str
    method: str
    score: float
    threshold: float
    drift: bool
    shares: np.ndarray = dataclasses.field(default_factory=lambda: np.array([]), compare=False)


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
    """A reference column, prepared once, that scores any number of current windows.

    It keeps only what scoring needs, not the raw reference: the sorted values of a numeric
    column (every numeric method works on sorted data), the category counts of the others.
    """

    categories: np.ndarray
    counts: np.ndarray
    edges: np.ndarray
    sorted_reference: np.ndarray
    reference_shares: np.ndarray
    std: float

    def __init__(
        self,
        column: str,
        reference: npt.ArrayLike,
        kind: Kind,
        method: str | None = None,
        threshold: float | None = None,
        small_sample: int = SMALL_SAMPLE,
    ) -> None:
        values = _finite(np.asarray(reference), kind)
        self._prepare(column, kind, int(values.size), method, threshold, small_sample)
        if kind == "numeric":
            self.sorted_reference = np.sort(values)  # once, for every window
            self.std = float(np.std(self.sorted_reference)) if self.size else 0.0
            self.edges = _quantile_edges(self.sorted_reference)
            self.reference_shares = self._binned(self.sorted_reference)
        else:
            self.categories, self.counts = np.unique(values, return_counts=True)
            self.reference_shares = _shares(np.append(self.counts, 0))

    def _prepare(
        self,
        column: str,
        kind: Kind,
        size: int,
        method: str | None,
        threshold: float | None,
        small_sample: int,
    ) -> None:
        """What every detector holds, however its reference was summarised (here from the
        values, in ``core.summaries`` from a distributed engine's aggregates)."""
        self.column = column
        self.kind = kind
        self.size = size
        self.method = method or default_method(kind, self.size, small_sample)
        if self.method not in DEFAULT_THRESHOLDS:
            raise ValueError(f"{column}: unknown drift method {self.method!r}")
        self.threshold = DEFAULT_THRESHOLDS[self.method] if threshold is None else threshold
        self.categories = np.array([])
        self.counts = np.array([], dtype=np.int64)
        self.edges = np.array([])
        self.sorted_reference = np.array([])
        self.std = 0.0

    def score_counts(self, categories: np.ndarray, counts: np.ndarray) -> DriftResult:
        """A categorical or binary window's verdict from its distinct present values (sorted,
        as ``np.unique`` gives them) and their counts: what a distributed engine computes."""
        if counts.sum() == 0 or self.size == 0:
            return DriftResult(self.column, self.method, float("nan"), self.threshold, False)
        shares = self._category_shares(categories, counts)
        return self._verdict(self._statistic(categories, counts, shares), shares)

    def score(self, current: npt.ArrayLike) -> DriftResult:
        values = _finite(np.asarray(current), self.kind)
        if values.size == 0 or self.size == 0:
            return DriftResult(self.column, self.method, float("nan"), self.threshold, False)
        counts: np.ndarray | None = None
        if self.kind == "numeric":
            values = np.sort(values)
            shares = self._binned(values)
        else:  # categories and counts, once: shares, chi-square and Z-test all use them
            values, counts = np.unique(values, return_counts=True)
            shares = self._category_shares(values, counts)
        return self._verdict(self._statistic(values, counts, shares), shares)

    def _verdict(self, score: float, shares: np.ndarray) -> DriftResult:
        """The score judged against this column's threshold, with the binned shares."""
        return DriftResult(
            self.column,
            self.method,
            score,
            self.threshold,
            is_drift(self.method, score, self.threshold),
            shares,
        )

    def _statistic(
        self, current: np.ndarray, counts: np.ndarray | None, observed: np.ndarray
    ) -> float:
        """``current``: the sorted values of a numeric column, or the distinct categories of
        another, each with its ``counts``; ``observed``: its binned shares."""
        method = self.method
        if method == "ks":
            return float(stats.ks_2samp(self.sorted_reference, current).pvalue)
        if method == "wasserstein":
            raw = wasserstein_sorted(self.sorted_reference, current)
            return float(raw / self.std) if self.std > 0 else float(raw > 0)
        if method == "z":
            assert counts is not None
            return self._proportions_z_pvalue(current, counts)
        if method == "chisquare":
            assert counts is not None
            return self._chisquare_pvalue(current, counts)
        expected = self.reference_shares
        if method == "jensenshannon":
            return float(distance.jensenshannon(expected, observed, base=2))
        if method == "psi":
            e, o = np.maximum(expected, EPSILON), np.maximum(observed, EPSILON)
            return float(np.sum((o - e) * np.log(o / e)))
        if method == "hellinger":
            return float(np.sqrt(0.5 * np.sum((np.sqrt(expected) - np.sqrt(observed)) ** 2)))
        return float(0.5 * np.sum(np.abs(expected - observed)))  # total_variation

    def _binned(self, sorted_values: np.ndarray) -> np.ndarray:
        """Shares per reference quantile bin; values beyond the outer edges count in the
        outer bins. Sorted input makes this a search per edge, not a pass over the data."""
        inner = np.searchsorted(sorted_values, self.edges[1:-1], side="left")
        return _shares(np.diff(np.concatenate(([0], inner, [sorted_values.size]))))

    def _category_shares(self, categories: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """Shares per reference category, with current's unseen categories in a last bin."""
        index = np.searchsorted(self.categories, categories)
        inside = index < self.categories.size
        known = np.zeros(categories.size, dtype=bool)
        known[inside] = self.categories[index[inside]] == categories[inside]
        binned = np.zeros(self.categories.size + 1, dtype=np.int64)
        np.add.at(binned, np.where(known, index, self.categories.size), counts)
        return _shares(binned)

    def _chisquare_pvalue(self, keys: np.ndarray, counts: np.ndarray) -> float:
        """Chi-square test of homogeneity on the 2 x k table of category counts."""
        union = np.union1d(self.categories, keys)
        table = np.zeros((2, union.size))
        table[0, np.searchsorted(union, self.categories)] = self.counts
        table[1, np.searchsorted(union, keys)] = counts
        table = table[:, table.sum(axis=0) > 0]
        if table.shape[1] < 2:
            return 1.0
        return float(stats.chi2_contingency(table, correction=False).pvalue)

    def _proportions_z_pvalue(self, keys: np.ndarray, counts: np.ndarray) -> float:
        """Two-proportion Z-test on the share of the reference's most common value."""
        positive = self.categories[np.argmax(self.counts)]
        n1, n2 = self.size, int(counts.sum())
        p1, p2 = self.counts.max() / n1, counts[keys == positive].sum() / n2
        pooled = (p1 * n1 + p2 * n2) / (n1 + n2)
        spread = np.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
        if spread == 0:
            return 1.0 if p1 == p2 else 0.0
        return float(2 * stats.norm.sf(abs(p1 - p2) / spread))


def wasserstein_sorted(u: np.ndarray, v: np.ndarray) -> float:
    """``scipy.stats.wasserstein_distance`` for already sorted samples.

    The same integral of the absolute difference of the two empirical CDFs as scipy's
    ``_cdf_distance`` (p=1, unweighted); a reference sorted once serves every window.
    """
    merged = np.concatenate((u, v))
    merged.sort()
    points = merged[:-1]
    # In place where possible: at a million rows each temporary is 16 MB.
    gap = np.searchsorted(u, points, "right") / u.size
    gap -= np.searchsorted(v, points, "right") / v.size
    np.abs(gap, out=gap)
    return float(np.dot(gap, np.diff(merged)))


def _shares(counts: np.ndarray) -> np.ndarray:
    total = counts.sum()
    return counts / total if total else counts.astype(float)


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
