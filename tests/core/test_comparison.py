from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn import metrics

from bikes.core.comparison import (
    Bootstrap,
    HourBand,
    Slicing,
    paired_difference_interval,
    segments,
    slice_table,
)
from bikes.core.metrics import Labels, SklearnMetric

RMSE = SklearnMetric(name="root_mean_squared_error")
R2 = SklearnMetric(name="r2_score")


@pytest.fixture
def truth() -> np.ndarray:
    return np.random.default_rng(1).poisson(200, size=2000).astype(float)


def test_interval_matches_scipy_on_the_same_resamples(truth: np.ndarray) -> None:
    rng = np.random.default_rng(2)
    baseline = truth + rng.normal(0, 30, truth.size)
    candidate = truth + rng.normal(0, 25, truth.size)
    settings = Bootstrap(resamples=200, seed=7)
    interval = paired_difference_interval(RMSE, truth, candidate, baseline, settings)

    def difference(t: np.ndarray, c: np.ndarray, b: np.ndarray) -> float:
        return metrics.root_mean_squared_error(t, c) - metrics.root_mean_squared_error(t, b)

    reference = stats.bootstrap(
        (truth, candidate, baseline),
        difference,
        paired=True,
        vectorized=False,
        n_resamples=200,
        method="percentile",
        rng=np.random.default_rng(7),
    ).confidence_interval
    assert (interval.low, interval.high) == pytest.approx((reference.low, reference.high))
    assert interval.difference == pytest.approx(difference(truth, candidate, baseline))
    assert interval.low < interval.difference < interval.high


def test_a_real_improvement_is_beyond_noise(truth: np.ndarray) -> None:
    rng = np.random.default_rng(3)
    baseline = truth + rng.normal(0, 30, truth.size)
    candidate = truth + (baseline - truth) * 0.8  # every error shrinks by 20%
    interval = paired_difference_interval(
        RMSE, truth, candidate, baseline, Bootstrap(resamples=100)
    )
    assert interval.high < 0
    assert interval.better_beyond_noise(higher_is_better=False)
    r2 = paired_difference_interval(R2, truth, candidate, baseline, Bootstrap(resamples=100))
    assert r2.better_beyond_noise(higher_is_better=True)


def test_a_tiny_random_gain_is_within_noise(truth: np.ndarray) -> None:
    rng = np.random.default_rng(4)
    baseline = truth + rng.normal(0, 30, truth.size)
    candidate = truth + rng.normal(0, 29.7, truth.size)  # 1% smaller errors: lost in noise
    interval = paired_difference_interval(
        RMSE, truth, candidate, baseline, Bootstrap(resamples=100)
    )
    assert interval.low < 0 < interval.high
    assert not interval.better_beyond_noise(higher_is_better=False)


def test_identical_models_have_a_zero_interval(truth: np.ndarray) -> None:
    predictions = truth + 10
    interval = paired_difference_interval(
        RMSE, truth, predictions, predictions, Bootstrap(resamples=20)
    )
    assert (interval.difference, interval.low, interval.high) == (0.0, 0.0, 0.0)
    assert not interval.better_beyond_noise(higher_is_better=False)


