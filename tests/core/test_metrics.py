from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics

from bikes.core.metrics import regression_metrics


def test_values_equal_sklearn_computed_directly() -> None:
    rng = np.random.default_rng(0)
    truth = rng.poisson(150, size=500)
    predicted = truth + rng.normal(0, 20, size=500)
    values = regression_metrics(truth, predicted)
    assert values["rmse"] == pytest.approx(np.sqrt(metrics.mean_squared_error(truth, predicted)))
    assert values["mae"] == pytest.approx(np.mean(np.abs(truth - predicted)))
    assert values["r2"] == pytest.approx(
        1 - np.sum((truth - predicted) ** 2) / np.sum((truth - truth.mean()) ** 2)
    )
    assert values["mape"] == pytest.approx(np.mean(np.abs(predicted - truth) / (truth + 1)))


def test_perfect_predictions() -> None:
    values = regression_metrics([0, 1, 5], [0, 1, 5])
    assert values == {"rmse": 0.0, "mae": 0.0, "r2": 1.0, "mape": 0.0}


def test_sklearn_metric_by_name_with_kwargs() -> None:
    from bikes.core.metrics import SklearnMetric

    truth, predicted = [1.0, 2.0, 3.0, 10.0], [1.5, 2.0, 2.0, 7.0]
    metric = SklearnMetric(name="mean_pinball_loss", kwargs={"alpha": 0.9}, key="pinball90")
    assert metric.score(truth, predicted) == pytest.approx(
        metrics.mean_pinball_loss(truth, predicted, alpha=0.9)
    )
    assert metric.metric_key == "pinball90"
    assert metric.higher_is_better is False
    assert SklearnMetric(name="r2_score").higher_is_better is True
    assert SklearnMetric(name="max_error", greater_is_better=True).higher_is_better is True
    mlflow_metric = metric.to_mlflow()
    assert mlflow_metric.name == "pinball90"
    assert mlflow_metric.greater_is_better is False


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"name": "rmsee"}, "unknown sklearn metric 'rmsee'"),
        ({"name": "_check_reg_targets"}, "unknown sklearn metric"),
        ({"name": "make_scorer"}, "say greater_is_better"),
    ],
)
def test_bad_metric_configs(config: dict[str, str], message: str) -> None:
    import pydantic

    from bikes.core.metrics import SklearnMetric

    with pytest.raises(pydantic.ValidationError, match=message):
        SklearnMetric.model_validate(config)


def test_threshold_to_mlflow_and_description() -> None:
    import pydantic

    from bikes.core.metrics import Threshold

    threshold = Threshold(threshold=100, min_relative_change=0.05)
    mlflow_threshold = threshold.to_mlflow(greater_is_better=False)
    assert (mlflow_threshold.threshold, mlflow_threshold.min_relative_change) == (100, 0.05)
    assert mlflow_threshold.greater_is_better is False
    assert threshold.to_mlflow(False, with_baseline=False).min_relative_change is None
    assert threshold.describe(False) == "<= 100, 5.0% better than baseline"
    assert Threshold(threshold=0.8).describe(True) == ">= 0.8"
    assert (
        Threshold(min_absolute_change=2)
        .describe(False, with_baseline=False)
        .startswith("(comparison skipped")
    )
    with pytest.raises(pydantic.ValidationError, match="greater than 0"):
        Threshold(min_absolute_change=0)
    with pytest.raises(pydantic.ValidationError, match="set threshold"):
        Threshold()


# -- classification ------------------------------------------------------------------------------
def _labels(classes: list[object], positive: object = None) -> object:
    from bikes.core.metrics import Labels

    return Labels.of(classes, positive)


def test_labels_are_sorted_and_the_positive_class_defaults_to_the_greater() -> None:
    from bikes.core.errors import ContractError
    from bikes.core.metrics import Labels

    labels = Labels.of([np.int64(1), 0, 1.0, 0])
    assert labels.classes == (0, 1)
    assert labels.positive == 1
    assert labels.binary
    assert Labels.of(["stay", "churn"], "churn").positive == "churn"
    with pytest.raises(ContractError, match=r"positive_class: 'yes' is not a class .*'no'"):
        Labels.of(["no", "maybe"], "yes")


