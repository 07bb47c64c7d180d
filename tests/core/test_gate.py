"""The gate's judgement on plain values: plans, MLflow's threshold checks, noise, one class."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics

from bikes.core import gate
from bikes.core.comparison import Bootstrap, Slicing
from bikes.core.errors import ConfigError
from bikes.core.metrics import Labels, SklearnMetric, Threshold


def _plan(task: gate.Task, **overrides: object) -> gate.Plan:
    arguments: dict[str, object] = {
        "metrics": None,
        "thresholds": None,
        "slicing": Slicing(),
        "segments": ["region"],
        **overrides,
    }
    return gate.plan(task, **arguments)  # type: ignore[arg-type]


def test_regression_defaults_are_the_bike_gates() -> None:
    plan = _plan("regression")
    assert [m.metric_key for m in plan.metrics] == [
        "root_mean_squared_error",
        "mean_absolute_error",
        "r2_score",
    ]
    assert plan.directions == {"root_mean_squared_error": False, "r2_score": True}
    assert [c.threshold.threshold for c in plan.criteria] == [100.0, 0.8]
    assert plan.slicing.columns == ["region"]
    assert plan.slicing.metric == "root_mean_squared_error"


def test_classification_defaults_sit_above_chance() -> None:
    binary = _plan("classification", classes=2, scores=True)
    assert [m.metric_key for m in binary.metrics] == [
        "accuracy_score",
        "f1_score",
        "balanced_accuracy_score",
        "roc_auc_score",
        "log_loss",
    ]
    bounds = {c.name: c.threshold.threshold for c in binary.criteria}
    assert bounds == {"balanced_accuracy_score": 0.6, "roc_auc_score": 0.6}
    assert binary.slice_metric.name == "balanced_accuracy_score"
    classes_only = _plan("classification", classes=4, scores=False)
    assert not any(m.needs_scores for m in classes_only.metrics)
    assert {c.name: c.threshold.threshold for c in classes_only.criteria} == {
        "balanced_accuracy_score": 0.35
    }


def test_a_threshold_on_an_unlisted_function_adds_it_with_its_direction() -> None:
    plan = _plan(
        "classification",
        classes=2,
        scores=True,
        metrics=[SklearnMetric(name="accuracy_score")],
        thresholds={
            "matthews_corrcoef": Threshold(threshold=0.2, greater_is_better=True),
            "roc_auc": Threshold(threshold=0.7),  # MLflow's name, computed from the scores
            "true_positives": Threshold(threshold=10),  # MLflow's own figure
        },
    )
    keys = {m.metric_key: m for m in plan.metrics}
    assert keys["matthews_corrcoef"].higher_is_better
    assert keys["roc_auc"].name == "roc_auc_score"
    criteria = {c.name: c for c in plan.criteria}
    assert criteria["true_positives"].metric is None
    assert criteria["true_positives"].higher_is_better


@pytest.mark.parametrize(
    ("name", "threshold", "message"),
    [
        ("rmsee", Threshold(threshold=1), "thresholds.rmsee: not a computed metric"),
        (
            "r2_score",
            Threshold(threshold=0.5, greater_is_better=False),
            "greater_is_better=False contradicts r2_score, which is better higher",
        ),
        (
            "example_count",
            Threshold(threshold=5, greater_is_better=False),
            "contradicts example_count",
        ),
    ],
)
def test_criterion_errors_name_the_threshold(name: str, threshold: Threshold, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        gate.criterion(name, threshold, {}, gate.builtin_metrics(None))


def test_a_metric_bikes_does_not_know_is_accepted_with_a_direction() -> None:
    found = gate.criterion(
        "score", Threshold(threshold=0.5, greater_is_better=True), {}, gate.builtin_metrics(None)
    )
    assert (found.metric, found.higher_is_better) == (None, True)
    plan = _plan(
        "regression", thresholds={"score": Threshold(threshold=0.5, greater_is_better=True)}
    )
    with pytest.raises(ConfigError, match=r"job.thresholds.score: not computed for the candidate"):
        _judge(plan, {"r2_score": 0.9}, None)


def test_score_metrics_without_scores_are_a_config_error() -> None:
    with pytest.raises(ConfigError, match="job.metrics: log_loss need"):
        _plan("classification", classes=2, metrics=[SklearnMetric(name="log_loss")])
    with pytest.raises(ConfigError, match="slicing.metric roc_auc_score"):
        _plan("classification", classes=2, slicing=Slicing(metric="roc_auc_score"))
    with pytest.raises(ConfigError, match="job.slicing.metric: 'nope' is not a computed metric"):
        _plan("regression", slicing=Slicing(metric="nope"))


def _judge(
    plan: gate.Plan,
    candidate: dict[str, float],
    baseline: dict[str, float] | None,
    bootstrap: Bootstrap | None = None,
) -> list[gate.Verdict]:
    truth = np.arange(10.0)
    return gate.judge(
        plan,
        candidate,
        baseline,
        truth,
        gate.Outputs(predictions=truth),
        None if baseline is None else gate.Outputs(predictions=truth),
        bootstrap or Bootstrap(enabled=False),
    )


def test_mlflow_judges_each_threshold_and_says_why_in_one_clause() -> None:
    plan = _plan(
        "regression",
        thresholds={
            "root_mean_squared_error": Threshold(threshold=100, min_relative_change=0.01),
            "r2_score": Threshold(threshold=0.8),
        },
    )
    verdicts = _judge(
        plan,
        {"root_mean_squared_error": 120.0, "r2_score": 0.85},
        {"root_mean_squared_error": 119.5, "r2_score": 0.84},
    )
    assert [v.passed for v in verdicts] == [False, True]
    assert verdicts[0].reason == (
        "root_mean_squared_error: above 100, not 1.0% better than the baseline"
    )
    assert verdicts[0].threshold == "<= 100, 1.0% better than baseline"
    assert verdicts[0].change == pytest.approx(0.5)
    first = _judge(plan, {"root_mean_squared_error": 90.0, "r2_score": math.nan}, None)
    assert first[0].passed  # first deploy: the comparison is skipped
    assert first[0].threshold == "<= 100"
    assert first[1].reason == "r2_score: undefined on these rows (NaN)"


def test_gain_within_noise_fails_where_improvement_is_asked() -> None:
    """A candidate a hair better passes MLflow's point check, not the noise check."""
    rng = np.random.default_rng(11)
    truth = rng.poisson(200, 2000).astype(float)
    baseline = truth + rng.normal(0, 50, truth.size)
    candidate = truth + rng.normal(0, 49.5, truth.size)  # 1% smaller errors: noise
    rmse = SklearnMetric(name="root_mean_squared_error")
    plan = _plan(
        "regression",
        metrics=[rmse],
        thresholds={"root_mean_squared_error": Threshold(min_absolute_change=1e-9)},
    )
    figures = {
        name: {"root_mean_squared_error": rmse.score(truth, values)}
        for name, values in (("candidate", candidate), ("baseline", baseline))
    }
    assert (
        figures["candidate"]["root_mean_squared_error"]
        < (figures["baseline"]["root_mean_squared_error"])
    )

    def verdict(bootstrap: Bootstrap) -> gate.Verdict:
        (found,) = gate.judge(
            plan,
            figures["candidate"],
            figures["baseline"],
            truth,
            gate.Outputs(predictions=candidate),
            gate.Outputs(predictions=baseline),
            bootstrap,
        )
        return found

    noisy = verdict(Bootstrap(resamples=200))
    assert noisy.interval is not None
    assert noisy.interval.low < 0 < noisy.interval.high
    assert not noisy.passed
    assert "is within noise (95% interval" in noisy.reason
    # The same gain with the noise check off passes: MLflow alone sees only the point values.
    assert verdict(Bootstrap(enabled=False)).passed


