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