def test_labels_align_a_models_probabilities() -> None:
    from bikes.core.metrics import Labels

    probabilities = np.array([[0.2, 0.8], [0.6, 0.4]])
    binary = Labels.of(["churn", "stay"], "churn")
    assert binary.align(["churn", "stay"], probabilities).tolist() == [0.2, 0.6]
    # The model does not know "wet": its column is 0; columns follow the sorted classes.
    three = Labels.of(["cloudy", "fair", "wet"])
    aligned = three.align(np.array(["fair", "cloudy"]), probabilities)
    assert aligned.tolist() == [[0.8, 0.2, 0.0], [0.4, 0.6, 0.0]]


def test_classification_arguments_complete_the_kwargs_they_do_not_say() -> None:
    from bikes.core.metrics import Labels, SklearnMetric

    binary = Labels.of(["churn", "stay"], "churn")
    three = Labels.of(["cloudy", "fair", "wet"])
    f1 = SklearnMetric(name="f1_score")
    assert f1.arguments(binary) == {"pos_label": "churn"}
    assert f1.arguments(three) == {"average": "macro"}
    assert f1.arguments(None) == {}
    weighted = SklearnMetric(name="f1_score", kwargs={"average": "weighted"})
    assert weighted.arguments(three) == {"average": "weighted"}
    assert weighted.arguments(binary) == {"average": "weighted"}  # pos_label would be ignored
    assert SklearnMetric(name="balanced_accuracy_score").arguments(binary) == {}
    auc = SklearnMetric(name="roc_auc_score")
    assert auc.needs_scores
    assert auc.arguments(binary) == {}
    assert auc.arguments(three) == {"labels": ["cloudy", "fair", "wet"], "multi_class": "ovr"}
    assert SklearnMetric(name="log_loss").arguments(three) == {"labels": ["cloudy", "fair", "wet"]}


def test_classification_scores_equal_sklearn() -> None:
    from bikes.core.metrics import Labels, SklearnMetric

    rng = np.random.default_rng(0)
    truth = rng.choice(["churn", "stay"], 400)
    churn = np.clip((truth == "churn") * 0.3 + rng.random(400) * 0.7, 0, 1)
    predicted = np.where(churn > 0.5, "churn", "stay")
    labels = Labels.of(["churn", "stay"], "churn")
    assert SklearnMetric(name="f1_score").score(truth, predicted, labels) == pytest.approx(
        metrics.f1_score(truth, predicted, pos_label="churn")
    )
    assert SklearnMetric(name="roc_auc_score").score(truth, churn, labels) == pytest.approx(
        metrics.roc_auc_score(truth == "churn", churn)
    )
    assert SklearnMetric(name="brier_score_loss").score(truth, churn, labels) == pytest.approx(
        np.mean(((truth == "churn") - churn) ** 2)
    )
    three = Labels.of([0, 1, 2])
    y = rng.integers(0, 3, 300)
    raw = rng.random((300, 3)) + np.eye(3)[y]
    probabilities = raw / raw.sum(axis=1, keepdims=True)
    assert SklearnMetric(name="roc_auc_score").score(y, probabilities, three) == pytest.approx(
        metrics.roc_auc_score(y, probabilities, multi_class="ovr")
    )
    assert SklearnMetric(name="recall_score").score(
        y, probabilities.argmax(axis=1), three
    ) == pytest.approx(metrics.recall_score(y, probabilities.argmax(axis=1), average="macro"))


def test_mlflow_metric_reads_the_scores_of_the_rows_it_is_given() -> None:
    """MLflow calls a metric on the first row alone, then on all rows: rows by the index."""
    import pandas as pd

    from bikes.core.metrics import Labels, SklearnMetric

    labels = Labels.of([0, 1])
    truth = np.array([0, 1, 0, 1, 1, 0, 0, 1])
    scores = np.array([0.1, 0.9, 0.3, 0.2, 0.8, 0.4, 0.35, 0.7])
    metric = SklearnMetric(name="roc_auc_score").to_mlflow(labels, scores)
    classes = pd.Series((scores > 0.5).astype(int))
    targets = pd.Series(truth)
    assert metric.eval_fn(classes, targets) == pytest.approx(metrics.roc_auc_score(truth, scores))
    some = [1, 2, 3, 6]
    assert metric.eval_fn(classes.iloc[some], targets.iloc[some]) == pytest.approx(
        metrics.roc_auc_score(truth[some], scores[some])
    )
    assert np.isnan(metric.eval_fn(classes.iloc[[0]], targets.iloc[[0]]))  # one row: undefined


