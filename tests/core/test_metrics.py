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
