"""The gate's judgement, from plain values: may the candidate replace the champion?

``plan`` turns the config (metrics, thresholds, slicing; task defaults where unsaid) into what
to compute and check; ``judge`` checks each ``Threshold`` with MLflow's own
``validate_evaluation_results`` (bounds, asked-for gains, which must also clear the noise of a
paired bootstrap) and, beside it, the non-inferiority margins MLflow cannot express ("no worse
than the baseline by more than a margin", on the worse end of the bootstrap interval); a
classifier that answers one class for every row is blocked whatever its thresholds; ``decide``
adds the segments that regress. One verdict per check, each a frozen record; the job only feeds
in what the models answered and writes the records where people look.
"""

from __future__ import annotations

import dataclasses
import math
import typing as T

import mlflow
import numpy as np
import numpy.typing as npt
import pandas as pd
import pydantic as pdt
from mlflow.models.evaluation import EvaluationResult
from mlflow.models.evaluation.validation import ModelValidationFailedException

from bikes.core.errors import ConfigError
from bikes.core.metrics import (
    MLFLOW_CLASSIFIER_METRICS,
    MLFLOW_REGRESSOR_METRICS,
    Labels,
    SklearnMetric,
    Threshold,
)

if T.TYPE_CHECKING:  # scipy loads with comparison: the promotion job needs only the tags
    from bikes.core.comparison import Bootstrap, Interval, Slicing

Task = T.Literal["regression", "classification"]

# On the candidate version: the gate's verdict and the run that gave it (promotion reads them).
VALIDATION_STATUS_TAG = "validation_status"
VALIDATION_RUN_TAG = "validation_run_id"
# The champion the gate compared the candidate against, and its alias: a promotion moves the
# alias only if it still points there (compare-and-set), so two gates racing cannot both win.
VALIDATION_CHAMPION_TAG = "validation_champion_version"
VALIDATION_CHAMPION_ALIAS_TAG = "validation_champion_alias"
NO_CHAMPION = "none"  # the tag's value on a first deploy: no champion to compare against
# On the gate's MLflow run, for the runs list: passed, failed or skipped (the candidate is the
# baseline itself), and 1/0 (not logged when skipped). A blocked run also ends FAILED.
GATE_VERDICT_TAG = "gate_verdict"
GATE_PASSED_METRIC = "gate_passed"
SKIPPED = "skipped"


def champion_tag(version: str | None) -> str:
    """The ``validation_champion_version`` value for the champion compared against."""
    return NO_CHAMPION if version is None else str(version)


def compared_champion(tag: str) -> str | None:
    """The champion version a ``validation_champion_version`` tag names (None: none)."""
    return None if tag == NO_CHAMPION else tag


# Names, made SklearnMetric on use: checking a name imports sklearn.metrics, which a promotion
# (reading the tags above) never needs.
REGRESSION_METRICS = ("root_mean_squared_error", "mean_absolute_error", "r2_score")
REGRESSION_THRESHOLDS = {
    # Good enough on its own; confs/evaluations.yaml also asks for no loss beyond noise.
    "root_mean_squared_error": {"threshold": 100.0},
    "r2_score": {"threshold": 0.8},
}
CLASSIFICATION_METRICS = ("accuracy_score", "f1_score", "balanced_accuracy_score")
# Added by default when the models give class probabilities.
SCORE_METRICS = ("roc_auc_score", "log_loss")
# Above chance by this much: balanced accuracy (chance: 1 / classes) and ROC AUC (chance: 0.5).
MARGIN_OVER_CHANCE = 0.1
SLICING_METRICS: dict[Task, str] = {
    "regression": "root_mean_squared_error",
    "classification": "balanced_accuracy_score",
}
# MLflow's names for figures it computes from probabilities only when it predicts itself: the
# gate computes them from the models' scores with sklearn, under MLflow's name.
IMPLIED_METRICS = {"roc_auc": "roc_auc_score"}
SINGLE_CLASS_CHECK = "predicted_classes"
# What each verdict checked: MLflow's ``MetricThreshold`` (bound, asked-for gain and its noise),
# the gate's non-inferiority margin, the one-class check of a classifier.
THRESHOLD_CHECK = "threshold"
NON_INFERIORITY_CHECK = "non_inferiority"
CLASSES_CHECK = "single_class"


