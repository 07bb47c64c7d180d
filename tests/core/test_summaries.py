"""Scores from fine-bin summaries against scipy on the raw values: the bounds hold, exactly
where the module says they are exact, on data with a known shift and with none."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics

from bikes.core.drift import Detector
from bikes.core.summaries import (
    Bins,
    SummaryDetector,
    auc_interval,
    coarse_from_bins,
    fine_edges,
    fine_probabilities,
    ks_bounds,
    ks_pvalue,
    log_loss_sum,
    ovr_auc_interval,
    true_class_probabilities,
    wasserstein_bounds,
    with_ends,
)


def bins_of(values: np.ndarray, edges: np.ndarray) -> Bins:
    """What ``bikes.spark.statistics.scan``'s bins are, by numpy: the reference's twin."""
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
    """Fine edges from exact quantiles (``method="inverted_cdf"``: data values, as the
    engine's sample gives), and the 20-bin edges from the reference's fine counts."""
    q = np.quantile(reference, fine_probabilities(bins), method="inverted_cdf")
    edges = fine_edges(q, reference.min(), reference.max())
    return edges, coarse_from_bins(bins_of(reference, edges))


@pytest.mark.parametrize("kind", ["continuous", "discrete", "sampled"])
def test_coarse_edges_are_the_20_quantiles_to_within_one_fine_bin(kind: str) -> None:
    """Each coarse edge is the smallest fine edge where the reference's CDF reaches k/20: on
    discrete values (every value an edge) numpy's ``inverted_cdf`` quantile itself; else its
    CDF exceeds k/20 by at most the mass of the fine bin it closes, whatever the fine edges
    (``sampled``: edges from 2% of the rows, as the Spark engine places them)."""
    rng = np.random.default_rng(11)
    reference = (
        np.round(rng.gamma(2.0, 1.0, 30_000), 1)
        if kind == "discrete"
        else rng.lognormal(0, 1, 30_000)
    )
    source = rng.choice(reference, 600) if kind == "sampled" else reference
    q = np.quantile(source, fine_probabilities(), method="inverted_cdf")
    edges = fine_edges(q, reference.min(), reference.max())
    fine = bins_of(reference, edges)
    coarse = coarse_from_bins(fine)
    assert coarse[0] == reference.min()
    assert coarse[-1] == reference.max()
    assert set(coarse) <= set(edges)  # the 20-bin counts follow from the fine ones
    expected = np.unique(np.quantile(reference, np.linspace(0, 1, 21), method="inverted_cdf"))
    if kind == "discrete":
        assert coarse.tolist() == expected.tolist()
        return
    n = reference.size
    for k, edge in zip(range(1, 20), coarse[1:-1], strict=False):
        at_most = np.count_nonzero(reference <= edge) / n
        index = int(np.searchsorted(edges, edge))
        below = np.count_nonzero(reference < edges[index - 1]) / n if index else 0.0
        # the CDF at the edge reaches k/20 and the previous fine edge's did not
        assert at_most >= k / 20 - 1e-12
        assert below < k / 20
        assert at_most - k / 20 <= fine.counts[index].item() / n + 1e-12


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


# -- classification scores ---------------------------------------------------------------------


def class_bins(
    scores: np.ndarray, truth: np.ndarray, edges: np.ndarray, classes: int
) -> np.ndarray:
    """Rows of each true class per ``Bins`` bucket of ``scores`` (what ``bikes.spark.scores``
    counts): ``(classes, edges + 1)``."""
    bucket = np.searchsorted(edges, scores, side="right")
    width = edges.size + 1
    return np.bincount(truth * width + bucket, minlength=classes * width).reshape(classes, width)


def test_auc_interval_hand_worked() -> None:
    # Positives in bins [0, 1, 1], negatives [1, 1, 0]: of the 4 pairs, 3 are ordered by the
    # bins (bin 1 over bin 0; bin 2 over bins 0 and 1) and 1 shares bin 1.
    assert auc_interval([0, 1, 1], [1, 1, 0]) == (0.875, 0.75, 1.0)
    # A bin of its own per score: the estimate is sklearn's AUC with the tie counted 1/2.
    truth, score = [0, 1, 0, 1], [0.1, 0.5, 0.5, 0.9]
    assert auc_interval([0, 1, 1], [1, 1, 0])[0] == metrics.roc_auc_score(truth, score)
    assert auc_interval([2, 0], [0, 3]) == (0.0, 0.0, 0.0)  # every positive scored lower
    assert all(np.isnan(auc_interval([0, 0], [1, 2])))  # no positive: undefined, as sklearn
    with pytest.raises(ValueError, match="same length"):
        auc_interval([1, 2], [1, 2, 3])


def test_auc_is_exact_when_the_bins_are_the_distinct_scores() -> None:
    rng = np.random.default_rng(3)
    truth = rng.integers(0, 2, 4000)
    score = np.round(rng.normal(truth * 0.7, 1.0), 1)  # many ties
    edges = np.unique(score)
    counts = class_bins(score, truth, edges, 2)
    estimate, low, high = auc_interval(counts[1], counts[0])
    assert estimate == pytest.approx(metrics.roc_auc_score(truth, score), abs=1e-12)
    assert low < estimate < high  # ties inside bins are what the interval is about


def test_auc_of_continuous_scores_on_quantile_bins_holds_sklearns() -> None:
    rng = np.random.default_rng(4)
    for shift in (0.0, 0.3, 1.5):
        truth = rng.integers(0, 2, 20000)
        score = rng.normal(truth * shift, 1.0)
        edges = fine_edges(np.quantile(score, fine_probabilities()), score.min(), score.max())
        counts = class_bins(score, truth, edges, 2)
        estimate, low, high = auc_interval(counts[1], counts[0])
        exact = metrics.roc_auc_score(truth, score)
        assert low <= exact <= high
        assert high - low < 2e-3  # about 1 / bins
        assert estimate == pytest.approx(exact, abs=1e-4)


def test_ovr_auc_is_sklearns_macro_one_vs_rest() -> None:
    rng = np.random.default_rng(5)
    truth = rng.integers(0, 3, 6000)
    # A few distinct probability rows: each column's distinct values are its bins (exact).
    table = rng.dirichlet([1, 1, 1], 12)
    rows = np.where(rng.random(6000) < 0.5, truth * 4 + rng.integers(0, 4, 6000), 0)
    scores = table[rows]
    per_column = [np.unique(scores[:, k]) for k in range(3)]
    counts = [class_bins(scores[:, k], truth, per_column[k], 3) for k in range(3)]
    expected = metrics.roc_auc_score(truth, scores, multi_class="ovr", labels=[0, 1, 2])
    estimate, low, high = ovr_auc_interval(counts)
    assert estimate == pytest.approx(expected, abs=1e-12)
    assert low < estimate < high
    # Continuous scores on quantile bins: sklearn's value is inside.
    scores = rng.dirichlet([1, 1, 1], 6000)
    scores[np.arange(6000), truth] += 0.5
    scores /= scores.sum(axis=1, keepdims=True)
    counts = []
    for k in range(3):
        column = scores[:, k]
        edges = fine_edges(np.quantile(column, fine_probabilities()), column.min(), column.max())
        counts.append(class_bins(column, truth, edges, 3))
    expected = metrics.roc_auc_score(truth, scores, multi_class="ovr", labels=[0, 1, 2])
    estimate, low, high = ovr_auc_interval(counts)
    assert low <= expected <= high
    assert estimate == pytest.approx(expected, abs=1e-3)
    # A class absent from the rows: sklearn's macro mean is NaN, and so is ours.
    counts[2][2] = 0
    assert all(np.isnan(ovr_auc_interval(counts)))
    with pytest.raises(ValueError, match="must be"):
        ovr_auc_interval([np.zeros((2, 4)), np.zeros((3, 4)), np.zeros((3, 4))])


def test_log_loss_sum_is_sklearns_with_its_clipping() -> None:
    rng = np.random.default_rng(6)
    truth = rng.integers(0, 2, 500)
    p = rng.random(500)
    p[:5] = [0.0, 1.0, 1e-20, 1 - 1e-17, 0.5]  # clipped to [eps, 1 - eps]
    truth[:4] = [1, 0, 1, 0]  # the worst cases: a certain, wrong score
    binary = log_loss_sum(true_class_probabilities(p, truth)) / p.size
    expected = metrics.log_loss(truth, np.column_stack([1 - p, p]), labels=[0, 1])
    assert binary == pytest.approx(expected, rel=1e-9, abs=0)
    assert binary > 4 * 36 / 500  # the four clipped terms (-log(eps) = 36) are in
    truth = rng.integers(0, 4, 800)
    table = rng.dirichlet([0.3] * 4, 800)
    table[0] = [1.0, 0.0, 0.0, 0.0]
    truth[0] = 2
    multiclass = log_loss_sum(true_class_probabilities(table, truth)) / truth.size
    expected = metrics.log_loss(truth, table, labels=[0, 1, 2, 3])
    assert multiclass == pytest.approx(expected, rel=1e-9, abs=0)


@pytest.mark.parametrize(
    "case", ["continuous", "ties_at_the_ends", "edges_on_the_ends", "no_inner_edge", "constant"]
)
def test_inner_bins_closed_by_the_extremes_are_the_bins_on_the_fine_edges(case: str) -> None:
    """Counting on a sample's inner quantiles, then adding the exact extremes (``with_ends``),
    gives the bins numpy counts on ``fine_edges(quantiles, min, max)`` directly: the same
    edges, counts and rows on edges, sums to rounding (exactly 0 where nothing is inside)."""
    rng = np.random.default_rng(5)
    values = rng.normal(size=5_000)
    if case == "ties_at_the_ends":  # a clipped column: many rows on both extremes
        values = np.clip(np.round(values, 2), -1.5, 1.2)
    elif case == "constant":
        values = np.full(300, 0.25)
    sample = rng.choice(values, 400)
    q = np.quantile(sample, fine_probabilities(100), method="inverted_cdf")
    if case == "edges_on_the_ends":  # the sample holds both extremes among its quantiles
        q[1], q[-2] = values.min(), values.max()
    if case == "no_inner_edge":  # a sample without a finite value: NaN quantiles
        q[:] = np.nan
    inner = np.unique(q[1:-1][np.isfinite(q[1:-1])])
    low, high = values.min(), values.max()
    on_inner = (
        bins_of(values, inner)
        if inner.size
        else Bins(inner, np.array([values.size]), np.array([0]), np.array([values.sum()]))
    )
    closed = with_ends(
        on_inner,
        low,
        int(np.count_nonzero(values == low)),
        high,
        int(np.count_nonzero(values == high)),
    )
    expected = bins_of(values, fine_edges(q, low, high))
    assert closed.edges.tolist() == expected.edges.tolist()
    assert closed.counts.tolist() == expected.counts.tolist()
    assert closed.at_edge.tolist() == expected.at_edge.tolist()
    np.testing.assert_allclose(closed.inner_sums, expected.inner_sums, rtol=1e-12, atol=1e-10)
    empty = closed.counts == closed.at_edge
    assert not closed.inner_sums[empty].any()  # nothing inside: exactly 0
