"""Train the demand model, log everything MLflow can show, and register it."""

from __future__ import annotations

import tempfile
import typing as T
import warnings
from pathlib import Path

import mlflow
import pandas as pd
import pydantic as pdt
from loguru import logger
from mlflow.models import infer_signature

from bikes.core import schemas
from bikes.core.metrics import regression_metrics
from bikes.core.models import GradientBoostingConfig, RegressorConfig
from bikes.io import registry
from bikes.io.datasets import ParquetReader
from bikes.jobs.base import Job, Locals

REFERENCE_ARTIFACT = "reference/reference.parquet"
REFERENCE_TAG = "reference_data"


class TrainingJob(Job):
    """Fit on the train split, validate on its latest share, refit on all of it, register.

    The validation rows are the *last* ``validation_share`` of the period: a demand model is
    always asked about the future, so it is measured on the future.
    """

    KIND: T.Literal["TrainingJob"] = "TrainingJob"

    inputs: ParquetReader = ParquetReader(path="data/splits/train.parquet")
    model: RegressorConfig = GradientBoostingConfig()
    validation_share: float = pdt.Field(default=0.2, ge=0.0, lt=1.0)
    registered_model_name: str = "bikes"
    alias: str | None = None
    run_name: str = "training"
    tags: dict[str, str] = pdt.Field(default_factory=dict)

    def run(self) -> Locals:
        with warnings.catch_warnings():
            # Our schema forbids missing values, so MLflow's hint about integer columns that
            # cannot hold them, and its guess about a local path's source kind, are noise.
            warnings.filterwarnings("ignore", message=".*integer column", category=UserWarning)
            warnings.filterwarnings("ignore", message=".*dataset source", category=UserWarning)
            return self._run()

    def _run(self) -> Locals:
        frame = self._read()
        features, target = schemas.features_of(frame), frame[schemas.TARGET]
        with mlflow.start_run(run_name=self.run_name, tags=self.tags) as run:
            mlflow.log_params(self._params(len(frame)))
            dataset = mlflow.data.from_pandas(  # type: ignore[attr-defined]
                frame, source=self.inputs.source, name="train", targets=schemas.TARGET
            )
            mlflow.log_input(dataset, context="training")
            metrics = self._validate(features, target)
            if metrics:
                mlflow.log_metrics({f"validation_{name}": value for name, value in metrics.items()})
            logger.info("Fitting {} on {} rows", self.model.KIND, len(frame))
            estimator = self.model.pipeline().fit(features, target)
            predictions = estimator.predict(features)
            self._log_reference(frame, predictions)
            info = mlflow.sklearn.log_model(
                estimator,
                name="model",
                signature=infer_signature(features, predictions),
                input_example=features.head(5),
                registered_model_name=self.registered_model_name,
                skops_trusted_types=list(self.model.skops_trusted_types),
            )
            ref = registry.ModelRef(
                name=self.registered_model_name,
                version=str(info.registered_model_version),
                run_id=run.info.run_id,
            )
            client = self.mlflow_service.client()
            reference_uri = f"runs:/{run.info.run_id}/{REFERENCE_ARTIFACT}"
            registry.set_tags(client, ref, {REFERENCE_TAG: reference_uri})
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

    def _read(self) -> pd.DataFrame:
        frame = self.inputs.read()
        schemas.validate(frame, schemas.INPUTS_SCHEMA, self.inputs.source)
        schemas.validate(frame, schemas.TARGETS_SCHEMA, self.inputs.source)
        if schemas.TIMESTAMP in frame.columns:
            frame = frame.sort_values(schemas.TIMESTAMP, kind="stable").reset_index(drop=True)
        return frame

    def _params(self, rows: int) -> dict[str, T.Any]:
        params: dict[str, T.Any] = {f"model.{k}": v for k, v in self.model.model_dump().items()}
        params.update(
            rows=rows,
            validation_share=self.validation_share,
            features=",".join(schemas.FEATURE_NAMES),
        )
        return params

    def _validate(self, features: pd.DataFrame, target: pd.Series) -> dict[str, float]:
        """Fit on the earlier rows and score on the later ones; empty when disabled."""
        cut = int(len(features) * (1 - self.validation_share))
        if self.validation_share == 0 or cut == 0 or cut == len(features):
            return {}
        estimator = self.model.pipeline().fit(features.iloc[:cut], target.iloc[:cut])
        metrics = regression_metrics(target.iloc[cut:], estimator.predict(features.iloc[cut:]))
        logger.info(
            "Validation on the latest {} rows: {}",
            len(features) - cut,
            ", ".join(f"{name}={value:.3f}" for name, value in metrics.items()),
        )
        return metrics

    def _log_reference(self, frame: pd.DataFrame, predictions: T.Any) -> None:
        """Training inputs, targets and the model's own predictions: monitoring's baseline."""
        reference = frame.assign(**{schemas.PREDICTION: predictions.astype(float)})
        with tempfile.TemporaryDirectory() as directory:
            path = Path(directory) / Path(REFERENCE_ARTIFACT).name
            reference.to_parquet(path, index=False)
            mlflow.log_artifact(str(path), artifact_path=str(Path(REFERENCE_ARTIFACT).parent))