def builtin_metrics(task: Task | None) -> dict[str, bool]:
    """What MLflow computes on its own for ``task`` (both tasks when None), with directions."""
    if task == "regression":
        return dict(MLFLOW_REGRESSOR_METRICS)
    if task == "classification":
        return dict(MLFLOW_CLASSIFIER_METRICS)
    return {**MLFLOW_REGRESSOR_METRICS, **MLFLOW_CLASSIFIER_METRICS}


def default_metrics(task: Task, scores: bool) -> list[SklearnMetric]:
    names = (
        REGRESSION_METRICS
        if task == "regression"
        else (*CLASSIFICATION_METRICS, *(SCORE_METRICS if scores else ()))
    )
    return [SklearnMetric(name=name) for name in names]


def implied_metric(name: str) -> SklearnMetric | None:
    """The sklearn metric behind one of MLflow's probability-based names (``roc_auc``)."""
    function = IMPLIED_METRICS.get(name)
    return None if function is None else SklearnMetric(name=function, key=name)


def default_thresholds(task: Task, classes: int, scores: bool) -> dict[str, Threshold]:
    """Regression: the bike gate's bounds. Classification: above chance by a margin, which a
    constant classifier never is."""
    if task == "regression":
        return {name: Threshold(**bound) for name, bound in REGRESSION_THRESHOLDS.items()}
    chance = 1 / max(classes, 2)
    thresholds = {
        "balanced_accuracy_score": Threshold(threshold=round(chance + MARGIN_OVER_CHANCE, 4))
    }
    if scores:
        thresholds["roc_auc_score"] = Threshold(threshold=0.5 + MARGIN_OVER_CHANCE)
    return thresholds


@dataclasses.dataclass(frozen=True)
class Outputs:
    """One model's answers on the gate's rows: predicted values or classes and, for a
    classifier that gives them, its scores (binary: the positive class's probability;
    multiclass: one column per class of the ``Labels``)."""

    predictions: np.ndarray
    scores: np.ndarray | None = None

    def for_metric(self, metric: SklearnMetric, labels: Labels | None) -> np.ndarray:
        """What ``metric`` is computed on: the scores for a score metric of a classifier."""
        if labels is not None and metric.needs_scores:
            if self.scores is None:
                raise ConfigError(f"job.metrics: {metric.metric_key} needs class probabilities")
            return self.scores
        return self.predictions


@dataclasses.dataclass(frozen=True)
class Criterion:
    """A threshold with its metric's direction and, where sklearn computes the metric, the
    function the bootstrap resamples (None: a figure of MLflow's own, judged as it is)."""

    name: str
    threshold: Threshold
    higher_is_better: bool
    metric: SklearnMetric | None


@dataclasses.dataclass(frozen=True)
class Plan:
    """What the gate computes (``metrics``, beyond MLflow's own), checks and slices by."""

    metrics: tuple[SklearnMetric, ...]
    criteria: tuple[Criterion, ...]
    slicing: Slicing
    slice_metric: SklearnMetric

    @property
    def directions(self) -> dict[str, bool]:
        return {c.name: c.higher_is_better for c in self.criteria}


@dataclasses.dataclass(frozen=True)
class Verdict:
    """One line of the gate's table: one check of one metric.

    ``change`` is ``candidate - baseline`` and ``interval`` its paired bootstrap interval;
    ``margin`` (non-inferiority only) how much worse than the baseline the candidate may be,
    in the metric's units."""

    metric: str
    candidate: float | None
    baseline: float | None
    threshold: str
    change: float | None
    interval: Interval | None
    passed: bool
    reason: str
    check: str = THRESHOLD_CHECK
    margin: float | None = None

    def row(self) -> dict[str, T.Any]:
        return {
            "metric": self.metric,
            "check": self.check,
            "candidate": self.candidate,
            "baseline": self.baseline,
            "threshold": self.threshold,
            "change": self.change,
            "interval_low": None if self.interval is None else self.interval.low,
            "interval_high": None if self.interval is None else self.interval.high,
            "margin": self.margin,
            "verdict": "passed" if self.passed else "failed",
            "reason": self.reason,
        }


