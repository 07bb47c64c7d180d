"""Train a model for any contract, log everything MLflow can show, and register it."""

from __future__ import annotations

import typing as T
import warnings

import pandas as pd
import pydantic as pdt
from loguru import logger

from bikes.core import schemas
from bikes.core.contract import Contract
from bikes.core.errors import ConfigError
from bikes.core.metrics import classification_metrics, regression_metrics
from bikes.core.models import GradientBoostingConfig, ModelConfig
from bikes.core.redaction import redact_url, redact_values
from bikes.core.reference import (
    HELD_OUT_TAG,
    HeldOutPerformance,
    event_period,
    validation_source,
)
from bikes.io import registry
from bikes.io.contracts import CONTRACT_ARTIFACT, CONTRACT_TAG, ContractSpec, log_contract
from bikes.io.datasets import ParquetReader
from bikes.jobs.base import Job, Locals

REFERENCE_ARTIFACT = "reference/reference.parquet"
HELD_OUT_ARTIFACT = "reference/held_out.parquet"
REFERENCE_TAG = "reference_data"
SIGNATURE_ROWS = 100  # rows the model signature is inferred from
__all__ = ["CONTRACT_ARTIFACT", "CONTRACT_TAG", "HELD_OUT_TAG", "REFERENCE_TAG", "TrainingJob"]