def test_a_classifier_answering_one_class_is_blocked() -> None:
    truth = np.array(["fair", "wet", "fair", "cloudy"])
    constant = gate.Outputs(predictions=np.array(["fair"] * 4))
    varied = gate.Outputs(predictions=np.array(["fair", "wet", "wet", "fair"]))
    blocked = gate.single_class(truth, constant, varied)
    assert not blocked.passed
    assert blocked.reason == (
        "predicted_classes: predicts a single class ('fair') for all 4 rows, which hold 3 classes"
    )
    assert (blocked.candidate, blocked.baseline, blocked.change) == (1.0, 2.0, -1.0)
    assert gate.single_class(truth, varied, None).passed
    # Rows of one class only: a constant answer may be right, thresholds decide.
    assert gate.single_class(np.array([1, 1]), gate.Outputs(np.array([1, 1])), None).passed


def test_judge_puts_the_single_class_check_first_for_a_classifier() -> None:
    truth = np.array([0, 1] * 50)
    labels = Labels.of([0, 1])
    plan = _plan(
        "classification",
        classes=2,
        thresholds={"accuracy_score": Threshold(threshold=0.3)},
    )
    constant = gate.Outputs(predictions=np.zeros(100, dtype=int))
    figures = {"accuracy_score": metrics.accuracy_score(truth, constant.predictions)}
    verdicts = gate.judge(
        plan, figures, None, truth, constant, None, Bootstrap(enabled=False), labels
    )
    assert [(v.metric, v.passed) for v in verdicts] == [
        ("predicted_classes", False),
        ("accuracy_score", True),
    ]
    decision = gate.decide(verdicts, pd.DataFrame(), plan)
    assert decision.status == "failed"
    assert decision.failures == [verdicts[0].reason]
    assert list(decision.table()["verdict"]) == ["failed", "passed"]


