"""Drift scores from per-column summaries instead of raw values: what a distributed engine
(``bikes.spark``) can compute without bringing rows to the driver.

A numeric column is summarised on *fine bins*: about a thousand edges, the reference's
approximate quantiles with its exact minimum and maximum, and on each side (reference,
current) exact counts per bin, the count equal to each bin's left edge, and the sum of the
values strictly inside each bin. From those, per bin, the integral of each empirical CDF is
exact; the CDF at every edge is exact; only where a CDF goes *inside* a bin is unknown, and
it is bounded by the bin's inner mass. Hence:

- Wasserstein (normed by the reference's exact standard deviation): the estimate is
  ``sum_i |integral of (F_ref - F_cur) over bin i|``, exact whenever the CDF difference keeps
  its sign inside each bin, and always within ``[estimate, upper]`` where
  ``upper = sum_i width_i * max|F_ref - F_cur| bound in bin i`` — both returned. For a
  continuous column the gap is at most about ``range / (bins * std)`` (0.004 for a range of
  four standard deviations and 1000 bins); on a discrete one (every value an edge) it is 0.
- Kolmogorov-Smirnov: the sup of ``|F_ref - F_cur|`` over the edges and their left limits
  (attained, so a lower bound), and an upper bound adding each bin's inner masses; exact when
  the reference has no value strictly inside a bin (a reference of at most ``bins`` rows).
  The p-value follows ``scipy.stats.ks_2samp``'s own (exact up to 10,000 rows, else Smirnov's
  asymptotic law) from the statistic and the two sizes.
- PSI, Hellinger, total variation, Jensen-Shannon and the report's 20 binned shares use the
  reference's 20-quantile edges like ``drift.Detector``, but these edges are approximate
  quantiles (rank error at most ``relative_error * rows`` plus one row per partition, the
  sketch's guarantee: ``bikes.spark.statistics.sketches``): the shares on them are exact
  counts, so each share differs from the pandas engine's by at most twice the rank error in
  share (plus the interpolation ``np.quantile`` does between two values).
- Categorical columns: exact category counts, scored by ``Detector.score_counts`` itself.
"""

from __future__ import annotations

import dataclasses
import math
import typing as T

import numpy as np
from scipy import stats
from scipy.stats import _stats_py

from bikes.core.drift import BINS, SMALL_SAMPLE, Detector, DriftResult, Kind

FINE_BINS = 1000
RELATIVE_ERROR = 5e-4  # of the quantile sketch: a rank error of at most 0.05% of the rows
SHARE_METHODS = frozenset({"psi", "hellinger", "total_variation", "jensenshannon"})
MAX_AUTO_N = 10000  # as scipy.stats.ks_2samp's method="auto"


def fine_probabilities(bins: int = FINE_BINS) -> list[float]:
    """The quantile probabilities of the fine edges; they include the 20-bin ones."""
    if bins % BINS:
        raise ValueError(f"fine bins must be a multiple of {BINS}, not {bins}")
    return [float(p) for p in np.linspace(0, 1, bins + 1)]


def fine_edges(quantiles: T.Sequence[float], minimum: float, maximum: float) -> np.ndarray:
    """Sorted distinct edges: the quantiles, the exact minimum and maximum at the ends."""
    inner = np.asarray(quantiles, dtype=float)[1:-1]
    inner = inner[(inner > minimum) & (inner < maximum)]
    return np.unique(np.concatenate(([minimum], inner, [maximum])))


def coarse_edges(quantiles: T.Sequence[float], minimum: float, maximum: float) -> np.ndarray:
    """The 20 bins' edges from the fine quantiles, as ``drift._quantile_edges`` shapes them:
    a subset of the fine edges, so both sides' 20-bin counts follow from the fine counts."""
    values = np.asarray(quantiles, dtype=float)
    step = (values.size - 1) // BINS
    picked = values[::step].copy()
    picked[0], picked[-1] = minimum, maximum
    edges = np.unique(np.clip(picked, minimum, maximum))
    if edges.size < 2:
        edges = np.array([edges[0] - 0.5, edges[0] + 0.5])
    return edges