def test_a_metric_that_fails_on_the_data_is_a_config_error_naming_it() -> None:
    import pandas as pd

    from bikes.core.errors import ConfigError
    from bikes.core.metrics import SklearnMetric

    metric = SklearnMetric(name="accuracy_score").to_mlflow()
    values = pd.Series([1.5, 2.5, 3.5])
    with pytest.raises(ConfigError, match="job.metrics: accuracy_score failed on the data"):
        metric.eval_fn(values, values)
    with pytest.raises(ConfigError, match="roc_auc_score needs class probabilities"):
        SklearnMetric(name="roc_auc_score").to_mlflow(_labels([0, 1]), None)


def test_predicted_classes_take_the_targets_type() -> None:
    from bikes.core.metrics import as_classes

    assert as_classes(np.array([1.0, 0.0]), np.array([0, 1])).dtype.kind == "i"
    assert as_classes(np.array([1.5, 0.0]), np.array([0, 1])).dtype.kind == "f"
    assert as_classes(np.array(["a"]), np.array(["b"]))[0] == "a"


def test_threshold_may_say_its_direction() -> None:
    from bikes.core.metrics import MLFLOW_CLASSIFIER_METRICS, Threshold

    threshold = Threshold(threshold=0.5, greater_is_better=True)
    assert threshold.greater_is_better is True
    assert Threshold(threshold=0.5).greater_is_better is None
    assert MLFLOW_CLASSIFIER_METRICS["f1_score"] is True
    assert MLFLOW_CLASSIFIER_METRICS["log_loss"] is False


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            {"max_degradation": -1.0},
            "max_degradation is -1: a margin is how much worse than the baseline the candidate "
            "may be, a finite number, 0 or more",
        ),
        ({"max_relative_degradation": -0.02}, "max_relative_degradation is -0.02: a margin"),
        ({"max_relative_degradation": 2}, "a share of the baseline's value, at most 1"),
        (
            {"min_relative_change": 0.01, "max_relative_degradation": 0.05},
            "min_relative_change (must be better than the baseline) contradict(s) "
            "max_relative_degradation (may be worse than it): set one kind",
        ),
        (
            {"min_absolute_change": 1, "max_degradation": 2, "threshold": 100},
            "min_absolute_change (must be better than the baseline) contradict(s) max_degradation",
        ),
        ({"greater_is_better": True}, "set threshold, min_absolute_change"),
    ],
)
def test_threshold_errors_name_the_key(config: dict[str, object], message: str) -> None:
    import pydantic

    from bikes.core.metrics import Threshold

    with pytest.raises(pydantic.ValidationError) as caught:
        Threshold.model_validate(config)
    assert message in str(caught.value)


def test_non_inferiority_threshold_margins_and_words() -> None:
    from bikes.core.metrics import Threshold

    relative = Threshold(threshold=100, max_relative_degradation=0.05)
    assert relative.allows_degradation
    assert not relative.asks_improvement
    assert relative.margin(52.0) == pytest.approx(2.6)
    assert relative.margin(-10.0) == pytest.approx(0.5)  # a share of the value's size
    assert relative.describe(greater_is_better=False) == "<= 100"  # MLflow's part only
    assert relative.describe_margin() == "at most 5.0% worse than baseline"
    assert relative.to_mlflow(greater_is_better=False).min_relative_change is None
    both = Threshold(max_degradation=1.5, max_relative_degradation=0.02)
    assert both.margin(100.0) == pytest.approx(1.5)
    assert both.margin(50.0) == pytest.approx(1.0)
    assert both.describe_margin() == "at most 1.5 and 2.0% worse than baseline"
    assert not both.checked_by_mlflow()
    assert Threshold(max_degradation=0).margin(3.0) == 0.0  # "no worse at all"
    assert Threshold(threshold=1).margin(3.0) is None
    must_improve = Threshold(min_relative_change=0.01)
    assert must_improve.checked_by_mlflow(with_baseline=True)
    assert not must_improve.checked_by_mlflow(with_baseline=False)
