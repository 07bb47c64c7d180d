from __future__ import annotations

import typing as T
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from bikes.core.errors import ConfigError, ContractError, InputError, SchemaError
from bikes.io.contracts import load_contract
from bikes.jobs.inference import InferenceJob
from tests.conftest import BIKES_CONTRACT, GIBRALTAR_CONTRACT


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
    assert list(outputs.columns) == ["timestamp", "prediction", "model_version"]
    assert (outputs["model_version"] == champion["model_version"]).all()
    assert (outputs["timestamp"] == inputs["timestamp"]).all()
    features = load_contract(str(BIKES_CONTRACT)).feature_names
    expected = model.predict(inputs[features])
    assert outputs["prediction"].to_numpy() == pytest.approx(expected)


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


def test_a_classifier_writes_classes_and_the_contracts_score_columns(
    classifier: dict[str, T.Any],
    services: dict[str, T.Any],
    gibraltar_splits: Path,
    tmp_path: Path,
) -> None:
    """No job.contract: the version's own contract names the columns."""
    output = tmp_path / "weather.parquet"
    job = InferenceJob.model_validate(
        {
            "registered_model": "weather",
            "inputs": {"path": str(gibraltar_splits / "production.parquet")},
            "outputs": {"path": str(output)},
            **services,
        }
    )
    with job:
        job.run()
        model = mlflow.sklearn.load_model(f"models:/weather/{classifier['model_version']}")
    inputs = pd.read_parquet(gibraltar_splits / "production.parquet")
    outputs = pd.read_parquet(output)
    assert list(outputs.columns) == [
        "observed_at",
        "predicted_sky",
        "p_fair",
        "p_cloudy",
        "p_wet",
        "model_version",
    ]
    features = inputs.drop(columns=["observed_at", "sky"])
    assert outputs["predicted_sky"].tolist() == model.predict(features).tolist()
    probabilities = model.predict_proba(features)
    for position, name in enumerate(model.classes_):
        assert outputs[f"p_{name}"].to_numpy() == pytest.approx(probabilities[:, position])


def test_a_contract_the_model_contradicts_names_the_feature(
    classifier: dict[str, T.Any],
    services: dict[str, T.Any],
    gibraltar_splits: Path,
    tmp_path: Path,
) -> None:
    contract = load_contract(str(GIBRALTAR_CONTRACT)).model_dump()
    contract["features"] = [{"name": "temp"}, {"name": "visibility"}]
    contract["segments"] = []
    job = InferenceJob.model_validate(
        {
            "registered_model": "weather",
            "contract": contract,
            "inputs": {"path": str(gibraltar_splits / "production.parquet")},
            "outputs": {"path": str(tmp_path / "out.parquet")},
            **services,
        }
    )
    with (
        job,
        pytest.raises(ContractError, match="features: visibility not an input of models:/weather/"),
    ):
        job.run()


def test_an_unwritable_output_exits_2_before_the_model_is_looked_up(
    services: dict[str, T.Any], splits_dir: Path, tmp_path: Path
) -> None:
    """It failed after every row was scored; the model URI here does not even exist."""
    (tmp_path / "a-file").write_text("not a folder")
    job = InferenceJob.model_validate(
        {
            "inputs": {"path": str(splits_dir / "production.parquet")},
            "outputs": {"path": str(tmp_path / "a-file" / "predictions.parquet")},
            "model_uri": "models:/no-such-model@champion",
            **services,
        }
    )
    with job, pytest.raises(ConfigError, match=r"^job\.outputs\.path: cannot write .*a-file is a"):
        job.run()
    assert (tmp_path / "a-file").read_text() == "not a folder"
