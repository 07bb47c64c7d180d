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
