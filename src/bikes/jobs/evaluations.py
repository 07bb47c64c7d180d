"""The deployment gate: may the candidate replace the champion? MLflow decides, we explain.

Any model, any table: the contract (the job's, else the candidate version's own) names the
task, the target and the features. Both models predict the same validated rows once (and give
their class probabilities, for a classifier); ``mlflow.models.evaluate`` scores each
(``model_type="regressor"`` or ``"classifier"``, plus our ``SklearnMetric``s),
``mlflow.validate_evaluation_results`` judges every ``Threshold``, a paired bootstrap checks
that asked-for improvements exceed the noise and that non-inferiority margins hold at the
interval's worse end, and per-segment metrics catch a model that is better on average but
worse where it matters (``bikes.core.gate``). The verdict is written to the run (tag
``gate_verdict``, metric ``gate_passed``; a blocked run ends ``FAILED``) and to the candidate
version before the job fails, with the champion version it was compared against, and the
candidate's figures on these rows become its ``held_out_performance`` (monitoring's
reference). ``promote_on_pass`` then moves the champion alias only if it still points there
(``registry.promote``, a compare-and-set), else ``bikes`` exits 5 and nothing moves. A
candidate that is the baseline itself is reported and skipped: no verdict, exit 0.
"""

from __future__ import annotations

import dataclasses
import re
import typing as T
import warnings

import mlflow
import numpy as np
import pandas as pd
import pydantic as pdt
from loguru import logger
from mlflow.exceptions import MlflowException
from mlflow.models.evaluation.validation import ModelValidationFailedException
from mlflow.pyfunc import PyFuncModel
from sklearn.exceptions import UndefinedMetricWarning

from bikes.core import gate, schemas
from bikes.core.comparison import Bootstrap, Slicing, slice_table
from bikes.core.contract import Contract
from bikes.core.errors import ContractError, InputError
from bikes.core.gate import (
    GATE_PASSED_METRIC,
    GATE_VERDICT_TAG,
    VALIDATION_CHAMPION_ALIAS_TAG,
    VALIDATION_CHAMPION_TAG,
    VALIDATION_RUN_TAG,
    VALIDATION_STATUS_TAG,
)
from bikes.core.metrics import (
    Labels,
    SklearnMetric,
    Threshold,
    as_classes,
    classification_metrics,
    regression_metrics,
)
from bikes.core.reference import HELD_OUT_TAG, HeldOutPerformance, event_period
from bikes.io import registry, tables
from bikes.io.contracts import CONTRACT_DESCRIPTION, ContractSpec, resolve_contract
from bikes.io.datasets import ParquetReader
from bikes.io.services import quiet
from bikes.jobs.base import Job, Locals

__all__ = ["VALIDATION_RUN_TAG", "VALIDATION_STATUS_TAG", "EvaluationsJob"]

Answer = tuple[np.ndarray, tuple[list[T.Any], np.ndarray] | None]  # predictions, (classes, probs)
HELD_OUT_ARTIFACT = "gate/held_out.parquet"  # the gate's rows with the candidate's answers
_VERSION_SOURCE = re.compile(r"^models:/(?P<name>[^/@]+)/(?P<version>\d+)$")  # a copied version
# MLflow's validate_evaluation_results logs "Validating candidate model metrics against
# baseline" and "Model validation passed!" for each threshold it checks: one per threshold,
# and "passed" right before a verdict that blocks on another check. Our verdict is the story.
MLFLOW_VALIDATION_LOGGER = "mlflow.models.evaluation.validation"
MLFLOW_EVALUATOR_LOGGER = "mlflow.models.evaluation.default_evaluator"