@dataclasses.dataclass(frozen=True)
class Bins:
    """One side of a numeric column on the reference's fine edges ``e_0 < ... < e_m``.

    Bucket 0 is ``(-inf, e_0)``, bucket ``j`` in ``1..m`` is ``[e_(j-1), e_j)`` and bucket
    ``m+1`` is ``[e_m, +inf)``; per bucket: the rows, those equal to its left edge, and the sum
    of the others (strictly inside). Only finite values count, as in ``drift.Detector``.
    """

    edges: np.ndarray
    counts: np.ndarray
    at_edge: np.ndarray
    inner_sums: np.ndarray

    @property
    def size(self) -> int:
        return int(self.counts.sum())

    @classmethod
    def from_buckets(
        cls,
        edges: np.ndarray,
        rows: T.Iterable[tuple[int, int, int, float]],
    ) -> Bins:
        """From ``(bucket, rows, rows at the left edge, sum strictly inside)`` tuples, the
        aggregation's output (absent buckets are empty)."""
        size = edges.size + 1
        counts = np.zeros(size, dtype=np.int64)
        at_edge = np.zeros(size, dtype=np.int64)
        sums = np.zeros(size)
        for bucket, count, equal, inner in rows:
            counts[bucket] += count
            at_edge[bucket] += equal
            sums[bucket] += inner
        return cls(edges, counts, at_edge, sums)

    def cdf(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per bucket: the CDF just left of its left edge, at it, and the inner mass."""
        n = max(self.size, 1)
        before = np.concatenate(([0], np.cumsum(self.counts)[:-1])) / n
        at = before + self.at_edge / n
        inner = (self.counts - self.at_edge) / n
        return before, at, inner

    def integrals(self) -> np.ndarray:
        """Per bucket ``1..m``, the exact integral of the CDF over it."""
        n = max(self.size, 1)
        _, at, _ = self.cdf()
        left, right = self.edges[:-1], self.edges[1:]
        inside = (self.counts - self.at_edge)[1:-1]
        integral: np.ndarray = (right - left) * at[1:-1] + (
            inside * right - self.inner_sums[1:-1]
        ) / n
        return integral

    def outer(self) -> tuple[float, float]:
        """The exact ``integral of F below e_0`` and ``of 1 - F above e_m`` (beyond the
        reference's range, where the reference's CDF is 0 or 1)."""
        n = max(self.size, 1)
        below = (self.counts[0] * self.edges[0] - self.inner_sums[0]) / n
        above_rows = self.counts[-1] - self.at_edge[-1]
        above = (self.inner_sums[-1] - above_rows * self.edges[-1]) / n
        return float(max(below, 0.0)), float(max(above, 0.0))

    def coarse_counts(self, coarse: np.ndarray) -> np.ndarray:
        """Rows per 20-bin (``drift.Detector._binned``: outer bins take what is beyond)."""
        cumulative = np.concatenate(([0], np.cumsum(self.counts)))  # rows below bucket j
        below = [int(cumulative[np.searchsorted(self.edges, e) + 1]) for e in coarse[1:-1]]
        return np.asarray(np.diff(np.concatenate(([0], below, [self.size]))))


def wasserstein_bounds(reference: Bins, current: Bins) -> tuple[float, float]:
    """The raw Wasserstein-1 distance's estimate and upper bound (module docstring)."""
    gap = reference.integrals() - current.integrals()
    _, ref_at, ref_inner = reference.cdf()
    _, cur_at, cur_inner = current.cdf()
    difference = (ref_at - cur_at)[1:-1]
    low, high = difference - cur_inner[1:-1], difference + ref_inner[1:-1]
    widths = np.diff(reference.edges)
    below, above = current.outer()
    estimate = float(np.abs(gap).sum()) + below + above
    upper = float(np.dot(widths, np.maximum(np.abs(low), np.abs(high)))) + below + above
    return estimate, max(upper, estimate)


def ks_bounds(reference: Bins, current: Bins) -> tuple[float, float]:
    """The two-sample KS statistic's attained lower bound and its upper bound."""
    ref_before, ref_at, ref_inner = reference.cdf()
    cur_before, cur_at, cur_inner = current.cdf()
    points = np.concatenate((np.abs(ref_before - cur_before), np.abs(ref_at - cur_at)))
    estimate = float(points.max())
    difference = ref_at - cur_at
    inside = np.maximum(np.abs(difference - cur_inner), np.abs(difference + ref_inner))
    return estimate, max(estimate, float(inside.max()))


def ks_pvalue(statistic: float, n1: int, n2: int) -> float:
    """``scipy.stats.ks_2samp(...).pvalue`` (two-sided, ``method="auto"``) from the statistic
    and the sizes: it depends on nothing else."""
    mode = "exact" if max(n1, n2) <= MAX_AUTO_N else "asymp"
    if mode == "exact":
        success, _, prob = _stats_py._attempt_exact_2kssamp(  # scipy's own exact path
            n1, n2, math.gcd(n1, n2), statistic, "two-sided"
        )
        if success:
            return float(np.clip(prob, 0, 1))
    m, n = sorted([float(n1), float(n2)], reverse=True)
    return float(np.clip(stats.kstwo.sf(statistic, np.round(m * n / (m + n))), 0, 1))


class SummaryDetector(Detector):
    """A ``Detector`` prepared from summaries: the same attributes the report and the job read
    (``kind``, ``method``, ``threshold``, ``edges``, ``reference_shares``, ``categories``...),
    scoring a current ``Bins`` (numeric) or category counts (others).

    ``bounds[column]`` of the last score: the interval the exact score lies in (numeric
    Wasserstein and KS; equal ends when exact)."""

    def __init__(
        self,
        column: str,
        kind: Kind,
        *,
        size: int,
        method: str | None = None,
        threshold: float | None = None,
        small_sample: int = SMALL_SAMPLE,
        bins: Bins | None = None,
        std: float = 0.0,
        coarse: np.ndarray | None = None,
        categories: np.ndarray | None = None,
        counts: np.ndarray | None = None,
    ) -> None:
        self._prepare(column, kind, size, method, threshold, small_sample)
        self.bounds: tuple[float, float] = (float("nan"), float("nan"))
        if kind == "numeric":
            if bins is None or coarse is None:
                raise ValueError(f"{column}: a numeric summary needs its bins and edges")
            if self.method in {"chisquare", "z"}:
                raise ValueError(f"{column}: {self.method} is for categories, not numbers")
            self.bins = bins
            self.std = std
            self.edges = coarse
            self.reference_shares = _shares(bins.coarse_counts(coarse))
        else:
            self.categories = np.asarray(categories if categories is not None else [])
            self.counts = np.asarray(counts if counts is not None else [], dtype=np.int64)
            self.reference_shares = _shares(np.append(self.counts, 0))

    def score_bins(self, current: Bins) -> DriftResult:
        """A numeric window's verdict from its bins; ``self.bounds`` holds the score's
        interval (p-values: from the KS statistic's interval)."""
        if current.size == 0 or self.size == 0:
            self.bounds = (float("nan"), float("nan"))
            return DriftResult(self.column, self.method, float("nan"), self.threshold, False)
        shares = _shares(current.coarse_counts(self.edges))
        if self.method == "wasserstein":
            low, high = wasserstein_bounds(self.bins, current)
            if self.std > 0:
                value, self.bounds = low / self.std, (low / self.std, high / self.std)
            else:
                value = float(low > 0)
                self.bounds = (value, value)
        elif self.method == "ks":
            low, high = ks_bounds(self.bins, current)
            value = ks_pvalue(low, self.size, current.size)
            self.bounds = (ks_pvalue(high, self.size, current.size), value)
        else:
            value = self._statistic(np.array([]), None, shares)
            self.bounds = (float("nan"), float("nan"))  # rank error of the edges (docstring)
        return self._verdict(value, shares)


def _shares(counts: np.ndarray) -> np.ndarray:
    total = counts.sum()
    return counts / total if total else counts.astype(float)
