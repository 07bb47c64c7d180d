"""The deployment gate: may the candidate replace the champion? MLflow decides, we explain.

Both models predict the same validated rows once; ``mlflow.models.evaluate`` scores each
(``model_type="regressor"`` plus our ``SklearnMetric``s), ``mlflow.validate_evaluation_results``
judges every ``Threshold``, a paired bootstrap checks that asked-for improvements exceed the
noise, and per-segment metrics catch a model that is better on average but worse where it
matters. The verdict is written to the run and to the candidate version before the job fails.
"""

from __future__ import annotations

import dataclasses
import typing as T
import warnings

import mlflow
import numpy as np
import pandas as pd
import pydantic as pdt
from loguru import logger
from mlflow.models.evaluation.validation import ModelValidationFailedException
from sklearn.exceptions import UndefinedMetricWarning

from bikes.core import schemas
from bikes.core.comparison import (
    Bootstrap,
    Interval,
    Slicing,
    paired_difference_interval,
    slice_table,
)
from bikes.core.errors import ConfigError, InputError
from bikes.core.metrics import MLFLOW_REGRESSOR_METRICS, SklearnMetric, Threshold
from bikes.io import registry
from bikes.io.datasets import ParquetReader
from bikes.jobs.base import Job, Locals

VALIDATION_STATUS_TAG = "validation_status"
VALIDATION_RUN_TAG = "validation_run_id"

DEFAULT_METRICS = [
    SklearnMetric(name="root_mean_squared_error"),
    SklearnMetric(name="mean_absolute_error"),
    SklearnMetric(name="r2_score"),
]
DEFAULT_THRESHOLDS = {
    # Good enough on its own; confs/evaluations.yaml also asks for a gain over the champion.
    "root_mean_squared_error": Threshold(threshold=100.0),
    "r2_score": Threshold(threshold=0.8),
}


@dataclasses.dataclass
class Verdict:
    """One line of the gate's table."""

    metric: str
    candidate: float | None
    baseline: float | None
    threshold: str
    change: float | None
    interval: Interval | None
    passed: bool
    reason: str

    def row(self) -> dict[str, T.Any]:
        return {
            "metric": self.metric,
            "candidate": self.candidate,
            "baseline": self.baseline,
            "threshold": self.threshold,
            "change": self.change,
            "interval_low": None if self.interval is None else self.interval.low,
            "interval_high": None if self.interval is None else self.interval.high,
            "verdict": "passed" if self.passed else "failed",
            "reason": self.reason,
        }