@dataclasses.dataclass(frozen=True)
class Decision:
    """The gate's answer: every verdict, the segments table and what failed, in words."""

    verdicts: tuple[Verdict, ...]
    slices: pd.DataFrame = dataclasses.field(compare=False)
    slice_failures: tuple[str, ...] = ()

    @property
    def failures(self) -> list[str]:
        return [v.reason for v in self.verdicts if not v.passed] + list(self.slice_failures)

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def status(self) -> str:
        return "passed" if self.passed else "failed"

    def table(self) -> pd.DataFrame:
        return pd.DataFrame([v.row() for v in self.verdicts])


# -- planning -------------------------------------------------------------------------------------
def criterion(
    name: str,
    threshold: Threshold,
    metrics: T.Mapping[str, SklearnMetric],
    builtins: T.Mapping[str, bool],
) -> Criterion:
    """The threshold on ``name``: a configured metric, an sklearn function of that name, a
    figure MLflow computes, or (with ``greater_is_better``) one bikes does not know.
    ``ValueError`` (``thresholds.<name>: ...``) when none fits or the directions disagree."""
    metric = metrics.get(name) or implied_metric(name) or _sklearn(name, threshold)
    if metric is not None:
        higher = metric.higher_is_better
    elif name in builtins:
        higher = builtins[name]
    elif threshold.greater_is_better is not None:
        higher = threshold.greater_is_better  # MLflow computes it, or the run says it did not
    else:
        known = ", ".join(sorted({*builtins, *metrics, *IMPLIED_METRICS}))
        raise ValueError(
            f"thresholds.{name}: not a computed metric (known: {known}; or an sklearn.metrics "
            "function; or say greater_is_better for a metric MLflow computes)"
        )
    if threshold.greater_is_better is not None and threshold.greater_is_better != higher:
        raise ValueError(
            f"thresholds.{name}: greater_is_better={threshold.greater_is_better} contradicts "
            f"{name}, which is better {'higher' if higher else 'lower'}"
        )
    return Criterion(name=name, threshold=threshold, higher_is_better=higher, metric=metric)


def _sklearn(name: str, threshold: Threshold) -> SklearnMetric | None:
    """The sklearn function ``name``, its direction from its name, else from the threshold."""
    for direction in (None, threshold.greater_is_better):
        try:
            return SklearnMetric(name=name, greater_is_better=direction)
        except pdt.ValidationError:
            continue
    return None


def slice_metric(name: str, metrics: T.Mapping[str, SklearnMetric]) -> SklearnMetric:
    """The metric scored per segment: a configured one, or an sklearn function by name."""
    metric = metrics.get(name) or implied_metric(name)
    if metric is not None:
        return metric
    try:
        return SklearnMetric(name=name)
    except pdt.ValidationError:
        raise ValueError(f"slicing.metric: {name!r} is not a computed metric") from None


def plan(
    task: Task,
    *,
    metrics: T.Sequence[SklearnMetric] | None,
    thresholds: T.Mapping[str, Threshold] | None,
    slicing: Slicing,
    segments: T.Sequence[str],
    classes: int = 0,
    scores: bool = False,
) -> Plan:
    """Metrics, thresholds and slicing for ``task``, the defaults filled in: ``classes`` the
    number of classes, ``scores`` whether every model gives class probabilities. A threshold
    on an sklearn function not among the metrics adds it to them. ``ConfigError`` names the key
    at fault."""
    chosen = list(metrics) if metrics is not None else default_metrics(task, scores)
    wanted = (
        dict(thresholds) if thresholds is not None else default_thresholds(task, classes, scores)
    )
    by_key = {metric.metric_key: metric for metric in chosen}
    try:
        criteria = [
            criterion(name, threshold, by_key, builtin_metrics(task))
            for name, threshold in wanted.items()
        ]
        sliced = slice_metric(slicing.metric or SLICING_METRICS[task], by_key)
    except ValueError as error:
        raise ConfigError(f"job.{error}") from None
    for c in criteria:
        if c.metric is not None and c.metric.metric_key not in by_key:
            by_key[c.metric.metric_key] = c.metric
    if task == "classification" and not scores:
        needing = [key for key, m in by_key.items() if m.needs_scores]
        if sliced.needs_scores:
            needing.append(f"slicing.metric {sliced.metric_key}")
        if needing:
            raise ConfigError(
                f"job.metrics: {', '.join(needing)} need(s) class probabilities, which the "
                "model(s) do not give (no predict_proba, no per-class columns)"
            )
    return Plan(
        metrics=tuple(by_key.values()),
        criteria=tuple(criteria),
        slicing=slicing.resolved(segments, sliced.metric_key),
        slice_metric=sliced,
    )


