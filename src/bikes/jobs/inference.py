"""Batch predictions with the champion: validated inputs in, predictions and version out."""

from __future__ import annotations

import typing as T

import pandas as pd
import pydantic as pdt
from loguru import logger

from bikes.core import schemas
from bikes.core.contract import Contract
from bikes.io import registry
from bikes.io.contracts import CONTRACT_DESCRIPTION, ContractSpec, resolve_contract
from bikes.io.datasets import ParquetReader, ParquetWriter, check_writable
from bikes.jobs.base import Job, Locals

MODEL_VERSION = "model_version"


class InferenceJob(Job):
    """Score a parquet file; the output keeps the event time and id and names the model version.

    A classifier's output holds the predicted class and, where the contract names ``score``
    columns and the model gives probabilities, those too.
    """

    KIND: T.Literal["InferenceJob"] = "InferenceJob"

    inputs: ParquetReader = pdt.Field(
        default=ParquetReader(path="data/splits/production.parquet"),
        description="The rows to score: the contract's features (timestamp and id kept).",
    )
    outputs: ParquetWriter = pdt.Field(
        default=ParquetWriter(path="outputs/predictions.parquet"),
        description="Where predictions go: timestamp, id, prediction, scores, model_version.",
    )
    registered_model: str = pdt.Field(
        default="bikes", description="The registry entry; model_uri defaults to its @champion."
    )
    model_uri: str | None = pdt.Field(
        default=None, description="The model to use. Default: models:/<registered_model>@champion."
    )
    contract: ContractSpec | None = pdt.Field(default=None, description=CONTRACT_DESCRIPTION)

    @property
    def resolved_model_uri(self) -> str:
        return self.model_uri or f"models:/{self.registered_model}@champion"

    def run(self) -> Locals:
        # Before the model is loaded and every row scored: an unwritable output fails now.
        check_writable(self.outputs.path, "job.outputs.path")
        client = self.mlflow_service.client()
        ref = registry.resolve(client, self.resolved_model_uri)
        model = registry.load(ref)
        contract = resolve_contract(client, ref, self.contract, model)
        frame = self.inputs.read()
        contract.check_kinds(frame, self.inputs.source)
        schemas.validate(frame, contract.inputs_schema(), self.inputs.source)
        features = frame.loc[:, contract.feature_names]
        logger.info("Scoring {} rows with {} version {}", len(frame), ref.name, ref.version)
        outputs = pd.DataFrame(index=frame.index)
        for column in (contract.timestamp, contract.id):
            if column is not None and column in frame.columns:
                outputs[column] = frame[column]
        outputs[contract.prediction] = registry.predict(model, ref, features)
        outputs = outputs.join(self._scores(model, features, contract))
        outputs[MODEL_VERSION] = str(ref.version)
        path = self.outputs.write(outputs.reset_index(drop=True))
        logger.success("Wrote {} predictions to {}", len(outputs), path)
        return {"model_version": ref.version, "rows": len(outputs), "path": str(path)}

    @staticmethod
    def _scores(model: T.Any, features: pd.DataFrame, contract: Contract) -> pd.DataFrame:
        """The contract's score columns, for a classifier that gives probabilities."""
        if not contract.is_classification or contract.score is None:
            return pd.DataFrame(index=features.index)
        found = registry.scores(model, features)
        if found is None:
            logger.warning("The model gives no probabilities: score columns left out")
            return pd.DataFrame(index=features.index)
        classes, probabilities = found
        scores = contract.score_frame(classes, probabilities)
        scores.index = features.index
        return scores