@dataclasses.dataclass(frozen=True)
class Evidence:
    """What the gate judges: the models, the contract, the validated rows and their truth,
    each model's answers on them, and the plan of metrics and checks."""

    refs: dict[str, registry.ModelRef]  # "candidate" and, unless a first deploy, "baseline"
    contract: Contract
    frame: pd.DataFrame
    truth: np.ndarray
    labels: Labels | None
    outputs: dict[str, gate.Outputs]
    plan: gate.Plan
    champion: str | None = None  # the champion alias's version when the gate started
    probabilities: tuple[list[T.Any], np.ndarray] | None = None  # the candidate's, per class

    @property
    def candidate(self) -> registry.ModelRef:
        return self.refs["candidate"]

    @property
    def baseline(self) -> registry.ModelRef | None:
        return self.refs.get("baseline")


class EvaluationsJob(Job):
    """Evaluate the candidate against the baseline and block it unless it is good enough.

    ``bikes`` exits 3 when the gate blocks (MLflow's ``ModelValidationFailedException``), and
    5 when ``promote_on_pass`` finds the champion moved since the gate read it
    (``PromotionConflictError``: another gate promoted meanwhile; nothing moved, the
    candidate's ``validation_status`` stays as evaluated).
    """

    KIND: T.Literal["EvaluationsJob"] = "EvaluationsJob"

    inputs: ParquetReader = pdt.Field(
        default=ParquetReader(path="data/splits/test.parquet"),
        description="The evaluation rows: the features and, unless `targets` is given, the "
        "contract's target.",
    )
    targets: ParquetReader | None = pdt.Field(
        default=None,
        description="A separate table holding the target, joined to `inputs` row by row (same "
        "number of rows): its column named as the contract's target, else its only column.",
    )
    contract: ContractSpec | None = pdt.Field(default=None, description=CONTRACT_DESCRIPTION)
    registered_model: str = pdt.Field(
        default="bikes",
        description="The registered model whose versions are compared; the aliases below are "
        "its aliases.",
    )
    candidate_uri: str | None = pdt.Field(
        default=None,
        description="models:/NAME@ALIAS or models:/NAME/VERSION. Default: "
        "models:/<registered_model>@<challenger_alias>, else the newest version.",
    )
    baseline_uri: str | None = pdt.Field(
        default=None,
        description="The model to beat. Default: models:/<registered_model>@<champion_alias>; "
        "none yet means a first deploy (absolute thresholds only).",
    )
    metrics: list[SklearnMetric] | None = pdt.Field(
        default=None,
        description="sklearn metrics computed by mlflow.models.evaluate, beyond MLflow's own. "
        "Default: root_mean_squared_error, mean_absolute_error, r2_score (regression); "
        "accuracy_score, f1_score, balanced_accuracy_score, and roc_auc_score, log_loss when "
        "the models give probabilities (classification).",
    )
    thresholds: dict[str, Threshold] | None = pdt.Field(
        default=None,
        description="Bounds per metric name (a metric above, an sklearn function, or one of "
        "MLflow's own). Default: root_mean_squared_error <= 100, r2_score >= 0.8 "
        "(regression); balanced_accuracy_score >= chance + 0.1 and roc_auc_score >= 0.6 with "
        "probabilities (classification).",
    )
    bootstrap: Bootstrap = pdt.Field(
        default=Bootstrap(),
        description="The paired bootstrap interval of each change: an asked-for gain must "
        "clear its noise, a non-inferiority margin must hold at its worse end.",
    )
    slicing: Slicing = pdt.Field(
        default=Slicing(), description="Segments scored separately, and how much worse any may get."
    )
    promote_on_pass: bool = pdt.Field(
        default=False, description="Move the champion alias to a candidate that passes."
    )
    champion_alias: str = pdt.Field(default="champion", description="The baseline's alias.")
    challenger_alias: str = pdt.Field(default="challenger", description="The candidate's alias.")
    explainability: bool = pdt.Field(
        default=False,
        description="Hand MLflow the candidate model so its evaluator explains it with SHAP "
        "(slow; needs shap installed).",
    )
    run_name: str = pdt.Field(default="evaluations", description="The MLflow run's name.")

    @pdt.model_validator(mode="after")
    def _thresholds_name_computed_metrics(self) -> EvaluationsJob:
        """Names checked before any work: the task is not known yet, so MLflow's metrics of
        either task are accepted here, and checked again against the task at run time."""
        by_key = {metric.metric_key: metric for metric in self.metrics or []}
        for name, threshold in (self.thresholds or {}).items():
            gate.criterion(name, threshold, by_key, gate.builtin_metrics(None))
        if self.slicing.metric is not None:
            gate.slice_metric(self.slicing.metric, by_key)
        return self

    def run(self) -> Locals:
        client = self.mlflow_service.client()
        candidate = self._candidate(client)
        # Read once, before any work: the version every later promotion is checked against.
        champion = registry.alias_version(client, candidate.name, self.champion_alias)
        baseline = self._baseline(client, candidate.name, champion)
        if baseline is not None and _same_model(client, candidate, baseline):
            return self._skip(candidate, baseline, champion)
        evidence = self._gather(client, candidate, baseline, champion)
        with mlflow.start_run(run_name=self.run_name) as run:
            results = {name: self._evaluate(name, evidence) for name in evidence.outputs}
            decision = self._decide(evidence, results)
            self._record(run.info.run_id, client, evidence, decision)
            self._record_held_out(run.info.run_id, client, evidence)
            if not decision.passed:  # raised inside the run, which MLflow then ends FAILED
                raise ModelValidationFailedException(
                    f"candidate {candidate.uri} blocked: " + "; ".join(decision.failures)
                )
        if self.promote_on_pass:
            registry.promote(
                client,
                candidate,
                self.champion_alias,
                evidence.champion,
                self.mlflow_service.effective_registry_uri,
            )
            logger.success(
                "{}@{} -> version {} (was {})",
                candidate.name,
                self.champion_alias,
                candidate.version,
                gate.champion_tag(evidence.champion),
            )
        return {
            "run_id": run.info.run_id,
            "verdict": decision.status,
            "task": evidence.contract.task,
            "candidate_version": candidate.version,
            "baseline_version": None if baseline is None else baseline.version,
            "champion_version": evidence.champion,
            "promoted": self.promote_on_pass,
            "verdicts": [v.row() for v in decision.verdicts],
            "slices": decision.slices,
            "metrics": results,
        }

    def _skip(
        self, candidate: registry.ModelRef, baseline: registry.ModelRef, champion: str | None
    ) -> Locals:
        """The candidate is the baseline itself: said, and nothing judged. No verdict, no
        ``validation_status`` changed, nothing promoted; the run says ``skipped``."""
        is_champion = (baseline.name, baseline.version) == (candidate.name, champion)
        role = "champion" if is_champion else "baseline"
        same = "" if baseline.uri == candidate.uri else " (the same logged model)"
        reason = f"candidate {candidate.uri} is the {role}{same}: nothing to compare"
        logger.warning("{}; no verdict written, nothing promoted", reason)
        with mlflow.start_run(run_name=self.run_name) as run:
            mlflow.set_tags(
                {
                    "candidate_version": candidate.version,
                    "baseline_version": baseline.version,
                    "champion_version": gate.champion_tag(champion),
                    "verdict": gate.SKIPPED,
                    GATE_VERDICT_TAG: gate.SKIPPED,
                    "gate_reason": reason,
                }
            )
        return {
            "run_id": run.info.run_id,
            "verdict": gate.SKIPPED,
            "reason": reason,
            "candidate_version": candidate.version,
            "baseline_version": baseline.version,
            "champion_version": champion,
            "promoted": False,
            "verdicts": [],
            "slices": pd.DataFrame(),
            "metrics": {},
        }

    def _gather(
        self,
        client: T.Any,
        candidate: registry.ModelRef,
        baseline: registry.ModelRef | None,
        champion: str | None,
    ) -> Evidence:
        """Read and validate the rows, resolve the contract, let each model answer once."""
        inputs = self.inputs.read().reset_index(drop=True)
        targets = None if self.targets is None else self.targets.read()
        refs = {"candidate": candidate} | ({} if baseline is None else {"baseline": baseline})
        models = {name: registry.load(ref) for name, ref in refs.items()}
        contract = resolve_contract(client, candidate, self.contract, model=models["candidate"])
        frame, contract = self._validated(inputs, targets, contract)
        truth = self._truth(frame, contract)
        answers = {
            name: self._answer(model, refs[name], frame, contract) for name, model in models.items()
        }
        labels = self._labels(truth, answers, contract) if contract.is_classification else None
        outputs = {name: _outputs(answer, truth, labels) for name, answer in answers.items()}
        plan = gate.plan(
            contract.task,
            metrics=self.metrics,
            thresholds=self.thresholds,
            slicing=self.slicing,
            segments=contract.segments,
            classes=0 if labels is None else len(labels.classes),
            scores=all(o.scores is not None for o in outputs.values()),
        )
        self._check_slicing(frame, plan.slicing)
        probabilities = answers["candidate"][1]
        return Evidence(
            refs, contract, frame, truth, labels, outputs, plan, champion, probabilities
        )

    def _decide(self, evidence: Evidence, results: dict[str, dict[str, float]]) -> gate.Decision:
        """Thresholds, noise and one-class check (``gate.judge``), then the segments."""
        outputs, labels, plan = evidence.outputs, evidence.labels, evidence.plan
        baseline = outputs.get("baseline")
        with quiet(MLFLOW_VALIDATION_LOGGER):
            verdicts = gate.judge(
                plan,
                results["candidate"],
                results.get("baseline"),
                evidence.truth,
                outputs["candidate"],
                baseline,
                self.bootstrap,
                labels,
            )
        metric = plan.slice_metric
        slices = slice_table(
            evidence.frame,
            evidence.truth,
            outputs["candidate"].for_metric(metric, labels),
            None if baseline is None else baseline.for_metric(metric, labels),
            metric,
            plan.slicing,
            labels,
        )
        return gate.decide(verdicts, slices, plan)

    # -- models ----------------------------------------------------------------------------------
    def _candidate(self, client: T.Any) -> registry.ModelRef:
        if self.candidate_uri is not None:
            return registry.resolve(client, self.candidate_uri)
        name, alias = self.registered_model, self.challenger_alias
        if registry.current_alias_version(client, name, alias) is not None:
            return registry.resolve(client, f"models:/{name}@{alias}")
        newest = registry.latest_version(client, name)
        logger.info("No @{} alias: the candidate is the newest version, {}", alias, newest.version)
        return newest

    def _baseline(
        self, client: T.Any, candidate_name: str, champion: str | None
    ) -> registry.ModelRef | None:
        """``baseline_uri``, else the champion: the version read at the start (never the alias
        again, which another gate may have moved since)."""
        if self.baseline_uri is not None:
            return registry.resolve(client, self.baseline_uri)
        name, alias = self.registered_model, self.champion_alias
        version = (
            champion if name == candidate_name else registry.alias_version(client, name, alias)
        )
        if version is None:
            logger.warning(
                "No {}@{}: first deploy, only the absolute thresholds apply", name, alias
            )
            return None
        return registry.resolve(client, f"models:/{name}/{version}")

    # -- data ------------------------------------------------------------------------------------
    def _validated(
        self, inputs: pd.DataFrame, targets: pd.DataFrame | None, contract: Contract
    ) -> tuple[pd.DataFrame, Contract]:
        """The rows (targets joined), checked against the contract: kinds, ranges, the target."""
        frame = inputs
        if targets is not None:
            frame, contract = self._join_targets(inputs, targets, contract)
        contract.require_target("the gate")
        source = self.inputs.source
        contract.check_kinds(frame, source)
        schemas.validate(frame, contract.inputs_schema(), source)
        target_source = source if self.targets is None else self.targets.source
        schemas.validate(frame, contract.targets_schema(), target_source)
        return frame, contract

    def _join_targets(
        self, inputs: pd.DataFrame, targets: pd.DataFrame, contract: Contract
    ) -> tuple[pd.DataFrame, Contract]:
        """``targets``' target column next to ``inputs``, row by row."""
        assert self.targets is not None
        source, columns = self.targets.source, [str(c) for c in targets.columns]
        name = contract.target
        if name is None:
            if len(columns) != 1:
                raise InputError(
                    f"{source}: {len(columns)} columns ({', '.join(columns)}): name the target "
                    "with job.contract.target"
                )
            name = columns[0]
            try:
                contract = Contract.model_validate({**contract.model_dump(), "target": name})
            except pdt.ValidationError as error:
                raise ContractError(
                    f"{source}: target {name!r} clashes with the contract "
                    f"({error.errors()[0]['msg']})"
                ) from None
        elif name not in targets.columns:
            raise InputError(
                f"{source}: no target column {name!r} (its columns: {', '.join(columns)})"
            )
        if len(targets) != len(inputs):
            raise InputError(
                f"{self.inputs.source} has {len(inputs)} rows but {source} has {len(targets)}: "
                "inputs and targets are joined row by row"
            )
        if name in inputs.columns:
            logger.warning(
                "{}: its {} column is replaced by {}'s", self.inputs.source, name, source
            )
        return inputs.assign(**{name: targets[name].to_numpy()}), contract

    def _truth(self, frame: pd.DataFrame, contract: Contract) -> np.ndarray:
        values = frame[contract.require_target("the gate")]
        return values.to_numpy() if contract.is_classification else values.to_numpy(dtype=float)

    def _check_slicing(self, frame: pd.DataFrame, slicing: Slicing) -> None:
        missing = [column for column in slicing.needed_columns if column not in frame.columns]
        if missing:
            raise InputError(
                f"{self.inputs.source}: slicing column(s) {', '.join(missing)} not in the data"
            )

    def _answer(
        self,
        model: PyFuncModel,
        ref: registry.ModelRef,
        frame: pd.DataFrame,
        contract: Contract,
    ) -> Answer:
        """Predictions (through the pyfunc, so the signature is enforced) and, for a
        classifier, its class probabilities when it gives them."""
        inputs = registry.signature_inputs(model)
        columns = [name for name, _ in inputs] if inputs else contract.feature_names
        missing = [column for column in columns if column not in frame.columns]
        if missing:
            raise InputError(
                f"{ref.uri}: needs column(s) {', '.join(missing)}, not in {self.inputs.source}"
            )
        features = frame.loc[:, columns]
        predictions = registry.predict(model, ref, features)
        scores = registry.scores(model, features) if contract.is_classification else None
        if contract.is_classification and scores is None:
            logger.info("{} gives classes only: no score-based metrics", ref.uri)
        return predictions, scores

    def _labels(self, truth: np.ndarray, answers: dict[str, Answer], contract: Contract) -> Labels:
        seen = list(pd.unique(truth))
        for predictions, scores in answers.values():
            seen += list(pd.unique(predictions))
            if scores is not None:
                seen += list(scores[0])
        labels = Labels.of(seen, contract.positive_class)
        if len(labels.classes) < 2:
            raise InputError(
                f"{self.inputs.source}: the target {contract.target!r} holds one class only "
                f"({labels.classes[0]!r}), and so do the predictions: nothing to judge"
            )
        return labels

    # -- MLflow -----------------------------------------------------------------------------------
    def _evaluate(self, name: str, evidence: Evidence) -> dict[str, float]:
        """``mlflow.models.evaluate`` in a child run of its own; the metrics it computed.

        On the stored predictions by default (each model predicts once); with
        ``explainability`` the candidate's model itself is handed over, so MLflow's default
        evaluator can explain it with SHAP (slow, and only where ``shap`` is installed).
        """
        contract, labels, outputs = evidence.contract, evidence.labels, evidence.outputs[name]
        frame, ref = evidence.frame, evidence.refs[name]
        target = contract.require_target("the gate")
        data = _plain_strings(frame.loc[:, [*contract.feature_names, target]])
        explain = self.explainability and name == "candidate"
        arguments: dict[str, T.Any] = (
            {"model": ref.uri, "data": data}
            if explain
            else {
                "data": data.assign(**{contract.prediction: outputs.predictions}),
                "predictions": contract.prediction,
            }
        )
        config: dict[str, T.Any] = {"log_model_explainability": explain}
        if labels is not None:
            config |= {"label_list": list(labels.classes), "average": "macro"}
            if labels.binary:
                config["pos_label"] = labels.positive
        extra = [
            metric.to_mlflow(labels, outputs.scores if metric.needs_scores else None)
            for metric in evidence.plan.metrics
        ]
        with (
            mlflow.start_run(run_name=name, nested=True),
            warnings.catch_warnings(),
            quiet(MLFLOW_EVALUATOR_LOGGER),  # "Testing metrics on first row...", per model
        ):
            # MLflow tries each metric on the first row alone, where most are undefined: noise.
            warnings.simplefilter("ignore", UndefinedMetricWarning)
            for one_row in ("A single label was found", "y_pred contains classes not in y_true"):
                warnings.filterwarnings("ignore", message=one_row, category=UserWarning)
            # Our schema forbids missing values: MLflow's hint about integer columns is noise.
            warnings.filterwarnings("ignore", message=".*integer column", category=UserWarning)
            result = mlflow.models.evaluate(
                **arguments,
                targets=target,
                model_type="classifier" if contract.is_classification else "regressor",
                extra_metrics=extra,
                evaluator_config=config,
            )
        figures = {key: float(value) for key, value in result.metrics.items()}
        mlflow.log_metrics({f"{name}_{key}": value for key, value in figures.items()})
        return figures

    def _record(
        self, run_id: str, client: T.Any, evidence: Evidence, decision: gate.Decision
    ) -> None:
        """The verdict where people and tools look: log, run tags and tables, model version."""
        candidate, baseline = evidence.candidate, evidence.baseline
        table, slices = decision.table(), decision.slices
        logger.info(  # fits 100 columns; every column is in gate/verdict.json and .txt
            "Gate for {} against {}:\n{}",
            candidate.uri,
            baseline.uri if baseline else "(first deploy)",
            tables.verdict_lines(table),
        )
        if not slices.empty:
            logger.info(
                "Segments ({}):\n{}",
                evidence.plan.slicing.metric,
                tables.text_table(slices, shrink=("value", "segment")),
            )
        mlflow.set_tags(
            {  # versions and names only: nothing here can hold a credential
                "candidate_version": candidate.version,
                "baseline_version": baseline.version if baseline else "none",
                "champion_version": gate.champion_tag(evidence.champion),
                "task": evidence.contract.task,
                "verdict": decision.status,
                GATE_VERDICT_TAG: decision.status,  # a column of the runs list
            }
        )
        mlflow.log_metric(GATE_PASSED_METRIC, 1.0 if decision.passed else 0.0)
        mlflow.log_table(table, "gate/verdict.json")
        mlflow.log_text(tables.text_table(table, width=None), "gate/verdict.txt")
        if not slices.empty:
            mlflow.log_table(slices, "gate/slices.json")
        intervals = {v.metric: v.interval for v in decision.verdicts if v.interval is not None}
        for metric, interval in intervals.items():  # once per metric, however many checks
            mlflow.log_metrics(
                {
                    f"difference_{metric}": interval.difference,
                    f"difference_{metric}_low": interval.low,
                    f"difference_{metric}_high": interval.high,
                }
            )
        registry.set_tags(
            client,
            candidate,
            {
                VALIDATION_STATUS_TAG: decision.status,
                VALIDATION_RUN_TAG: run_id,
                VALIDATION_CHAMPION_TAG: gate.champion_tag(evidence.champion),
                VALIDATION_CHAMPION_ALIAS_TAG: self.champion_alias,
            },
        )
        (logger.success if decision.passed else logger.error)(
            "Gate {} for {} version {}", decision.status.upper(), candidate.name, candidate.version
        )

    def _record_held_out(self, run_id: str, client: T.Any, evidence: Evidence) -> None:
        """The candidate's figures on these rows, which it did not train on, as its
        ``held_out_performance`` tag (monitoring's reference performance), the rows and its
        answers logged beside the verdict; whatever the verdict."""
        contract, frame = evidence.contract, evidence.frame
        predictions = evidence.outputs["candidate"].predictions
        rows = frame.assign(**{contract.prediction: predictions})
        if evidence.labels is None:
            figures = regression_metrics(evidence.truth, predictions)
        else:
            classes, probabilities = evidence.probabilities or (None, None)
            figures = classification_metrics(
                evidence.truth,
                predictions,
                positive_class=evidence.labels.positive,
                classes=classes,
                probabilities=probabilities,
            )
            if classes is not None and contract.score is not None:
                scores = contract.score_frame(classes, probabilities)
                rows = rows.assign(**{c: scores[c].to_numpy() for c in scores.columns})
        registry.log_table(rows, HELD_OUT_ARTIFACT)
        start, end = event_period(frame, contract.timestamp)
        record = HeldOutPerformance(
            source=f"gate test split {self.inputs.source} ({len(frame):,} rows)",
            rows=len(frame),
            start=start,
            end=end,
            metrics=figures,
            predictions_uri=f"runs:/{run_id}/{HELD_OUT_ARTIFACT}",
        )
        registry.set_tags(client, evidence.candidate, {HELD_OUT_TAG: record.to_tag()})
        logger.info(
            "{} {}: {}",
            evidence.candidate.uri,
            HELD_OUT_TAG,
            ", ".join(f"{name}={value:.4g}" for name, value in figures.items()),
        )


