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
  reference's 20-quantile edges like ``drift.Detector``; here each is the smallest fine edge
  at which the reference's exact CDF reaches ``k/20`` (``coarse_from_bins``), so its rank
  error is at most one fine bin's mass (about 1/1000 of the rows; exact when every value is
  an edge): the shares on them are exact counts, so each share differs from the pandas
  engine's by at most two fine bins' mass (plus the interpolation ``np.quantile`` does
  between two values).
- Where the fine edges come from does not enter any bound: they are quantiles of a uniform
  sample of the reference (``bikes.spark.statistics.sample_quantiles``), so that each fine
  bin holds about a thousandth of the rows, with the exact minimum and maximum at the ends.
- Categorical columns: exact category counts, scored by ``Detector.score_counts`` itself.
"""

from __future__ import annotations

import dataclasses
import math
import typing as T

import numpy as np
import numpy.typing as npt
from scipy import stats
from scipy.stats import _stats_py

from bikes.core.drift import BINS, SMALL_SAMPLE, Detector, DriftResult, Kind

FINE_BINS = 1000
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


def coarse_from_bins(reference: Bins) -> np.ndarray:
    """The 20 bins' edges from the reference's exact fine counts: for each ``q = k/20``, the
    smallest fine edge at which the reference's CDF reaches ``q`` (``np.quantile``'s
    ``inverted_cdf`` when every value is an edge; otherwise the true quantile lies in the
    fine bin just left of the edge, so an edge's CDF exceeds ``q`` by at most that bin's
    mass). The outer edges are the reference's minimum and maximum (its first and last fine
    edges), as ``drift._quantile_edges`` has them. Integer arithmetic: no rounding decides."""
    edges = reference.edges
    # rows <= e_i for each fine edge i: rows below bucket i+1 plus those on its left edge
    below = np.cumsum(reference.counts)[:-1]
    upto = below + reference.at_edge[1:]
    n = int(reference.size)
    picked = [edges[0]]
    for k in range(1, BINS):
        index = int(np.searchsorted(BINS * upto, k * n, side="left"))
        picked.append(edges[min(index, edges.size - 1)])
    picked.append(edges[-1])
    return _distinct_edges(np.asarray(picked, dtype=float), edges[0], edges[-1])


def _distinct_edges(picked: np.ndarray, minimum: float, maximum: float) -> np.ndarray:
    found = np.unique(np.clip(picked, minimum, maximum))
    if found.size < 2:
        found = np.array([found[0] - 0.5, found[0] + 0.5])
    return found


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


def with_ends(
    inner: Bins, minimum: float, at_minimum: int, maximum: float, at_maximum: int
) -> Bins:
    """``inner``, counted on edges that lie within ``[minimum, maximum]`` (quantiles of a
    sample), with the exact ``minimum`` and ``maximum`` of the same values added as the first
    and last edges: the bins ``fine_edges(quantiles, minimum, maximum)`` would have had.

    It lets one pass count the values on the inner edges while finding the extremes: below
    the first inner edge every value is at least ``minimum`` (``at_minimum`` of them equal to
    it), above the last one at most ``maximum`` (``at_maximum`` equal), so the outer buckets
    split without the values. A bucket with no value strictly inside keeps a sum of exactly
    0 (the subtraction could leave a rounding residue)."""
    edges = inner.edges
    counts, at_edge, sums = inner.counts.copy(), inner.at_edge.copy(), inner.inner_sums.copy()
    if not edges.size or edges[0] > minimum:  # bucket 0 becomes [minimum, e_0)
        edges = np.concatenate(([minimum], edges))
        counts = np.concatenate(([0], counts))
        at_edge = np.concatenate(([0], at_minimum, at_edge[1:]), axis=None)
        sums = np.concatenate(([0.0], [sums[0] - at_minimum * minimum], sums[1:]))
    if maximum > edges[-1]:  # the last bucket [e_m, inf) splits at maximum
        edges = np.concatenate((edges, [maximum]))
        counts = np.concatenate((counts[:-1], [counts[-1] - at_maximum, at_maximum]))
        at_edge = np.concatenate((at_edge, [at_maximum]))
        sums = np.concatenate((sums[:-1], [sums[-1] - at_maximum * maximum, 0.0]))
    sums[counts == at_edge] = 0.0
    return Bins(edges, counts.astype(np.int64), at_edge.astype(np.int64), sums)


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


# -- classification scores: ROC AUC and log loss from per-bin counts and a sum ------------------
#
# A distributed engine cannot rank every score on one machine, but it can count, per class,
# the rows whose score falls in each fine bin (ascending bins, the ``Bins`` buckets), and sum
# the log loss's terms. AUC is the share of (positive, negative) pairs the score orders
# rightly, ties counting one half (Mann-Whitney, what ``sklearn.metrics.roc_auc_score``
# computes). Pairs in different bins are ordered by the bins; only pairs sharing a bin are
# unknown: counted as 0 they give the lower bound, as 1 the upper, as 1/2 the estimate, which
# is the exact AUC when each bin holds one distinct score (a bin's rows are then all tied).
# The gap ``high - low`` is the share of pairs sharing a bin: about ``1 / bins`` on quantile
# bins of a continuous score.


def auc_interval(
    positive_counts: T.Sequence[float] | np.ndarray,
    negative_counts: T.Sequence[float] | np.ndarray,
) -> tuple[float, float, float]:
    """Binary ROC AUC as ``(estimate, low, high)`` from the positives' and negatives' counts
    per ascending score bin (see above); NaN when either side is empty, as sklearn answers
    (with a warning) when one class only is present."""
    positives = np.asarray(positive_counts, dtype=float)
    negatives = np.asarray(negative_counts, dtype=float)
    if positives.ndim != 1 or positives.shape != negatives.shape:
        raise ValueError(
            f"auc_interval: counts per bin of the same length needed, not shapes "
            f"{positives.shape} and {negatives.shape}"
        )
    pairs = float(positives.sum()) * float(negatives.sum())
    if pairs == 0:
        nan = float("nan")
        return nan, nan, nan
    below = np.cumsum(negatives) - negatives  # negatives in strictly lower bins
    ordered = float(np.dot(positives, below))
    tied = float(np.dot(positives, negatives))
    return (ordered + tied / 2) / pairs, ordered / pairs, (ordered + tied) / pairs


def ovr_auc_interval(
    counts: T.Sequence[np.ndarray],
) -> tuple[float, float, float]:
    """Multiclass one-vs-rest macro ROC AUC as ``(estimate, low, high)``, as
    ``roc_auc_score(multi_class="ovr", average="macro")``: ``counts[k][t, b]`` is the rows of
    true class ``t`` whose class-``k`` score is in bin ``b`` (classes in the score columns'
    order; each column may have its own bins). Class ``k``'s positives are its own rows, its
    negatives every other class's; the mean of the per-class intervals bounds the mean of the
    per-class AUCs. A class absent from the rows makes it NaN, as sklearn's mean does."""
    if not counts:
        raise ValueError("ovr_auc_interval: no classes")
    intervals = []
    for k, table in enumerate(counts):
        table = np.asarray(table, dtype=float)
        if table.ndim != 2 or table.shape[0] != len(counts):
            raise ValueError(
                f"ovr_auc_interval: class {k}'s counts must be (classes={len(counts)}, bins), "
                f"not {table.shape}"
            )
        positives = table[k]
        intervals.append(auc_interval(positives, table.sum(axis=0) - positives))
    estimate, low, high = np.mean(np.asarray(intervals), axis=0)
    return float(estimate), float(low), float(high)


