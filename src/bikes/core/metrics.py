"""Regression metrics, computed by sklearn so our numbers are everyone's numbers."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from sklearn import metrics as sk_metrics


def regression_metrics(y_true: npt.ArrayLike, y_pred: npt.ArrayLike) -> dict[str, float]:
    """The validation metrics logged by training: errors in bikes per hour, and R2."""
    truth = np.asarray(y_true, dtype=float)
    predicted = np.asarray(y_pred, dtype=float)
    return {
        "rmse": float(sk_metrics.root_mean_squared_error(truth, predicted)),
        "mae": float(sk_metrics.mean_absolute_error(truth, predicted)),
        "r2": float(sk_metrics.r2_score(truth, predicted)),
        "mape": float(sk_metrics.mean_absolute_percentage_error(truth + 1, predicted + 1)),
    }