def test_segments_that_regress_fail_the_decision() -> None:
    plan = _plan(
        "regression",
        slicing=Slicing(max_relative_regression=0.25),
        thresholds={"r2_score": Threshold(threshold=0.0)},
    )
    slices = pd.DataFrame(
        [
            {"segment": "region", "value": "north", "relative_change": 0.6, "verdict": "failed"},
            {"segment": "region", "value": "south", "relative_change": 0.3, "verdict": "failed"},
            {"segment": "region", "value": "east", "relative_change": -0.1, "verdict": "passed"},
        ]
    )
    decision = gate.decide([], slices, plan)
    assert decision.failures == [
        "2 segment(s) regress by more than 25% on root_mean_squared_error "
        "(region=north +60%, region=south +30%)"
    ]


# -- non-inferiority: "no worse than the baseline by more than a margin" -----------------------
MAE = SklearnMetric(name="mean_absolute_error")
RMSE = SklearnMetric(name="root_mean_squared_error")
R2 = SklearnMetric(name="r2_score")


def _known_shift(shift: float, size: int = 1500) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Truth, a baseline whose errors are all positive, and a candidate whose every error is
    ``shift`` larger: MAE(candidate) - MAE(baseline) is exactly ``shift`` on any rows."""
    rng = np.random.default_rng(21)
    truth = rng.poisson(150, size).astype(float)
    baseline = truth + rng.uniform(5, 60, size)
    return truth, baseline + shift, baseline


def _judged(
    thresholds: dict[str, Threshold],
    truth: np.ndarray,
    candidate: np.ndarray,
    baseline: np.ndarray | None,
    bootstrap: Bootstrap | None = None,
) -> list[gate.Verdict]:
    metrics_ = [MAE, RMSE, R2]
    plan = _plan("regression", metrics=metrics_, thresholds=thresholds)

    def figures(values: np.ndarray) -> dict[str, float]:
        return {m.metric_key: m.score(truth, values) for m in metrics_}

    return gate.judge(
        plan,
        figures(candidate),
        None if baseline is None else figures(baseline),
        truth,
        gate.Outputs(predictions=candidate),
        None if baseline is None else gate.Outputs(predictions=baseline),
        bootstrap or Bootstrap(resamples=100),
    )


def test_a_known_degradation_passes_within_its_margin_and_fails_beyond() -> None:
    """Each candidate error is 2.5 larger: the interval is exactly [2.5, 2.5], so a margin of
    2.5 (plus rounding) passes and one a hair below fails, with the margin in the table."""
    truth, candidate, baseline = _known_shift(2.5)
    (within,) = _judged(
        {"mean_absolute_error": Threshold(max_degradation=2.5 + 1e-6)}, truth, candidate, baseline
    )
    assert within.check == gate.NON_INFERIORITY_CHECK
    assert within.passed
    assert within.reason == "ok"
    assert within.interval is not None
    assert (within.interval.low, within.interval.high) == pytest.approx((2.5, 2.5))
    assert within.change == pytest.approx(2.5)
    assert within.margin == pytest.approx(2.5)
    assert within.threshold == "at most 2.5 worse than baseline"
    (beyond,) = _judged(
        {"mean_absolute_error": Threshold(max_degradation=2.5 - 1e-6)}, truth, candidate, baseline
    )
    assert not beyond.passed
    assert beyond.reason == (
        "mean_absolute_error: up to 2.5 worse than the baseline (95% interval of the change "
        "+2.5 .. +2.5), beyond the margin 2.5 (at most 2.5 worse than baseline)"
    )
    row = beyond.row()
    assert (row["check"], row["margin"], row["verdict"]) == (
        "non_inferiority",
        beyond.margin,
        "failed",
    )


def test_a_relative_margin_is_a_share_of_the_baselines_value() -> None:
    """Every error 2% larger: RMSE is 2% higher on every resample. The interval's worse end is
    2% of the baseline's RMSE at its own upper resample (a bit above its full-rows value), so a
    5% margin passes and a 1.5% margin fails; 2% exactly sits within noise of the edge."""
    rng = np.random.default_rng(22)
    truth = rng.poisson(150, 1500).astype(float)
    errors = rng.normal(0, 40, truth.size)
    baseline, candidate = truth + errors, truth + 1.02 * errors
    base_rmse = RMSE.score(truth, baseline)
    (passes,) = _judged(
        {"root_mean_squared_error": Threshold(max_relative_degradation=0.05)},
        truth,
        candidate,
        baseline,
    )
    assert passes.passed
    assert passes.margin == pytest.approx(0.05 * base_rmse)
    assert passes.change == pytest.approx(0.02 * base_rmse)
    assert passes.threshold == "at most 5.0% worse than baseline"
    # An error is judged on the upper end: a margin midway between the ends fails.
    assert passes.interval is not None
    midway = (passes.interval.low + passes.interval.high) / 2
    (edge,) = _judged(
        {"root_mean_squared_error": Threshold(max_degradation=midway)}, truth, candidate, baseline
    )
    assert not edge.passed
    (fails,) = _judged(
        {"root_mean_squared_error": Threshold(max_relative_degradation=0.015)},
        truth,
        candidate,
        baseline,
    )
    assert not fails.passed
    assert "beyond the margin" in fails.reason
    # Both margins given: the tighter holds.
    both = Threshold(max_degradation=1.0, max_relative_degradation=0.05)
    assert both.margin(base_rmse) == pytest.approx(min(1.0, 0.05 * base_rmse))


def test_a_score_is_judged_on_the_lower_end_of_its_interval() -> None:
    """R2 is better higher: the worse end is the interval's low. Errors grown by sqrt(2)
    double every resample's squared error: R2 drops by (1 - R2 of the baseline) there."""
    rng = np.random.default_rng(23)
    truth = rng.poisson(150, 1500).astype(float)
    errors = rng.normal(0, 4, truth.size)
    baseline, candidate = truth + errors, truth + np.sqrt(2) * errors
    drop = 1 - R2.score(truth, baseline)
    (verdict,) = _judged(
        {"r2_score": Threshold(max_degradation=3 * drop)}, truth, candidate, baseline
    )
    assert verdict.passed
    assert verdict.interval is not None
    assert verdict.change == pytest.approx(-drop)
    assert verdict.interval.low < -drop < verdict.interval.high
    (blocked,) = _judged(
        {"r2_score": Threshold(max_degradation=0.5 * drop)}, truth, candidate, baseline
    )
    assert not blocked.passed
    # A margin midway between the interval's ends: within it at the upper end, not the lower.
    midway = -(verdict.interval.low + verdict.interval.high) / 2
    (edge,) = _judged({"r2_score": Threshold(max_degradation=midway)}, truth, candidate, baseline)
    assert not edge.passed
    # A better candidate passes even a zero margin: "no worse at all".
    (better,) = _judged({"r2_score": Threshold(max_degradation=0)}, truth, baseline, candidate)
    assert better.passed