class EvaluationsJob(Job):
    """Evaluate ``candidate_uri`` against ``baseline_uri`` and block it unless it is good enough."""

    KIND: T.Literal["EvaluationsJob"] = "EvaluationsJob"

    inputs: ParquetReader = ParquetReader(path="data/splits/test.parquet")
    registered_model_name: str = "bikes"
    candidate_uri: str | None = None  # default: @challenger, else the newest version
    baseline_uri: str | None = None  # default: @champion; absent means a first deploy
    metrics: list[SklearnMetric] = pdt.Field(default_factory=lambda: list(DEFAULT_METRICS))
    thresholds: dict[str, Threshold] = pdt.Field(default_factory=lambda: dict(DEFAULT_THRESHOLDS))
    bootstrap: Bootstrap = Bootstrap()
    slicing: Slicing = Slicing()
    promote_on_pass: bool = False
    champion_alias: str = "champion"
    challenger_alias: str = "challenger"
    explainability: bool = False  # MLflow's SHAP explanations: slow, off for the gate
    run_name: str = "evaluations"

    @pdt.model_validator(mode="after")
    def _thresholds_name_computed_metrics(self) -> EvaluationsJob:
        known = set(MLFLOW_REGRESSOR_METRICS) | {metric.metric_key for metric in self.metrics}
        for name in self.thresholds:
            if name not in known:
                raise ValueError(
                    f"thresholds.{name}: not a computed metric (known: {', '.join(sorted(known))})"
                )
        if self.slicing.metric not in known:
            raise ValueError(f"slicing.metric: {self.slicing.metric!r} is not a computed metric")
        return self

    def run(self) -> Locals:
        frame = self._read()
        client = self.mlflow_service.client()
        candidate, baseline = self._candidate(client), self._baseline(client)
        truth = frame[schemas.TARGET].to_numpy(dtype=float)
        predictions = self._predict(frame, candidate, baseline)
        with mlflow.start_run(run_name=self.run_name) as run:
            results = {
                name: self._evaluate(
                    name, frame, values, candidate.uri if name == "candidate" else None
                )
                for name, values in predictions.items()
            }
            verdicts = self._verdicts(truth, predictions, results)
            slices = self._slices(frame, truth, predictions)
            failures = [v.reason for v in verdicts if not v.passed] + self._slice_failures(slices)
            self._record(run.info.run_id, client, candidate, baseline, verdicts, slices, failures)
        if failures:
            raise ModelValidationFailedException(
                f"candidate {candidate.uri} blocked: " + "; ".join(failures)
            )
        if self.promote_on_pass:
            registry.set_alias(client, candidate, self.champion_alias)
            logger.success(
                "{}@{} -> version {}", candidate.name, self.champion_alias, candidate.version
            )
        return {
            "run_id": run.info.run_id,
            "candidate_version": candidate.version,
            "baseline_version": None if baseline is None else baseline.version,
            "verdicts": [v.row() for v in verdicts],
            "slices": slices,
        }

    def _read(self) -> pd.DataFrame:
        frame = self.inputs.read()
        schemas.validate(frame, schemas.INPUTS_SCHEMA, self.inputs.source)
        schemas.validate(frame, schemas.TARGETS_SCHEMA, self.inputs.source)
        needed = [*self.slicing.columns, self.slicing.hour_column]
        missing = [column for column in needed if column not in frame.columns]
        if missing:
            raise InputError(
                f"{self.inputs.source}: slicing column(s) {', '.join(missing)} not in the data"
            )
        return frame.reset_index(drop=True)

    def _candidate(self, client: T.Any) -> registry.ModelRef:
        if self.candidate_uri is not None:
            return registry.resolve(client, self.candidate_uri)
        name, alias = self.registered_model_name, self.challenger_alias
        if registry.current_alias_version(client, name, alias) is not None:
            return registry.resolve(client, f"models:/{name}@{alias}")
        newest = registry.latest_version(client, name)
        logger.info("No @{} alias: the candidate is the newest version, {}", alias, newest.version)
        return newest

    def _baseline(self, client: T.Any) -> registry.ModelRef | None:
        if self.baseline_uri is not None:
            return registry.resolve(client, self.baseline_uri)
        name, alias = self.registered_model_name, self.champion_alias
        if registry.current_alias_version(client, name, alias) is None:
            logger.warning(
                "No {}@{}: first deploy, only the absolute thresholds apply", name, alias
            )
            return None
        return registry.resolve(client, f"models:/{name}@{alias}")

    def _predict(
        self, frame: pd.DataFrame, candidate: registry.ModelRef, baseline: registry.ModelRef | None
    ) -> dict[str, np.ndarray]:
        """Each model predicts the same rows once; evaluation, bootstrap and slices reuse them."""
        features = schemas.features_of(frame)
        refs = {"candidate": candidate, "baseline": baseline}
        return {
            name: registry.predict(registry.load(ref), ref, features)
            for name, ref in refs.items()
            if ref is not None
        }

    def _evaluate(
        self, name: str, frame: pd.DataFrame, predictions: np.ndarray, model_uri: str | None = None
    ) -> T.Any:
        """``mlflow.models.evaluate`` in a child run of its own.

        On the stored predictions by default (each model predicts once); with
        ``explainability`` the candidate's model itself is handed over, so MLflow's default
        evaluator can explain it with SHAP (slow, and only where ``shap`` is installed).
        """
        columns = [*schemas.FEATURE_NAMES, schemas.TARGET]
        explain = self.explainability and model_uri is not None
        arguments: dict[str, T.Any] = (
            {"model": model_uri, "data": frame.loc[:, columns]}
            if explain
            else {
                "data": frame.loc[:, columns].assign(**{schemas.PREDICTION: predictions}),
                "predictions": schemas.PREDICTION,
            }
        )
        with mlflow.start_run(run_name=name, nested=True), warnings.catch_warnings():
            # MLflow tries each metric on the first row alone, where R2 is undefined: noise.
            warnings.simplefilter("ignore", UndefinedMetricWarning)
            # Our schema forbids missing values: MLflow's hint about integer columns is noise.
            warnings.filterwarnings("ignore", message=".*integer column", category=UserWarning)
            result = mlflow.models.evaluate(
                **arguments,
                targets=schemas.TARGET,
                model_type="regressor",
                extra_metrics=[metric.to_mlflow() for metric in self.metrics],
                evaluator_config={"log_model_explainability": explain},
            )
        mlflow.log_metrics({f"{name}_{key}": float(value) for key, value in result.metrics.items()})
        return result

    def _higher_is_better(self, name: str) -> bool:
        for metric in self.metrics:
            if metric.metric_key == name:
                return metric.higher_is_better
        return MLFLOW_REGRESSOR_METRICS[name]

    def _sklearn_metric(self, name: str) -> SklearnMetric | None:
        for metric in self.metrics:
            if metric.metric_key == name:
                return metric
        try:
            return SklearnMetric(name=name)
        except pdt.ValidationError:
            return None  # example_count and the like: no bootstrap for those

    def _verdicts(
        self, truth: np.ndarray, predictions: dict[str, np.ndarray], results: dict[str, T.Any]
    ) -> list[Verdict]:
        """Each threshold judged alone by MLflow, then by the noise it must clear."""
        has_baseline = "baseline" in results
        verdicts = []
        for name, threshold in self.thresholds.items():
            higher = self._higher_is_better(name)
            candidate = float(results["candidate"].metrics[name])
            baseline = float(results["baseline"].metrics[name]) if has_baseline else None
            reason = "ok"
            try:
                mlflow.validate_evaluation_results(
                    {name: threshold.to_mlflow(higher, with_baseline=has_baseline)},
                    results["candidate"],
                    results.get("baseline"),
                )
                passed = True
            except ModelValidationFailedException as failure:
                passed, reason = False, _short_reason(name, str(failure), threshold, higher)
            interval = None
            metric = self._sklearn_metric(name)
            if has_baseline and self.bootstrap.enabled and metric is not None:
                interval = paired_difference_interval(
                    metric, truth, predictions["candidate"], predictions["baseline"], self.bootstrap
                )
                if (
                    passed
                    and threshold.asks_improvement
                    and not interval.better_beyond_noise(higher)
                ):
                    passed = False
                    reason = (
                        f"{name}: improvement {interval.difference:+.4g} is within noise "
                        f"({interval.confidence:.0%} interval "
                        f"{interval.low:+.4g} .. {interval.high:+.4g})"
                    )
            verdicts.append(
                Verdict(
                    metric=name,
                    candidate=candidate,
                    baseline=baseline,
                    threshold=threshold.describe(higher, with_baseline=has_baseline),
                    change=None if baseline is None else candidate - baseline,
                    interval=interval,
                    passed=passed,
                    reason=reason,
                )
            )
        return verdicts

    def _slices(
        self, frame: pd.DataFrame, truth: np.ndarray, predictions: dict[str, np.ndarray]
    ) -> pd.DataFrame:
        metric = self._sklearn_metric(self.slicing.metric)
        if metric is None:
            raise ConfigError(
                f"job.slicing.metric: {self.slicing.metric!r} is not an sklearn metric"
            )
        missing = [
            c for c in [*self.slicing.columns, self.slicing.hour_column] if c not in frame.columns
        ]
        if missing:
            raise InputError(
                f"{self.inputs.source}: slicing column(s) {', '.join(missing)} not in the data"
            )
        return slice_table(
            frame,
            truth,
            predictions["candidate"],
            predictions.get("baseline"),
            metric,
            self.slicing,
        )

    def _slice_failures(self, slices: pd.DataFrame) -> list[str]:
        if slices.empty:
            return []
        failed = slices[slices["verdict"] == "failed"]
        if failed.empty:
            return []
        worst = failed.sort_values(
            "relative_change", ascending=self._higher_is_better(self.slicing.metric)
        )
        examples = ", ".join(
            f"{row.segment}={row.value} {row.relative_change:+.0%}"
            for row in worst.head(3).itertuples()
        )
        return [
            f"{len(failed)} segment(s) regress by more than "
            f"{self.slicing.max_relative_regression:.0%} on {self.slicing.metric} ({examples})"
        ]

    def _record(
        self,
        run_id: str,
        client: T.Any,
        candidate: registry.ModelRef,
        baseline: registry.ModelRef | None,
        verdicts: list[Verdict],
        slices: pd.DataFrame,
        failures: list[str],
    ) -> None:
        """The verdict where people and tools look: log, run tags and tables, model version."""
        passed = not failures
        status = "passed" if passed else "failed"
        table = pd.DataFrame([v.row() for v in verdicts])
        logger.info(
            "Gate for {} against {}:\n{}",
            candidate.uri,
            baseline.uri if baseline else "(first deploy)",
            _text_table(table),
        )
        if not slices.empty:
            logger.info("Segments ({}):\n{}", self.slicing.metric, _text_table(slices))
        mlflow.set_tags(
            {
                "candidate_version": candidate.version,
                "baseline_version": baseline.version if baseline else "none",
                "verdict": status,
            }
        )
        mlflow.log_table(table, "gate/verdict.json")
        mlflow.log_text(_text_table(table), "gate/verdict.txt")
        if not slices.empty:
            mlflow.log_table(slices, "gate/slices.json")
        for v in verdicts:
            if v.interval is not None:
                mlflow.log_metrics(
                    {
                        f"difference_{v.metric}": v.interval.difference,
                        f"difference_{v.metric}_low": v.interval.low,
                        f"difference_{v.metric}_high": v.interval.high,
                    }
                )
        registry.set_tags(
            client, candidate, {VALIDATION_STATUS_TAG: status, VALIDATION_RUN_TAG: run_id}
        )
        (logger.success if passed else logger.error)(
            "Gate {} for {} version {}", status.upper(), candidate.name, candidate.version
        )


def _short_reason(name: str, message: str, threshold: Threshold, higher: bool) -> str:
    """MLflow's verdict, one clause per failed check, instead of its paragraph."""
    clauses = []
    if "value threshold check failed" in message:
        clauses.append(f"{'below' if higher else 'above'} {threshold.threshold:g}")
    if "absolute change check failed" in message:
        clauses.append(f"not {threshold.min_absolute_change:g} better than the baseline")
    if "relative change check failed" in message:
        clauses.append(f"not {threshold.min_relative_change:.1%} better than the baseline")
    return f"{name}: {', '.join(clauses) or ' '.join(message.split())}"


def _text_table(table: pd.DataFrame) -> str:
    return table.to_string(index=False, float_format=lambda value: f"{value:.4g}")
