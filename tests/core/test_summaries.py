"""Scores from fine-bin summaries against scipy on the raw values: the bounds hold, exactly
where the module says they are exact, on data with a known shift and with none."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from bikes.core.drift import Detector
from bikes.core.summaries import (
    Bins,
    SummaryDetector,
    coarse_edges,
    fine_edges,
    fine_probabilities,
    ks_bounds,
    ks_pvalue,
    wasserstein_bounds,
)


def bins_of(values: np.ndarray, edges: np.ndarray) -> Bins:
    """What ``bikes.spark.statistics.bins`` computes, by numpy: the reference's twin."""
    values = values[np.isfinite(values)]
    bucket = np.searchsorted(edges, values, side="right")  # edges <= x: Bucketizer's bucket
    left = edges[np.maximum(bucket - 1, 0)]
    equal = (bucket > 0) & (values == left)
    size = edges.size + 1
    counts = np.bincount(bucket, minlength=size)
    at_edge = np.bincount(bucket[equal], minlength=size)
    sums = np.bincount(bucket[~equal], weights=values[~equal], minlength=size)
    return Bins(edges, counts, at_edge, sums)


def summarised(reference: np.ndarray, bins: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """Fine and 20-bin edges from exact quantiles (``method="inverted_cdf"``: a data value,
    as a quantile sketch returns)."""
    q = np.quantile(reference, fine_probabilities(bins), method="inverted_cdf")
    return (
        fine_edges(q, reference.min(), reference.max()),
        coarse_edges(q, reference.min(), reference.max()),
    )


@pytest.mark.parametrize("shift", [0.0, 0.05, 0.5])
def test_wasserstein_and_ks_lie_within_their_bounds_on_continuous_data(shift: float) -> None:
    rng = np.random.default_rng(7)
    reference = rng.gamma(2.0, 1.0, 20_000)
    current = rng.gamma(2.0, 1.0, 15_000) + shift
    edges, _ = summarised(reference)
    ref, cur = bins_of(reference, edges), bins_of(current, edges)
    low, high = wasserstein_bounds(ref, cur)
    exact = stats.wasserstein_distance(reference, current)
    assert low - 1e-12 <= exact <= high + 1e-12
    # The gap is about range / (bins * std): small against the 0.1 threshold (normed).
    assert (high - low) / reference.std() < 0.02
    ks_low, ks_high = ks_bounds(ref, cur)
    d = stats.ks_2samp(reference, current).statistic
    assert ks_low - 1e-12 <= d <= ks_high + 1e-12
    assert ks_high - ks_low <= 2 / 1000 + 1e-12  # at most one fine bin's mass per side


def test_on_discrete_values_every_value_is_an_edge_and_the_scores_are_exact() -> None:
    rng = np.random.default_rng(3)
    reference = rng.integers(0, 50, 30_000).astype(float)
    current = np.concatenate((rng.integers(5, 60, 10_000), [-3.0, 70.0])).astype(float)
    edges, _ = summarised(reference)
    ref, cur = bins_of(reference, edges), bins_of(current, edges)
    low, high = wasserstein_bounds(ref, cur)
    assert low == pytest.approx(stats.wasserstein_distance(reference, current), rel=1e-12)
    assert high == pytest.approx(low, rel=1e-12)  # nothing inside a bin on either side
    ks_low, ks_high = ks_bounds(ref, cur)
    assert ks_low == pytest.approx(stats.ks_2samp(reference, current).statistic, abs=1e-12)
    assert ks_high == pytest.approx(ks_low, abs=1e-12)


@pytest.mark.parametrize(("n1", "n2"), [(300, 200), (900, 800), (20_000, 15_000)])
def test_the_ks_pvalue_is_scipys_from_the_statistic_and_sizes(n1: int, n2: int) -> None:
    rng = np.random.default_rng(n1)
    a, b = rng.normal(0, 1, n1), rng.normal(0.1, 1, n2)
    result = stats.ks_2samp(a, b)
    assert ks_pvalue(float(result.statistic), n1, n2) == pytest.approx(result.pvalue, rel=1e-9)


def test_a_small_reference_scores_ks_exactly_and_flags_the_same() -> None:
    """At most ``bins`` reference rows: every reference value is an edge, KS is exact."""
    rng = np.random.default_rng(11)
    reference = rng.normal(0, 1, 800)
    for shift, drifts in ((0.0, False), (0.4, True)):
        current = rng.normal(shift, 1, 600)
        edges, coarse = summarised(reference)
        detector = SummaryDetector(
            "x",
            "numeric",
            size=reference.size,
            bins=bins_of(reference, edges),
            std=1.0,
            coarse=coarse,
        )
        assert detector.method == "ks"
        result = detector.score_bins(bins_of(current, edges))
        expected = Detector("x", reference, "numeric").score(current)
        assert result.score == pytest.approx(expected.score, rel=1e-9)
        assert result.drift == expected.drift == drifts


def test_the_binned_shares_match_the_value_detectors_on_the_same_edges() -> None:
    rng = np.random.default_rng(5)
    reference = rng.lognormal(0, 1, 50_000)
    current = rng.lognormal(0.3, 1, 20_000)
    edges, coarse = summarised(reference)
    detector = SummaryDetector(
        "x",
        "numeric",
        size=reference.size,
        bins=bins_of(reference, edges),
        std=float(reference.std()),
        coarse=coarse,
        method="psi",
    )
    values = Detector("x", reference, "numeric", method="psi")
    # Exact quantiles of 50,000 rows: inverted-CDF and interpolated edges differ by one value.
    assert np.allclose(detector.edges, values.edges, rtol=1e-3)
    result, expected = detector.score_bins(bins_of(current, edges)), values.score(current)
    assert np.abs(result.shares - expected.shares).max() < 1e-3
    assert result.score == pytest.approx(expected.score, rel=1e-2)
    assert result.drift == expected.drift


def test_category_counts_score_exactly_as_the_values() -> None:
    rng = np.random.default_rng(9)
    reference = rng.choice(["a", "b", "c"], 5000, p=[0.5, 0.3, 0.2]).astype(object)
    current = rng.choice(["a", "b", "d"], 3000, p=[0.4, 0.4, 0.2]).astype(object)
    for method in ("jensenshannon", "chisquare", "psi"):
        values = Detector("c", reference, "categorical", method=method)
        categories, counts = np.unique(reference, return_counts=True)
        summary = SummaryDetector(
            "c", "categorical", size=5000, categories=categories, counts=counts, method=method
        )
        keys, numbers = np.unique(current, return_counts=True)
        result, expected = summary.score_counts(keys, numbers), values.score(current)
        assert result.score == pytest.approx(expected.score, rel=1e-12, abs=1e-300)
        assert np.array_equal(result.shares, expected.shares)
        assert result.drift == expected.drift