def test_an_identical_candidate_passes_a_zero_margin() -> None:
    truth, _, baseline = _known_shift(0.0)
    verdicts = _judged(
        {"root_mean_squared_error": Threshold(threshold=100, max_degradation=0)},
        truth,
        baseline.copy(),
        baseline,
    )
    assert [(v.check, v.passed) for v in verdicts] == [
        ("threshold", True),
        ("non_inferiority", True),
    ]
    assert verdicts[1].interval is not None
    assert (verdicts[1].interval.low, verdicts[1].interval.high) == (0.0, 0.0)


def test_the_interval_is_stricter_than_the_point_estimate() -> None:
    """The candidate's errors are the baseline's, shuffled over the rows: the same RMSE on all
    rows (a point change of exactly 0), a noisy difference on any resample. A 1% margin passes
    on the point (bootstrap off, said so) and fails on the interval; a margin wider than the
    noise passes both."""
    rng = np.random.default_rng(24)
    truth = rng.poisson(150, 1500).astype(float)
    errors = rng.normal(0, 40, truth.size)
    baseline, candidate = truth + errors, truth + rng.permutation(errors)
    assert RMSE.score(truth, candidate) == pytest.approx(RMSE.score(truth, baseline))
    tight = {"root_mean_squared_error": Threshold(max_relative_degradation=0.01)}
    (point,) = _judged(tight, truth, candidate, baseline, Bootstrap(enabled=False))
    assert point.passed
    assert point.interval is None
    (noisy,) = _judged(tight, truth, candidate, baseline)
    assert not noisy.passed
    assert "(95% interval of the change" in noisy.reason
    wide = {"root_mean_squared_error": Threshold(max_relative_degradation=0.1)}
    assert _judged(wide, truth, candidate, baseline)[0].passed
    # The point estimate fails too when it is beyond the margin, and says it had no interval.
    (worse,) = _judged(tight, truth, candidate + 8, baseline, Bootstrap(enabled=False))
    assert not worse.passed
    assert "(point estimate, no bootstrap interval)" in worse.reason


