from __future__ import annotations

import typing as T
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from bikes.core import schemas
from bikes.core.errors import InputError, SchemaError
from bikes.jobs.inference import InferenceJob


def test_predictions_are_the_champions_own(
    champion: dict[str, T.Any], services: dict[str, T.Any], splits_dir: Path, tmp_path: Path
) -> None:
    output = tmp_path / "out" / "predictions.parquet"
    job = InferenceJob.model_validate(
        {
            "inputs": {"path": str(splits_dir / "production.parquet")},
            "outputs": {"path": str(output)},
            **services,
        }
    )
    with job:
        result = job.run()
        model = mlflow.pyfunc.load_model(f"models:/bikes/{champion['model_version']}")
    inputs = pd.read_parquet(splits_dir / "production.parquet")
    outputs = pd.read_parquet(output)
    assert result == {
        "model_version": champion["model_version"],
        "rows": len(inputs),
        "path": str(output),
    }
    assert list(outputs.columns) == [schemas.TIMESTAMP, schemas.PREDICTION, schemas.MODEL_VERSION]
    assert (outputs[schemas.MODEL_VERSION] == champion["model_version"]).all()
    assert (outputs[schemas.TIMESTAMP] == inputs[schemas.TIMESTAMP]).all()
    expected = model.predict(schemas.features_of(inputs))
    assert outputs[schemas.PREDICTION].to_numpy() == pytest.approx(expected)


def test_invalid_inputs_write_nothing(
    champion: dict[str, T.Any], services: dict[str, T.Any], test_frame: pd.DataFrame, tmp_path: Path
) -> None:
    bad = test_frame.head(20).drop(columns=["hum"])
    bad.to_parquet(tmp_path / "bad.parquet")
    output = tmp_path / "predictions.parquet"
    job = InferenceJob.model_validate(
        {
            "inputs": {"path": str(tmp_path / "bad.parquet")},
            "outputs": {"path": str(output)},
            **services,
        }
    )
    with job, pytest.raises(SchemaError, match=r"missing column\(s\): hum"):
        job.run()
    assert not output.exists()


def test_missing_alias_is_an_input_error(
    champion: dict[str, T.Any], services: dict[str, T.Any], splits_dir: Path, tmp_path: Path
) -> None:
    job = InferenceJob.model_validate(
        {
            "inputs": {"path": str(splits_dir / "test.parquet")},
            "outputs": {"path": str(tmp_path / "p.parquet")},
            "model_uri": "models:/bikes@retired",
            **services,
        }
    )
    with job, pytest.raises(InputError, match="has no alias 'retired'"):
        job.run()
