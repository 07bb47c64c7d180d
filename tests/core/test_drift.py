"""Drift scores against scipy's own functions, on data with a known shift and with none."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from scipy.spatial import distance

from bikes.core.drift import Detector, default_method, is_drift


@pytest.fixture(scope="module")
def rng() -> np.random.Generator:
    return np.random.default_rng(42)


def test_methods_follow_type_and_sample_size() -> None:
    assert default_method("numeric", 500) == "ks"
    assert default_method("categorical", 500) == "chisquare"
    assert default_method("binary", 1000) == "z"
    assert default_method("numeric", 1001) == "wasserstein"
    assert default_method("categorical", 50_000) == "jensenshannon"
    assert default_method("binary", 50_000) == "jensenshannon"
    assert is_drift("ks", 0.01, 0.05)
    assert not is_drift("ks", 0.2, 0.05)
    assert is_drift("wasserstein", 0.1, 0.1)
    assert not is_drift("psi", float("nan"), 0.1)


def test_scores_equal_scipy(rng: np.random.Generator) -> None:
    reference = rng.normal(0, 1, 800)
    current = rng.normal(0.3, 1, 600)
    assert Detector("x", reference, "numeric").score(current).score == pytest.approx(
        stats.ks_2samp(reference, current).pvalue
    )
    big_reference, big_current = rng.normal(0, 2, 5000), rng.normal(0.5, 2, 4000)
    wasserstein = Detector("x", big_reference, "numeric").score(big_current)
    assert wasserstein.method == "wasserstein"
    assert wasserstein.score == pytest.approx(
        stats.wasserstein_distance(big_reference, big_current) / np.std(big_reference)
    )
    categories_ref, categories_cur = rng.integers(1, 5, 900), rng.integers(1, 4, 700)
    table = np.array(
        [[np.sum(s == k) for k in (1, 2, 3, 4)] for s in (categories_ref, categories_cur)]
    )
    assert Detector("c", categories_ref, "categorical").score(
        categories_cur
    ).score == pytest.approx(stats.chi2_contingency(table, correction=False).pvalue)
    large_ref, large_cur = rng.integers(0, 6, 20_000), rng.integers(0, 7, 20_000)
    p = np.bincount(large_ref, minlength=7)[:6] / large_ref.size
    q_known = np.bincount(large_cur, minlength=7)
    q = np.append(q_known[:6], q_known[6]) / large_cur.size  # the unseen 6 in its own bin
    js = Detector("c", large_ref, "categorical").score(large_cur)
    assert js.method == "jensenshannon"
    assert js.score == pytest.approx(distance.jensenshannon(np.append(p, 0.0), q, base=2))
    tv = Detector("c", large_ref, "categorical", method="total_variation").score(large_cur)
    assert tv.score == pytest.approx(0.5 * np.abs(np.append(p, 0.0) - q).sum())


def test_z_test_equals_the_textbook_formula(rng: np.random.Generator) -> None:
    reference, current = rng.binomial(1, 0.3, 900), rng.binomial(1, 0.4, 800)
    p1, p2 = np.mean(reference == 0), np.mean(current == 0)
    pooled = (p1 * 900 + p2 * 800) / 1700
    z = (p1 - p2) / np.sqrt(pooled * (1 - pooled) * (1 / 900 + 1 / 800))
    result = Detector("b", reference, "binary").score(current)
    assert result.method == "z"
    assert result.score == pytest.approx(2 * stats.norm.sf(abs(z)))
    assert result.drift


@pytest.mark.parametrize("method", ["psi", "hellinger", "total_variation", "jensenshannon"])
def test_binned_distances_on_numeric_columns(rng: np.random.Generator, method: str) -> None:
    reference = rng.normal(0, 1, 50_000)
    same = Detector("x", reference, "numeric", method=method).score(rng.normal(0, 1, 50_000))
    moved = Detector("x", reference, "numeric", method=method).score(rng.normal(1, 1, 50_000))
    assert not same.drift
    assert moved.drift
    assert moved.score > 10 * same.score


def test_a_million_identical_rows_flag_nothing_and_a_shift_is_flagged(
    rng: np.random.Generator,
) -> None:
    size = 1_000_000
    columns = {
        "numeric": (rng.normal(10, 3, size), rng.normal(10, 3, size), "numeric"),
        "counts": (rng.poisson(4, size), rng.poisson(4, size), "numeric"),
        "category": (rng.integers(1, 13, size), rng.integers(1, 13, size), "categorical"),
        "flag": (rng.binomial(1, 0.3, size), rng.binomial(1, 0.3, size), "binary"),
    }
    for name, (reference, current, kind) in columns.items():
        result = Detector(name, reference, kind).score(current)
        assert not result.drift, (name, result)
    shifted = Detector("numeric", columns["numeric"][0], "numeric").score(
        columns["numeric"][1] + 0.6
    )
    assert shifted.drift  # 0.2 standard deviations
    assert shifted.score == pytest.approx(0.2, abs=0.01)


def test_empty_current_window_is_not_drift() -> None:
    result = Detector("x", np.arange(10.0), "numeric").score(np.array([np.nan]))
    assert not result.drift
    assert np.isnan(result.score)
    with pytest.raises(ValueError, match="unknown drift method 'energy'"):
        Detector("x", np.arange(10.0), "numeric", method="energy")


def test_wasserstein_on_sorted_samples_equals_scipy(rng: np.random.Generator) -> None:
    from bikes.core.drift import wasserstein_sorted

    for u, v in [
        (rng.normal(0, 1, 3000), rng.normal(0.2, 1.5, 2000)),
        (rng.integers(0, 5, 1000).astype(float), rng.integers(1, 7, 700).astype(float)),  # ties
        (np.array([1.0]), np.array([3.0, 4.0])),
    ]:
        assert wasserstein_sorted(np.sort(u), np.sort(v)) == pytest.approx(
            stats.wasserstein_distance(u, v), rel=1e-12
        )


def test_text_categories_drift_like_numbers(rng: np.random.Generator) -> None:
    """Categories that are strings: chi-square (small reference) and Jensen-Shannon (large)
    on their counts equal scipy's; a shifted mix is flagged, a resample of the same is not."""
    colours = np.array(["blue", "green", "red"], dtype=object)
    reference = rng.choice(colours, 800, p=[0.5, 0.3, 0.2])
    same = rng.choice(colours, 600, p=[0.5, 0.3, 0.2])
    shifted = rng.choice(colours, 600, p=[0.2, 0.3, 0.5])
    detector = Detector("colour", reference, "categorical")
    for current in (same, shifted):
        table = [[np.sum(s == c) for c in colours] for s in (reference, current)]
        assert detector.score(current).score == pytest.approx(
            stats.chi2_contingency(table, correction=False).pvalue
        )
    assert not detector.score(same).drift
    assert detector.score(shifted).drift
    big_reference = rng.choice(colours, 20_000, p=[0.5, 0.3, 0.2])
    big_shifted = np.append(rng.choice(colours, 19_000, p=[0.3, 0.3, 0.4]), ["purple"] * 1000)
    large = Detector("colour", big_reference, "categorical")
    p = np.array([np.mean(big_reference == c) for c in colours] + [0.0])
    q = np.array([np.mean(big_shifted == c) for c in colours] + [0.05])  # purple: unseen
    result = large.score(big_shifted)
    assert result.method == "jensenshannon"
    assert result.score == pytest.approx(distance.jensenshannon(p, q, base=2))
    assert result.drift
    assert not large.score(rng.choice(colours, 20_000, p=[0.5, 0.3, 0.2])).drift
    missing = np.array(["red", None, np.nan, "blue"], dtype=object)  # nulls are not categories
    assert Detector("colour", reference, "categorical").score(missing).shares.sum() == 1.0
