"""Batch predictions with the champion: validated inputs in, predictions and version out."""

from __future__ import annotations

import typing as T

import numpy as np
import pandas as pd
from loguru import logger

from bikes.core import schemas
from bikes.io import registry
from bikes.io.datasets import ParquetReader, ParquetWriter
from bikes.jobs.base import Job, Locals


class InferenceJob(Job):
    """Score a parquet file; the output keeps the event time and names the model version."""

    KIND: T.Literal["InferenceJob"] = "InferenceJob"

    inputs: ParquetReader = ParquetReader(path="data/splits/production.parquet")
    outputs: ParquetWriter = ParquetWriter(path="outputs/predictions.parquet")
    model_uri: str = "models:/bikes@champion"

    def run(self) -> Locals:
        frame = self.inputs.read()
        schemas.validate(frame, schemas.INPUTS_SCHEMA, self.inputs.source)
        ref = registry.resolve(self.mlflow_service.client(), self.model_uri)
        model = registry.load(ref)
        logger.info("Scoring {} rows with {} version {}", len(frame), ref.name, ref.version)
        predictions = np.asarray(model.predict(schemas.features_of(frame)), dtype=float)
        outputs = pd.DataFrame(
            {schemas.PREDICTION: predictions, schemas.MODEL_VERSION: ref.version},
            index=frame.index,
        )
        if schemas.TIMESTAMP in frame.columns:
            outputs.insert(0, schemas.TIMESTAMP, frame[schemas.TIMESTAMP])
        outputs[schemas.MODEL_VERSION] = outputs[schemas.MODEL_VERSION].astype(str)
        schemas.validate(outputs, schemas.OUTPUTS_SCHEMA, "predictions")
        path = self.outputs.write(outputs.reset_index(drop=True))
        logger.success("Wrote {} predictions to {}", len(outputs), path)
        return {"model_version": ref.version, "rows": len(outputs), "path": str(path)}