def test_non_inferiority_on_a_first_deploy_and_on_undefined_figures() -> None:
    truth, candidate, _ = _known_shift(1.0)
    both = {"root_mean_squared_error": Threshold(threshold=100, max_relative_degradation=0.05)}
    verdicts = _judged(both, truth, candidate, None)
    assert [(v.check, v.passed, v.threshold) for v in verdicts] == [
        ("threshold", True, "<= 100"),
        ("non_inferiority", True, "at most 5.0% worse than baseline (skipped: no baseline)"),
    ]
    criterion = gate.Criterion("score", Threshold(max_degradation=0.1), True, None)
    undefined = gate.non_inferiority(criterion, math.nan, 0.7, None)
    assert not undefined.passed
    assert undefined.reason == "score: undefined on these rows (NaN)"


def test_a_gain_asked_on_a_first_deploy_leaves_mlflow_nothing_and_passes() -> None:
    """MLflow refuses a MetricThreshold with nothing in it: the gate does not ask it."""
    truth, candidate, _ = _known_shift(1.0)
    (verdict,) = _judged(
        {"root_mean_squared_error": Threshold(min_relative_change=0.01)}, truth, candidate, None
    )
    assert verdict.passed
    assert verdict.threshold == "(comparison skipped: no baseline)"


def test_both_kinds_of_check_share_the_table_one_row_each() -> None:
    truth, candidate, baseline = _known_shift(4.0)
    verdicts = _judged(
        {
            "mean_absolute_error": Threshold(threshold=50, max_degradation=1.0),
            "root_mean_squared_error": Threshold(threshold=100),
        },
        truth,
        candidate,
        baseline,
    )
    decision = gate.decide(verdicts, pd.DataFrame(), _plan("regression"))
    table = decision.table()
    assert list(table.columns) == [
        "metric",
        "check",
        "candidate",
        "baseline",
        "threshold",
        "change",
        "interval_low",
        "interval_high",
        "margin",
        "verdict",
        "reason",
    ]
    assert list(zip(table["metric"], table["check"], table["verdict"], strict=True)) == [
        ("mean_absolute_error", "threshold", "passed"),
        ("mean_absolute_error", "non_inferiority", "failed"),
        ("root_mean_squared_error", "threshold", "passed"),
    ]
    assert table["margin"].iloc[1] == pytest.approx(1.0)
    assert decision.failures == [verdicts[1].reason]
    assert decision.status == "failed"