def _frame(size: int = 400) -> pd.DataFrame:
    hours = np.arange(size) % 24
    return pd.DataFrame({"hr": hours, "workingday": (np.arange(size) // 24) % 2})


def test_segments_cover_values_and_hour_bands() -> None:
    frame = _frame()
    slicing = Slicing(
        columns=["workingday"], hour_column="hr", hour_bands={"rush": HourBand(first=17, last=18)}
    )
    found = {(column, value): int(mask.sum()) for column, value, mask in segments(frame, slicing)}
    assert found == {
        ("workingday", "0"): int((frame["workingday"] == 0).sum()),
        ("workingday", "1"): int((frame["workingday"] == 1).sum()),
        ("hour_band", "rush"): 2 * 16,  # 16 whole days in 400 hours, two rush hours a day
    }


def test_a_segment_regression_fails_even_when_the_average_improves() -> None:
    frame = _frame(2400)
    rng = np.random.default_rng(5)
    truth = rng.poisson(100, len(frame)).astype(float)
    baseline = truth + rng.normal(0, 20, len(frame))
    rush = frame["hr"].between(17, 18).to_numpy()
    candidate = np.where(
        rush, truth + rng.normal(0, 40, len(frame)), truth + rng.normal(0, 10, len(frame))
    )
    assert RMSE.score(truth, candidate) < RMSE.score(truth, baseline)
    slicing = Slicing(
        columns=[],
        hour_column="hr",
        hour_bands={"rush": HourBand(first=17, last=18), "rest": HourBand(first=0, last=16)},
        max_relative_regression=0.25,
    )
    table = slice_table(frame, truth, candidate, baseline, RMSE, slicing).set_index("value")
    assert table.loc["rush", "verdict"] == "failed"
    assert table.loc["rush", "relative_change"] == pytest.approx(
        RMSE.score(truth[rush], candidate[rush]) / RMSE.score(truth[rush], baseline[rush]) - 1
    )
    assert table.loc["rest", "verdict"] == "passed"


def test_small_segments_and_report_only_never_fail() -> None:
    frame = _frame(48)
    truth = np.full(len(frame), 10.0)
    slicing = Slicing(
        columns=["workingday"], hour_bands={}, max_relative_regression=0.1, min_rows=100
    )
    table = slice_table(frame, truth, truth + 5, truth + 1, RMSE, slicing)
    assert set(table["verdict"]) == {"passed"}
    report_only = slice_table(
        frame, truth, truth + 5, truth + 1, RMSE, Slicing(columns=["workingday"])
    )
    assert set(report_only["verdict"]) == {"passed"}
    no_baseline = slice_table(frame, truth, truth + 5, None, RMSE, slicing)
    assert no_baseline["baseline"].isna().all()


def test_hour_bands_need_an_hour_column_and_columns_default_to_the_contracts() -> None:
    frame = _frame(48)
    assert [column for column, _, _ in segments(frame, Slicing())] == []
    resolved = Slicing().resolved(["workingday"], "r2_score")
    assert (resolved.columns, resolved.metric) == (["workingday"], "r2_score")
    assert Slicing(columns=[]).resolved(["workingday"], "r2_score").columns == []
    assert Slicing(columns=["a"], hour_column="hr").needed_columns == ["a", "hr"]


def test_interval_on_classifier_scores_matches_scipy_on_the_same_resamples() -> None:
    """ROC AUC of two models' scores: rows resampled whole, labels kept as text."""
    rng = np.random.default_rng(8)
    truth = rng.choice(["churn", "stay"], 600)
    signal = (truth == "churn").astype(float)
    candidate = signal * 0.4 + rng.random(600) * 0.6
    baseline = signal * 0.3 + rng.random(600) * 0.7
    labels = Labels.of(["churn", "stay"], "churn")
    auc = SklearnMetric(name="roc_auc_score")
    interval = paired_difference_interval(
        auc, truth, candidate, baseline, Bootstrap(resamples=200, seed=3), labels
    )

    def difference(t: np.ndarray, c: np.ndarray, b: np.ndarray) -> float:
        return metrics.roc_auc_score(t, c) - metrics.roc_auc_score(t, b)

    churn = (truth == "churn").astype(float)  # scipy resamples numbers only
    reference = stats.bootstrap(
        (churn, candidate, baseline),
        difference,
        paired=True,
        vectorized=False,
        n_resamples=200,
        method="percentile",
        rng=np.random.default_rng(3),
    ).confidence_interval
    assert (interval.low, interval.high) == pytest.approx((reference.low, reference.high))
    assert interval.difference == pytest.approx(difference(churn, candidate, baseline))
    assert interval.better_beyond_noise(higher_is_better=True)


def test_multiclass_scores_are_resampled_as_whole_rows() -> None:
    rng = np.random.default_rng(9)
    truth = rng.integers(0, 3, 300)
    good = np.eye(3)[truth] * 0.5 + rng.random((300, 3))
    good /= good.sum(axis=1, keepdims=True)
    flat = np.full((300, 3), 1 / 3)
    labels = Labels.of([0, 1, 2])
    loss = SklearnMetric(name="log_loss")
    interval = paired_difference_interval(loss, truth, good, flat, Bootstrap(resamples=50), labels)
    assert interval.difference == pytest.approx(
        metrics.log_loss(truth, good) - metrics.log_loss(truth, flat)
    )
    assert interval.better_beyond_noise(higher_is_better=False)


def test_slices_of_a_classifier_leave_undefined_segments_empty() -> None:
    frame = pd.DataFrame({"region": ["north"] * 40 + ["south"] * 40})
    truth = np.array([0, 1] * 20 + [1] * 40)  # the south holds one class only
    scores = np.linspace(0, 1, 80)
    auc = SklearnMetric(name="roc_auc_score")
    table = slice_table(
        frame, truth, scores, scores[::-1], auc, Slicing(columns=["region"]), Labels.of([0, 1])
    ).set_index("value")
    south = table.loc["south"]
    assert south["candidate"] is None or np.isnan(south["candidate"])
    assert south["verdict"] == "passed"
    north = (frame["region"] == "north").to_numpy()
    assert table.loc["north", "candidate"] == pytest.approx(
        metrics.roc_auc_score(truth[north], scores[north])
    )


MAE = SklearnMetric(name="mean_absolute_error")


def test_mae_interval_equals_scipy_on_the_paired_differences(truth: np.ndarray) -> None:
    """An independent route to the same interval: MAE(c) - MAE(b) is the mean of the paired
    differences of absolute errors, so scipy's one-sample bootstrap of ``np.mean`` on those
    differences, with the same seed and resamples, draws the same rows (scipy draws one index
    matrix either way) and must agree up to the order of the floating-point sums: 1e-9."""
    rng = np.random.default_rng(5)
    baseline = truth + rng.normal(0, 30, truth.size)
    candidate = truth + rng.normal(0, 31, truth.size)
    interval = paired_difference_interval(
        MAE, truth, candidate, baseline, Bootstrap(resamples=300, seed=7)
    )
    differences = np.abs(candidate - truth) - np.abs(baseline - truth)
    reference = stats.bootstrap(
        (differences,),
        np.mean,
        n_resamples=300,
        method="percentile",
        rng=np.random.default_rng(7),
    ).confidence_interval
    assert interval.low == pytest.approx(reference.low, abs=1e-9)
    assert interval.high == pytest.approx(reference.high, abs=1e-9)
    assert interval.difference == pytest.approx(differences.mean(), abs=1e-9)


def test_interval_agrees_with_the_normal_theory_interval(truth: np.ndarray) -> None:
    """Independent of any resampling: for a mean of 2,000 paired differences the bootstrap's
    percentile interval and mean +- 1.96 standard errors estimate the same interval. They
    differ by the bootstrap's Monte Carlo error (with 2,000 resamples the standard error of a
    2.5% percentile is about 0.06 standard errors of the mean) and the data's small skew:
    tolerance 0.25 standard errors, about four Monte Carlo errors."""
    rng = np.random.default_rng(6)
    baseline = truth + rng.normal(0, 30, truth.size)
    candidate = truth + rng.normal(2, 30, truth.size)  # slightly biased: a real shift
    interval = paired_difference_interval(
        MAE, truth, candidate, baseline, Bootstrap(resamples=2000, seed=3)
    )
    differences = np.abs(candidate - truth) - np.abs(baseline - truth)
    error = differences.std(ddof=1) / np.sqrt(differences.size)
    z = stats.norm.ppf(0.975)
    assert interval.low == pytest.approx(differences.mean() - z * error, abs=0.25 * error)
    assert interval.high == pytest.approx(differences.mean() + z * error, abs=0.25 * error)


def test_errors_grown_by_a_constant_give_that_constant_in_every_resample(
    truth: np.ndarray,
) -> None:
    """Hand-worked: every baseline error positive and each candidate error 3 larger, so every
    resample's MAE difference is exactly 3 and so is the interval; scaled by 1.02, every
    resample's RMSE is 2% larger, and the interval is 2% of the baseline's RMSE interval."""
    rng = np.random.default_rng(8)
    errors = rng.uniform(5, 60, truth.size)
    baseline, shifted = truth + errors, truth + errors + 3.0
    interval = paired_difference_interval(MAE, truth, shifted, baseline, Bootstrap(resamples=50))
    assert (interval.difference, interval.low, interval.high) == pytest.approx((3, 3, 3))
    scaled = truth + errors * 1.02
    settings = Bootstrap(resamples=50, seed=9)
    grown = paired_difference_interval(RMSE, truth, scaled, baseline, settings)
    own = paired_difference_interval(RMSE, truth, baseline, truth, settings)  # RMSE_b - 0
    assert grown.low == pytest.approx(0.02 * own.low)
    assert grown.high == pytest.approx(0.02 * own.high)