LOG_LOSS_EPS = float(np.finfo(np.float64).eps)  # sklearn clips to [eps, 1 - eps] of float64


def true_class_probabilities(scores: npt.ArrayLike, truth: npt.ArrayLike) -> np.ndarray:
    """Each row's probability of its true class, as ``sklearn.metrics.log_loss`` reads it:
    ``scores`` is ``(rows, classes)`` and ``truth`` the class index per row; or ``scores`` is
    the positive class's probability ``(rows,)`` and ``truth`` 1 for the positive class, 0
    for the other (sklearn's ``[1 - p, p]``: ``1 - p`` is taken before clipping, as there)."""
    table = np.asarray(scores, dtype=float)
    index = np.asarray(truth, dtype=np.int64)
    if table.ndim == 1:
        return np.where(index == 1, table, 1 - table)
    return table[np.arange(table.shape[0]), index]


def log_loss_sum(true_probabilities: npt.ArrayLike) -> float:
    """The sum of the log loss's terms ``-log(clip(p, eps, 1 - eps))`` over rows (sklearn
    1.9's ``_log_loss``: clipped, not renormalised): sums of partitions add up, and
    ``sum / rows`` is ``sklearn.metrics.log_loss``."""
    clipped = np.clip(np.asarray(true_probabilities, dtype=float), LOG_LOSS_EPS, 1 - LOG_LOSS_EPS)
    return float(-np.log(clipped).sum())
