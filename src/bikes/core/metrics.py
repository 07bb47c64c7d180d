"""Metrics and thresholds as config objects, computed by sklearn, judged by MLflow.

``SklearnMetric`` names a function of ``sklearn.metrics``; ``Threshold`` says how good a
metric must be, alone and against the champion. Both become MLflow's own objects
(``make_metric``, ``MetricThreshold``) so ``mlflow.validate_evaluation_results`` decides.
"""

from __future__ import annotations

import typing as T

import numpy as np
import numpy.typing as npt
import pydantic as pdt
from mlflow.models import EvaluationMetric, MetricThreshold, make_metric

# What MLflow's default evaluator computes for model_type="regressor", thresholds may use them.
MLFLOW_REGRESSOR_METRICS: dict[str, bool] = {
    "example_count": True,
    "mean_absolute_error": False,
    "mean_squared_error": False,
    "root_mean_squared_error": False,
    "sum_on_target": True,
    "mean_on_target": True,
    "r2_score": True,
    "max_error": False,
    "mean_absolute_percentage_error": False,
}


def _sklearn_metrics() -> T.Any:
    """``sklearn.metrics``, imported on first use: it costs about 1.5 s of start-up, which a
    monitoring run without labels (drift and quality only) never needs to pay."""
    from sklearn import metrics

    return metrics


def regression_metrics(y_true: npt.ArrayLike, y_pred: npt.ArrayLike) -> dict[str, float]:
    """The validation metrics logged by training: errors in bikes per hour, and R2."""
    truth = np.asarray(y_true, dtype=float)
    predicted = np.asarray(y_pred, dtype=float)
    metrics = _sklearn_metrics()
    return {
        "rmse": float(metrics.root_mean_squared_error(truth, predicted)),
        "mae": float(metrics.mean_absolute_error(truth, predicted)),
        "r2": float(metrics.r2_score(truth, predicted)),
        "mape": float(metrics.mean_absolute_percentage_error(truth + 1, predicted + 1)),
    }


class SklearnMetric(pdt.BaseModel, strict=True, frozen=True, extra="forbid"):
    """A ``sklearn.metrics`` function by name, with its keyword arguments and direction.

    ``greater_is_better`` defaults to sklearn's own convention: ``*_score`` functions are
    better higher, ``*_error``/``*_loss``/``*_deviance`` functions better lower.
    """

    name: str
    kwargs: dict[str, T.Any] = pdt.Field(default_factory=dict)
    greater_is_better: bool | None = None
    key: str | None = None  # the name it is logged and thresholded under; default: ``name``

    @pdt.field_validator("name")
    @classmethod
    def _exists_in_sklearn(cls, name: str) -> str:
        if not callable(getattr(_sklearn_metrics(), name, None)) or name.startswith("_"):
            raise ValueError(f"unknown sklearn metric {name!r} (not a function of sklearn.metrics)")
        return name

    @pdt.model_validator(mode="after")
    def _direction_is_known(self) -> SklearnMetric:
        if self.greater_is_better is None and _direction_from_name(self.name) is None:
            raise ValueError(f"say greater_is_better for sklearn metric {self.name!r}")
        return self

    @property
    def metric_key(self) -> str:
        return self.key or self.name

    @property
    def higher_is_better(self) -> bool:
        if self.greater_is_better is not None:
            return self.greater_is_better
        return bool(_direction_from_name(self.name))

    def score(self, y_true: npt.ArrayLike, y_pred: npt.ArrayLike) -> float:
        function = getattr(_sklearn_metrics(), self.name)
        return float(function(y_true, y_pred, **self.kwargs))

    def to_mlflow(self) -> EvaluationMetric:
        def eval_fn(predictions: T.Any, targets: T.Any, metrics: T.Any = None) -> float:
            return self.score(targets, predictions)

        metric: EvaluationMetric = make_metric(
            eval_fn=eval_fn, greater_is_better=self.higher_is_better, name=self.metric_key
        )
        return metric


def _direction_from_name(name: str) -> bool | None:
    if name.endswith("_score"):
        return True
    if name.endswith(("_error", "_loss", "_deviance")):
        return False
    return None


class Threshold(pdt.BaseModel, strict=False, frozen=True, extra="forbid"):
    """How good a metric must be: an absolute bound, and a required change from the champion.

    Changes are in the metric's "better" direction: ``min_relative_change: 0.05`` on an error
    asks the candidate for an error at least 5% lower than the champion's.
    """

    threshold: float | None = None
    # MLflow accepts positive changes only: a comparison always asks for an improvement.
    min_absolute_change: float | None = pdt.Field(default=None, gt=0)
    min_relative_change: float | None = pdt.Field(default=None, gt=0)

    @pdt.model_validator(mode="after")
    def _says_something(self) -> Threshold:
        if self.threshold is None and not self.asks_improvement:
            raise ValueError("set threshold, min_absolute_change or min_relative_change")
        return self

    @property
    def asks_improvement(self) -> bool:
        return self.min_absolute_change is not None or self.min_relative_change is not None

    def to_mlflow(self, greater_is_better: bool, with_baseline: bool = True) -> MetricThreshold:
        """MLflow's threshold; without a baseline (first deploy) only the absolute bound."""
        return MetricThreshold(
            threshold=self.threshold,
            min_absolute_change=self.min_absolute_change if with_baseline else None,
            min_relative_change=self.min_relative_change if with_baseline else None,
            greater_is_better=greater_is_better,
        )

    def describe(self, greater_is_better: bool, with_baseline: bool = True) -> str:
        """``<= 100``, ``>= 0.7``, ``5% better``: how a person reads the bound."""
        parts = []
        if self.threshold is not None:
            parts.append(f"{'>=' if greater_is_better else '<='} {self.threshold:g}")
        if with_baseline and self.min_absolute_change is not None:
            parts.append(f"{self.min_absolute_change:g} better than baseline")
        if with_baseline and self.min_relative_change is not None:
            parts.append(f"{self.min_relative_change:.1%} better than baseline")
        return ", ".join(parts) or "(comparison skipped: no baseline)"