# -- judging ---------------------------------------------------------------------------------------
def check(
    criterion: Criterion,
    candidate: T.Mapping[str, float],
    baseline: T.Mapping[str, float] | None,
) -> tuple[bool, str]:
    """MLflow's ``validate_evaluation_results`` on one threshold: ``(passed, reason)``. A
    threshold that leaves MLflow nothing to check (a gain asked on a first deploy) passes."""
    name, threshold = criterion.name, criterion.threshold
    if not threshold.checked_by_mlflow(baseline is not None):
        return True, "ok"
    try:
        mlflow.validate_evaluation_results(
            {name: threshold.to_mlflow(criterion.higher_is_better, baseline is not None)},
            EvaluationResult(metrics=dict(candidate), artifacts={}),
            None if baseline is None else EvaluationResult(metrics=dict(baseline), artifacts={}),
        )
    except ModelValidationFailedException as failure:
        if math.isnan(float(candidate[name])):
            return False, f"{name}: undefined on these rows (NaN)"
        return False, short_reason(name, str(failure), threshold, criterion.higher_is_better)
    return True, "ok"


def short_reason(name: str, message: str, threshold: Threshold, higher: bool) -> str:
    """MLflow's verdict, one clause per failed check, instead of its paragraph."""
    clauses = []
    if "value threshold check failed" in message:
        clauses.append(f"{'below' if higher else 'above'} {threshold.threshold:g}")
    if "absolute change check failed" in message:
        clauses.append(f"not {threshold.min_absolute_change:g} better than the baseline")
    if "relative change check failed" in message:
        clauses.append(f"not {threshold.min_relative_change:.1%} better than the baseline")
    return f"{name}: {', '.join(clauses) or ' '.join(message.split())}"


def judge(
    plan: Plan,
    candidate_metrics: T.Mapping[str, float],
    baseline_metrics: T.Mapping[str, float] | None,
    truth: npt.ArrayLike,
    candidate: Outputs,
    baseline: Outputs | None,
    bootstrap: Bootstrap,
    labels: Labels | None = None,
) -> list[Verdict]:
    """Each threshold judged alone by MLflow, then by the noise it must clear, and its
    non-inferiority margin on the bootstrap interval; a classifier answering one class is
    blocked first. One verdict per check."""
    from bikes.core.comparison import paired_difference_interval

    verdicts = [] if labels is None else [single_class(truth, candidate, baseline)]
    compare = baseline_metrics is not None and baseline is not None
    for c in plan.criteria:
        for name, figures in (("candidate", candidate_metrics), ("baseline", baseline_metrics)):
            if figures is not None and c.name not in figures:
                raise ConfigError(
                    f"job.thresholds.{c.name}: not computed for the {name} "
                    f"(computed: {', '.join(sorted(figures))})"
                )
        value = float(candidate_metrics[c.name])
        base = float(baseline_metrics[c.name]) if baseline_metrics is not None else None
        interval = None
        if compare and bootstrap.enabled and c.metric is not None and baseline is not None:
            interval = paired_difference_interval(
                c.metric,
                truth,
                candidate.for_metric(c.metric, labels),
                baseline.for_metric(c.metric, labels),
                bootstrap,
                labels,
            )
        if c.threshold.threshold is not None or c.threshold.asks_improvement:
            passed, reason = check(c, candidate_metrics, baseline_metrics)
            if (
                passed
                and interval is not None
                and c.threshold.asks_improvement
                and not interval.better_beyond_noise(c.higher_is_better)
            ):
                passed = False
                reason = (
                    f"{c.name}: improvement {interval.difference:+.4g} is within noise "
                    f"({interval.confidence:.0%} interval "
                    f"{interval.low:+.4g} .. {interval.high:+.4g})"
                )
            verdicts.append(
                Verdict(
                    metric=c.name,
                    candidate=value,
                    baseline=base,
                    threshold=c.threshold.describe(c.higher_is_better, with_baseline=compare),
                    change=None if base is None else value - base,
                    interval=interval,
                    passed=passed,
                    reason=reason,
                )
            )
        if c.threshold.allows_degradation:
            verdicts.append(non_inferiority(c, value, base if compare else None, interval))
    return verdicts


