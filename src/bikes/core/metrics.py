"""Metrics and thresholds as config objects, computed by sklearn, judged by MLflow.

``SklearnMetric`` names a function of ``sklearn.metrics``; ``Threshold`` says how good a
metric must be, alone and against the champion. Both become MLflow's own objects
(``make_metric``, ``MetricThreshold``) so ``mlflow.validate_evaluation_results`` decides.

Classification metrics need to know more than two arrays: ``Labels`` holds the classes and the
positive one, so ``f1_score`` gets its ``pos_label`` (binary) or ``average="macro"``
(multiclass), and score-based metrics (``roc_auc_score``, ``log_loss``, ...) get the class
probabilities instead of the predicted classes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import math
import typing as T
import warnings

import numpy as np
import numpy.typing as npt
import pydantic as pdt

from bikes.core.errors import ConfigError, ContractError, first_line

if T.TYPE_CHECKING:  # MLflow (a 3 s import) only where a gate hands metrics to it
    from mlflow.models import EvaluationMetric, MetricThreshold

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
# What MLflow's default evaluator computes for model_type="classifier" from predicted classes
# (the confusion counts for binary models only), and their directions. ``roc_auc`` and
# ``log_loss`` need probabilities, which MLflow only has when it predicts itself: the gate
# computes them from the model's scores under the same names.
MLFLOW_CLASSIFIER_METRICS: dict[str, bool] = {
    "example_count": True,
    "accuracy_score": True,
    "precision_score": True,
    "recall_score": True,
    "f1_score": True,
    "true_positives": True,
    "true_negatives": True,
    "false_positives": False,
    "false_negatives": False,
    "log_loss": False,
    "roc_auc": True,
}
# sklearn metrics that take class probabilities (``y_score``/``y_proba``), not classes.
SCORE_METRICS = frozenset(
    {
        "roc_auc_score",
        "log_loss",
        "average_precision_score",
        "brier_score_loss",
        "top_k_accuracy_score",
    }
)


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


def classification_metrics(
    y_true: npt.ArrayLike,
    y_pred: npt.ArrayLike,
    positive_class: T.Any = None,
    classes: T.Sequence[T.Any] | None = None,
    probabilities: npt.ArrayLike | None = None,
) -> dict[str, float]:
    """Accuracy, precision, recall and F1 (of ``positive_class`` when binary, macro-averaged
    over classes otherwise) and, with per-class ``probabilities`` in ``classes`` order, ROC AUC
    (one-vs-rest when multiclass) and log loss. A figure undefined on these rows is left out."""
    metrics = _sklearn_metrics()
    truth, predicted = np.asarray(y_true), np.asarray(y_pred)
    labels = list(classes) if classes is not None else sorted(set(truth) | set(predicted))
    binary = len(labels) <= 2
    positive = positive_class if positive_class is not None else (labels[-1] if labels else None)
    averaging: dict[str, T.Any] = (
        {"average": "binary", "pos_label": positive} if binary else {"average": "macro"}
    )
    figures = {"accuracy": float(metrics.accuracy_score(truth, predicted))}
    for name in ("precision", "recall", "f1"):
        function = getattr(metrics, f"{name}_score")
        figures[name] = float(function(truth, predicted, zero_division=0, **averaging))
    if probabilities is None or classes is None:
        return figures
    scores = np.asarray(probabilities, dtype=float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            if binary:
                column = labels.index(positive)
                figures["roc_auc"] = float(
                    metrics.roc_auc_score(truth == positive, scores[:, column])
                )
            else:
                figures["roc_auc"] = float(
                    metrics.roc_auc_score(truth, scores, multi_class="ovr", labels=labels)
                )
        except ValueError:
            pass  # one class only among these rows: AUC is undefined
        with contextlib.suppress(ValueError):
            figures["log_loss"] = float(metrics.log_loss(truth, scores, labels=labels))
    return figures


@dataclasses.dataclass(frozen=True)
class Labels:
    """The classes of a classification (sorted) and the positive one, which binary metrics
    (precision, recall, F1, the score's column) refer to."""

    classes: tuple[T.Any, ...]
    positive: T.Any

    @classmethod
    def of(cls, values: T.Iterable[T.Any], positive_class: T.Any = None) -> Labels:
        """Labels from every class seen (targets, predictions, the models' own classes);
        the positive class is ``positive_class``, else the greater class."""
        classes = tuple(sorted({_plain(value) for value in values}))
        if positive_class is not None and positive_class not in classes:
            shown = ", ".join(repr(c) for c in classes)
            raise ContractError(
                f"job.contract.positive_class: {positive_class!r} is not a class of the data "
                f"or the models ({shown})"
            )
        positive = positive_class if positive_class is not None else classes[-1]
        return cls(classes=classes, positive=positive)

    @property
    def binary(self) -> bool:
        return len(self.classes) <= 2

    def align(self, classes: T.Sequence[T.Any], probabilities: npt.ArrayLike) -> np.ndarray:
        """A model's per-class probabilities (columns in ``classes`` order) as the gate's
        scores: the positive class's column when binary, else one column per class of
        ``self.classes`` (a class the model does not know has probability 0)."""
        table = np.asarray(probabilities, dtype=float)
        column = {_plain(c): i for i, c in enumerate(classes)}
        if self.binary:
            if self.positive not in column:
                return np.zeros(len(table))
            return table[:, column[self.positive]]
        aligned = np.zeros((len(table), len(self.classes)))
        for j, label in enumerate(self.classes):
            if label in column:
                aligned[:, j] = table[:, column[label]]
        return aligned


def as_classes(predictions: npt.ArrayLike, truth: npt.ArrayLike) -> np.ndarray:
    """Predicted classes in the targets' own type: ``1.0`` back to ``1`` when the targets are
    integers (a pyfunc answers numbers as floats), so labels compare and print as given."""
    predicted, labels = np.asarray(predictions), np.asarray(truth)
    if (
        labels.dtype.kind in "iu"
        and predicted.dtype.kind == "f"
        and np.all(np.isfinite(predicted))
        and np.all(predicted == np.round(predicted))
    ):
        return predicted.astype(labels.dtype)
    return predicted


def _plain(value: T.Any) -> T.Any:
    """numpy scalars as Python ones: ``np.int64(1)`` prints as ``1`` in messages."""
    return value.item() if isinstance(value, np.generic) else value


class SklearnMetric(pdt.BaseModel, strict=True, frozen=True, extra="forbid"):
    """A ``sklearn.metrics`` function by name, with its keyword arguments and direction.

    ``greater_is_better`` defaults to sklearn's own convention: ``*_score`` functions are
    better higher, ``*_error``/``*_loss``/``*_deviance`` functions better lower. For a
    classifier, class metrics get ``pos_label`` (binary) or ``average="macro"`` (multiclass)
    unless ``kwargs`` say otherwise, and score metrics (``roc_auc_score``, ``log_loss``,
    ``average_precision_score``, ``brier_score_loss``, ``top_k_accuracy_score``) get the
    class probabilities.
    """

    name: str = pdt.Field(
        description="A function of sklearn.metrics, e.g. r2_score, f1_score, roc_auc_score."
    )
    kwargs: dict[str, T.Any] = pdt.Field(
        default_factory=dict,
        description="Keyword arguments of the function, e.g. {average: weighted}.",
    )
    greater_is_better: bool | None = pdt.Field(
        default=None,
        description="Direction; default from the name (*_score higher, *_error/*_loss lower).",
    )
    key: str | None = pdt.Field(
        default=None,
        description="The name it is logged and thresholded under; default: name.",
    )

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

    @property
    def needs_scores(self) -> bool:
        """True for metrics of class probabilities rather than of predicted classes."""
        return self.name in SCORE_METRICS

    def arguments(self, labels: Labels | None = None) -> dict[str, T.Any]:
        """The keyword arguments the function is called with: ``kwargs``, completed for a
        classification (``pos_label``, ``average``, ``labels``, ``multi_class``)."""
        given = dict(self.kwargs)
        if labels is None:
            return given
        accepted = inspect.signature(getattr(_sklearn_metrics(), self.name)).parameters
        extra: dict[str, T.Any] = {}
        if self.needs_scores:
            if not labels.binary:
                extra = {"labels": list(labels.classes), "multi_class": "ovr"}
        elif labels.binary:
            if given.get("average", "binary") == "binary":
                extra = {"pos_label": labels.positive}
        else:
            extra = {"average": "macro"}
        return {**{k: v for k, v in extra.items() if k in accepted}, **given}

    def score(
        self, y_true: npt.ArrayLike, y_pred: npt.ArrayLike, labels: Labels | None = None
    ) -> float:
        """The metric of ``y_pred``: predicted values or classes, or, for a score metric of a
        classifier (``labels`` given), the scores (binary: the positive class's probability;
        multiclass: one column per class of ``labels``)."""
        function = getattr(_sklearn_metrics(), self.name)
        truth = np.asarray(y_true)
        if labels is not None and self.needs_scores and labels.binary:
            truth = (truth == labels.positive).astype(int)
        return float(function(truth, np.asarray(y_pred), **self.arguments(labels)))

    def to_mlflow(
        self, labels: Labels | None = None, scores: npt.ArrayLike | None = None
    ) -> EvaluationMetric:
        """MLflow's metric. A score metric reads ``scores`` (one row per evaluated row) rather
        than the predictions MLflow hands it; MLflow first tries every metric on the first row
        alone, so rows are picked by the targets' index."""
        values = None if scores is None else np.asarray(scores)
        if labels is not None and self.needs_scores and values is None:
            raise ConfigError(
                f"job.metrics: {self.metric_key} needs class probabilities, which the model "
                "does not give"
            )

        def eval_fn(predictions: T.Any, targets: T.Any) -> float:
            predicted = np.asarray(predictions)
            if labels is not None and self.needs_scores and values is not None:
                rows = np.asarray(getattr(targets, "index", np.arange(len(targets))))
                predicted = values if len(rows) == len(values) else values[rows]
            try:
                return self.score(np.asarray(targets), predicted, labels)
            except (ValueError, TypeError) as error:
                if len(predicted) <= 1:
                    return math.nan  # MLflow's trial on one row: many metrics are undefined
                raise ConfigError(
                    f"job.metrics: {self.metric_key} failed on the data ({first_line(error)})"
                ) from None

        from mlflow.models import make_metric

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
    """How good a metric must be: an absolute bound, and how it must compare with the champion.

    Two kinds of comparison, on the paired bootstrap interval of ``candidate - baseline``:

    - must improve (``min_absolute_change``, ``min_relative_change``, judged by MLflow's
      ``MetricThreshold``): in the metric's "better" direction, ``min_relative_change: 0.05`` on
      an error asks for an error at least 5% lower than the champion's, beyond the noise;
    - non-inferiority (``max_degradation``, ``max_relative_degradation``, judged by the gate):
      ``max_relative_degradation: 0.05`` on an error lets the candidate's error be higher than
      the champion's by at most 5% of it, at the worse end of the interval.

    One threshold asks one kind: "better by at least" and "worse by at most" contradict.
    """

    threshold: float | None = pdt.Field(
        default=None, description="The absolute bound (a floor if better higher, else a ceiling)."
    )
    # MLflow accepts positive changes only: these always ask for an improvement.
    min_absolute_change: float | None = pdt.Field(
        default=None, gt=0, description="Required gain over the baseline, in the metric's units."
    )
    min_relative_change: float | None = pdt.Field(
        default=None, gt=0, description="Required gain over the baseline, as a share of it."
    )
    max_degradation: float | None = pdt.Field(
        default=None,
        description="Non-inferiority: how much worse than the baseline the candidate may be, in "
        "the metric's units (0: no worse at all), at the worse end of the bootstrap interval.",
    )
    max_relative_degradation: float | None = pdt.Field(
        default=None,
        description="Non-inferiority: how much worse than the baseline the candidate may be, as "
        "a share of the baseline's value (0.05: 5%), at the worse end of the bootstrap interval.",
    )
    greater_is_better: bool | None = pdt.Field(
        default=None,
        description="The metric's direction. Default: the metric's own; when given it must "
        "agree with it, and it is the direction of a metric bikes does not know.",
    )

    @pdt.field_validator("max_degradation", "max_relative_degradation")
    @classmethod
    def _margin(cls, value: float | None, info: pdt.ValidationInfo) -> float | None:
        if value is None:
            return None
        if not math.isfinite(value) or value < 0:
            raise ValueError(
                f"{info.field_name} is {value:g}: a margin is how much worse than the baseline "
                "the candidate may be, a finite number, 0 or more (0: no worse at all)"
            )
        if info.field_name == "max_relative_degradation" and value > 1:
            raise ValueError(
                f"max_relative_degradation is {value:g}: a share of the baseline's value, at most "
                "1 (0.05 means 5%)"
            )
        return value

    @pdt.model_validator(mode="after")
    def _says_something(self) -> Threshold:
        if self.threshold is None and not self.asks_improvement and not self.allows_degradation:
            raise ValueError(
                "set threshold, min_absolute_change, min_relative_change, max_degradation or "
                "max_relative_degradation"
            )
        if self.asks_improvement and self.allows_degradation:
            improve = self._given("min_absolute_change", "min_relative_change")
            degrade = self._given("max_degradation", "max_relative_degradation")
            raise ValueError(
                f"{' and '.join(improve)} (must be better than the baseline) contradict(s) "
                f"{' and '.join(degrade)} (may be worse than it): set one kind (over a config "
                "that sets the other, set its keys to null)"
            )
        return self

    def _given(self, *keys: str) -> list[str]:
        return [key for key in keys if getattr(self, key) is not None]

    @property
    def asks_improvement(self) -> bool:
        return self.min_absolute_change is not None or self.min_relative_change is not None

    @property
    def allows_degradation(self) -> bool:
        """Whether this is a non-inferiority threshold ("no worse than the baseline by more
        than a margin")."""
        return self.max_degradation is not None or self.max_relative_degradation is not None

    def checked_by_mlflow(self, with_baseline: bool = True) -> bool:
        """Whether MLflow has anything to check: a bound, or (with a baseline) a gain."""
        return self.threshold is not None or (with_baseline and self.asks_improvement)

    def margin(self, baseline: float) -> float | None:
        """How much worse than ``baseline`` the candidate may be, in the metric's units: the
        tighter of the absolute and relative margins; None when neither is set."""
        margins = []
        if self.max_degradation is not None:
            margins.append(self.max_degradation)
        if self.max_relative_degradation is not None:
            margins.append(self.max_relative_degradation * abs(baseline))
        return min(margins) if margins else None

    def to_mlflow(self, greater_is_better: bool, with_baseline: bool = True) -> MetricThreshold:
        """MLflow's threshold; without a baseline (first deploy) only the absolute bound. The
        non-inferiority margins are the gate's own: MLflow knows positive changes only."""
        from mlflow.models import MetricThreshold

        return MetricThreshold(
            threshold=self.threshold,
            min_absolute_change=self.min_absolute_change if with_baseline else None,
            min_relative_change=self.min_relative_change if with_baseline else None,
            greater_is_better=greater_is_better,
        )

    def describe(self, greater_is_better: bool, with_baseline: bool = True) -> str:
        """``<= 100``, ``>= 0.7``, ``5% better``: how a person reads MLflow's part."""
        parts = []
        if self.threshold is not None:
            parts.append(f"{'>=' if greater_is_better else '<='} {self.threshold:g}")
        if with_baseline and self.min_absolute_change is not None:
            parts.append(f"{self.min_absolute_change:g} better than baseline")
        if with_baseline and self.min_relative_change is not None:
            parts.append(f"{self.min_relative_change:.1%} better than baseline")
        return ", ".join(parts) or "(comparison skipped: no baseline)"

    def describe_margin(self) -> str:
        """``at most 5.0% worse than baseline``: how a person reads the non-inferiority part."""
        parts = []
        if self.max_degradation is not None:
            parts.append(f"{self.max_degradation:g}")
        if self.max_relative_degradation is not None:
            parts.append(f"{self.max_relative_degradation:.1%}")
        return f"at most {' and '.join(parts)} worse than baseline"