def _same_model(client: T.Any, candidate: registry.ModelRef, baseline: registry.ModelRef) -> bool:
    """Whether the candidate is the baseline itself: the same version, or versions registered
    from the same run's same logged model (a copy of a version follows to its original)."""
    if (candidate.name, candidate.version) == (baseline.name, baseline.version):
        return True
    first, second = _origin(client, candidate), _origin(client, baseline)
    return first[1] is not None and first == second


def _origin(client: T.Any, ref: registry.ModelRef) -> tuple[str | None, str | None]:
    """``(run_id, source)`` of the logged model behind a version, through copies (a copy's
    source is ``models:/NAME/VERSION``)."""
    found = client.get_model_version(ref.name, ref.version)
    for _ in range(20):  # a chain of copies; a loop cannot happen, but never spin
        source = str(found.source) if found.source else None
        match = _VERSION_SOURCE.match(source or "")
        if match is None:
            break
        try:
            found = client.get_model_version(match["name"], match["version"])
        except MlflowException:
            break  # the original is gone: the copy's own source is all there is
    return (found.run_id or None), (str(found.source) if found.source else None)


def _outputs(answer: Answer, truth: np.ndarray, labels: Labels | None) -> gate.Outputs:
    predictions, scores = answer
    if labels is None:
        return gate.Outputs(predictions=predictions)
    return gate.Outputs(
        predictions=as_classes(predictions, truth),
        scores=None if scores is None else labels.align(*scores),
    )


def _plain_strings(frame: pd.DataFrame) -> pd.DataFrame:
    """pandas' ``str`` columns as ``object``: MLflow's SHAP evaluator takes numpy dtypes only."""
    text = [c for c in frame.columns if isinstance(frame[c].dtype, pd.StringDtype)]
    return frame.astype(dict.fromkeys(text, object)) if text else frame