def non_inferiority(
    criterion: Criterion, candidate: float, baseline: float | None, interval: Interval | None
) -> Verdict:
    """Non-inferiority, "no worse than the baseline by more than the margin": passes when the
    worse end of the interval of ``candidate - baseline`` (its upper end for an error, lower for
    a score) is within the margin; without an interval (bootstrap off, or a figure only MLflow
    computes) the point difference is judged. No baseline (a first deploy): nothing to be worse
    than."""
    name, threshold = criterion.name, criterion.threshold
    described = threshold.describe_margin()
    if baseline is None:
        return Verdict(
            metric=name,
            candidate=candidate,
            baseline=None,
            threshold=f"{described} (skipped: no baseline)",
            change=None,
            interval=None,
            passed=True,
            reason="ok",
            check=NON_INFERIORITY_CHECK,
        )
    margin = threshold.margin(baseline)
    assert margin is not None  # allows_degradation: a margin is set
    change = candidate - baseline
    if interval is None:
        worst, evidence = change, "point estimate, no bootstrap interval"
    else:
        worst = interval.low if criterion.higher_is_better else interval.high
        evidence = (
            f"{interval.confidence:.0%} interval of the change "
            f"{interval.low:+.4g} .. {interval.high:+.4g}"
        )
    worse_by = -worst if criterion.higher_is_better else worst
    if math.isnan(worse_by) or math.isnan(margin):
        passed, reason = False, f"{name}: undefined on these rows (NaN)"
    else:
        passed = worse_by <= margin
        reason = (
            "ok"
            if passed
            else f"{name}: up to {worse_by:.4g} worse than the baseline ({evidence}), beyond "
            f"the margin {margin:.4g} ({described})"
        )
    return Verdict(
        metric=name,
        candidate=candidate,
        baseline=baseline,
        threshold=described,
        change=change,
        interval=interval,
        passed=passed,
        reason=reason,
        check=NON_INFERIORITY_CHECK,
        margin=margin,
    )


def single_class(truth: npt.ArrayLike, candidate: Outputs, baseline: Outputs | None) -> Verdict:
    """A classifier that answers one class for every row, where the rows hold several, is
    blocked: thresholds alone may let it through (accuracy on imbalanced data)."""
    counts = {
        name: len(pd.unique(np.asarray(outputs.predictions)))
        for name, outputs in (("candidate", candidate), ("baseline", baseline))
        if outputs is not None
    }
    classes_in_rows = len(pd.unique(np.asarray(truth)))
    passed = counts["candidate"] >= 2 or classes_in_rows < 2
    rows = len(candidate.predictions)
    only = candidate.predictions[0] if rows else None
    return Verdict(
        metric=SINGLE_CLASS_CHECK,
        candidate=float(counts["candidate"]),
        baseline=float(counts["baseline"]) if "baseline" in counts else None,
        threshold=">= 2 classes",
        change=None
        if "baseline" not in counts
        else float(counts["candidate"] - counts["baseline"]),
        interval=None,
        passed=passed,
        reason="ok"
        if passed
        else f"{SINGLE_CLASS_CHECK}: predicts a single class ({_shown(only)}) for all {rows} "
        f"rows, which hold {classes_in_rows} classes",
        check=CLASSES_CHECK,
    )


def _shown(value: T.Any) -> str:
    return repr(value.item() if isinstance(value, np.generic) else value)


def slice_failures(slices: pd.DataFrame, slicing: Slicing, higher_is_better: bool) -> list[str]:
    """The segments that regress beyond ``slicing.max_relative_regression``, in one clause."""
    if slices.empty:
        return []
    failed = slices[slices["verdict"] == "failed"]
    if failed.empty:
        return []
    worst = failed.sort_values("relative_change", ascending=higher_is_better)
    examples = ", ".join(
        f"{row.segment}={row.value} {row.relative_change:+.0%}"
        for row in worst.head(3).itertuples()
    )
    return [
        f"{len(failed)} segment(s) regress by more than "
        f"{slicing.max_relative_regression:.0%} on {slicing.metric} ({examples})"
    ]


def decide(verdicts: T.Sequence[Verdict], slices: pd.DataFrame, plan: Plan) -> Decision:
    """Verdicts and segments together: the gate passes when nothing failed."""
    return Decision(
        verdicts=tuple(verdicts),
        slices=slices,
        slice_failures=tuple(
            slice_failures(slices, plan.slicing, plan.slice_metric.higher_is_better)
        ),
    )