class TrainingJob(Job):
    """Fit on the training table, validate on its latest share, refit on all of it, register.

    The contract says the task (a regressor or a classifier is fitted), the label and the
    features (default: every column without another role). With a timestamp, the validation
    rows are the *last* ``validation_share`` of the period: a model is always asked about the
    future, so it is measured on the future. Those figures, with the rows' period and count,
    are the version's ``held_out_performance`` tag (monitoring's reference performance until
    the gate records its test-split figures), and the rows with their predictions an artifact
    (``reference/held_out.parquet``: the per-segment reference).
    """

    KIND: T.Literal["TrainingJob"] = "TrainingJob"

    inputs: ParquetReader = pdt.Field(
        default=ParquetReader(path="data/splits/train.parquet"),
        description="The training table: features and the contract's target.",
    )
    contract: ContractSpec = pdt.Field(
        description="The data contract, inline or the path of a YAML file; needs task and "
        "target. Logged with the model, so later jobs may leave it out."
    )
    model: ModelConfig = pdt.Field(
        default=GradientBoostingConfig(), description="The estimator and its parameters."
    )
    validation_share: float = pdt.Field(
        default=0.2, ge=0.0, lt=1.0, description="Latest share of rows held out to validate."
    )
    registered_model: str = pdt.Field(
        default="bikes", description="The registry entry the model is registered under."
    )
    alias: str | None = pdt.Field(default=None, description="Alias to set on the new version.")
    run_name: str = pdt.Field(default="training", description="The MLflow run's name.")
    tags: dict[str, str] = pdt.Field(default_factory=dict, description="Tags of the MLflow run.")

    # From the CLI, MLflow's import and store (about 4 s) load in the background while the table
    # is read and both models are fitted; ``_run`` waits for them before its first MLflow call.
    waits_for_mlflow: T.ClassVar[bool] = True
    # Imported by that thread too once MLflow is up (skops alone takes 1-1.5 s): the fit hides
    # them, or ``ready()`` waits for them instead of the model's logging.
    mlflow_warm_up: T.ClassVar[tuple[str, ...]] = ("mlflow.sklearn", "skops.io")

    def run(self) -> Locals:
        with warnings.catch_warnings():
            # Our schema forbids missing values, so MLflow's hint about integer columns that
            # cannot hold them, and its guess about a local path's source kind, are noise.
            warnings.filterwarnings("ignore", message=".*integer column", category=UserWarning)
            warnings.filterwarnings("ignore", message=".*dataset source", category=UserWarning)
            return self._run()

    def _run(self) -> Locals:
        frame, contract = self._read()
        target_name = contract.require_target("training")
        features, target = frame.loc[:, contract.feature_names], frame[target_name]
        metrics, held_out = self._validate(frame, contract)
        logger.info("Fitting a {} {} on {} rows", self.model.KIND, contract.task, len(frame))
        estimator = self.model.pipeline(contract).fit(features, target)
        predictions = estimator.predict(features)
        self.mlflow_service.ready()  # an unusable MLflow store fails here, before any run
        import mlflow  # loaded by now
        from mlflow.models import infer_signature

        with mlflow.start_run(run_name=self.run_name, tags=redact_values(self.tags)) as run:
            mlflow.log_params(redact_values(self._params(len(frame), contract)))
            dataset = mlflow.data.from_pandas(  # type: ignore[attr-defined]
                frame, source=redact_url(self.inputs.source), name="train", targets=target_name
            )
            mlflow.log_input(dataset, context="training")
            if metrics:
                mlflow.log_metrics({f"validation_{name}": value for name, value in metrics.items()})
            self._log_reference(frame, estimator, features, predictions, contract)
            log_contract(contract)
            client = self.mlflow_service.client()
            ref = registry.log_sklearn_model(
                client,
                estimator,
                # Types come from the dtypes and missing values are forbidden by the schema, so
                # a sample says what the whole table would (the whole took 0.2 s to scan).
                signature=infer_signature(
                    features.head(SIGNATURE_ROWS), predictions[:SIGNATURE_ROWS]
                ),
                # No input example: MLflow would load the logged model again to predict it
                # (0.8-2.5 s); the signature says the inputs, the reference artifact has rows.
                registered_model=self.registered_model,
                skops_trusted_types=list(self.model.skops_trusted_types),
                run_id=run.info.run_id,
            )
            tags = {
                REFERENCE_TAG: f"runs:/{run.info.run_id}/{REFERENCE_ARTIFACT}",
                CONTRACT_TAG: f"runs:/{run.info.run_id}/{CONTRACT_ARTIFACT}",
            }
            if held_out is not None:
                tags[HELD_OUT_TAG] = self._log_held_out(
                    held_out, metrics, contract, run.info.run_id
                )
            registry.set_tags(client, ref, tags)
            if self.alias:
                registry.set_alias(client, ref, self.alias)
        logger.success(
            "Registered {} version {}{} (run {})",
            ref.name,
            ref.version,
            f" as @{self.alias}" if self.alias else "",
            run.info.run_id,
        )
        return {"run_id": run.info.run_id, "model_version": ref.version, "metrics": metrics}

    def _read(self) -> tuple[pd.DataFrame, Contract]:
        """The table, validated against the contract (features from its columns if unsaid)."""
        frame = self.inputs.read()
        contract = self.contract.with_columns(frame)
        source = self.inputs.source
        contract.check_kinds(frame, source)
        schemas.validate(frame, contract.inputs_schema(), source)
        schemas.validate(frame, contract.targets_schema(), source)
        target = frame[contract.require_target("training")]
        if self.model.log_target and not contract.is_classification and (target < 0).any():
            raise ConfigError(
                f"job.model.log_target: {source}: target {target.name!r} has negative values "
                "(log1p needs values >= 0)"
            )
        if contract.timestamp is not None and contract.timestamp in frame.columns:
            frame = frame.sort_values(contract.timestamp, kind="stable").reset_index(drop=True)
        return frame, contract

    def _params(self, rows: int, contract: Contract) -> dict[str, T.Any]:
        params: dict[str, T.Any] = {f"model.{k}": v for k, v in self.model.model_dump().items()}
        params.update(
            rows=rows,
            task=contract.task,
            target=contract.target,
            validation_share=self.validation_share,
            features=",".join(contract.feature_names)[:6000],
        )
        return params

    def _validate(
        self, frame: pd.DataFrame, contract: Contract
    ) -> tuple[dict[str, float], pd.DataFrame | None]:
        """Fit on the earlier rows and score on the later ones: the metrics, and the later rows
        with the predictions (and score columns) of the model fitted without them; empty and
        None when disabled."""
        cut = int(len(frame) * (1 - self.validation_share))
        if self.validation_share == 0 or cut == 0 or cut == len(frame):
            logger.warning(
                "No validation part (job.validation_share {}, {} rows): no held-out "
                "performance recorded; monitoring will compare with the in-sample fit until "
                "the gate records its test-split figures",
                self.validation_share,
                len(frame),
            )
            return {}, None
        target_name = contract.require_target("training")
        features, target = frame.loc[:, contract.feature_names], frame[target_name]
        estimator = self.model.pipeline(contract).fit(features.iloc[:cut], target.iloc[:cut])
        held_out = features.iloc[cut:]
        predictions = estimator.predict(held_out)
        rows = frame.iloc[cut:].reset_index(drop=True)
        rows = rows.assign(**{contract.prediction: _plain(predictions)})
        if contract.is_classification:
            probabilities = estimator.predict_proba(held_out)
            metrics = classification_metrics(
                target.iloc[cut:],
                predictions,
                positive_class=contract.positive_class,
                classes=list(estimator.classes_),
                probabilities=probabilities,
            )
            if contract.score is not None:
                scores = contract.score_frame(list(estimator.classes_), probabilities)
                rows = rows.assign(**{c: scores[c].to_numpy() for c in scores.columns})
        else:
            metrics = regression_metrics(target.iloc[cut:], predictions)
        logger.info(
            "Validation part ({}): {}; the gate scores the test split instead",
            self._validation_part(rows, contract, cut, str(target.name)),
            ", ".join(f"{name}={value:.4g}" for name, value in metrics.items()),
        )
        return metrics, rows

    def _validation_part(
        self, rows: pd.DataFrame, contract: Contract, cut: int, target: str
    ) -> str:
        """What the validation figures are: which rows, which model, which units. A log-target
        model fits ``log1p`` of the target, yet its figures are in the target's own units."""
        start, end = event_period(rows, contract.timestamp)
        period = "" if start is None or end is None else f", {start:%Y-%m-%d}..{end:%Y-%m-%d}"
        where = (
            f"latest {self.validation_share:.0%} of the training rows: {len(rows):,}{period}; "
            f"model fitted on the earlier {cut:,}"
        )
        if contract.is_classification:
            return where
        space = ", the model fits log1p" if self.model.log_target else ""
        return f"{where}; {target} in original units{space}"

    def _log_held_out(
        self, rows: pd.DataFrame, metrics: dict[str, float], contract: Contract, run_id: str
    ) -> str:
        """Log the validation rows with their predictions; the ``held_out_performance`` tag."""
        registry.log_table(rows, HELD_OUT_ARTIFACT)
        start, end = event_period(rows, contract.timestamp)
        record = HeldOutPerformance(
            source=validation_source(self.validation_share, len(rows), start, end),
            rows=len(rows),
            start=start,
            end=end,
            metrics=metrics,
            predictions_uri=f"runs:/{run_id}/{HELD_OUT_ARTIFACT}",
        )
        return record.to_tag()

    def _log_reference(
        self,
        frame: pd.DataFrame,
        estimator: T.Any,
        features: pd.DataFrame,
        predictions: T.Any,
        contract: Contract,
    ) -> None:
        """Training inputs, targets, the model's own predictions (and the contract's score
        columns, for a classifier): monitoring's baseline."""
        reference = frame.assign(**{contract.prediction: _plain(predictions)})
        if contract.is_classification and contract.score is not None:
            scores = contract.score_frame(
                list(estimator.classes_), estimator.predict_proba(features)
            )
            reference = reference.assign(**{c: scores[c].to_numpy() for c in scores.columns})
        registry.log_table(reference, REFERENCE_ARTIFACT)


def _plain(predictions: T.Any) -> T.Any:
    values = pd.Series(predictions)
    return values.astype(float) if pd.api.types.is_numeric_dtype(values) else values
