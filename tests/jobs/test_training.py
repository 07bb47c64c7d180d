from __future__ import annotations

import typing as T
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from bikes.core import schemas
from bikes.core.errors import SchemaError
from bikes.jobs.training import REFERENCE_ARTIFACT, REFERENCE_TAG, TrainingJob
from tests.conftest import FAST_MODEL


def test_champion_is_registered_with_a_clean_signature(
    champion: dict[str, T.Any], services: dict[str, T.Any]
) -> None:
    services["mlflow_service"].start()
    try:
        client = services["mlflow_service"].client()
        version = client.get_model_version("bikes", champion["model_version"])
        assert version.run_id == champion["run_id"]
        info = mlflow.models.get_model_info(f"models:/bikes/{champion['model_version']}")
        inputs = [column.name for column in info.signature.inputs.inputs]
        assert inputs == list(schemas.FEATURE_NAMES)
        assert not set(inputs) & {"casual", "registered", "instant", "cnt", "timestamp"}
        assert info.saved_input_example_info is not None
        run = client.get_run(champion["run_id"])
        assert run.data.params["model.max_iter"] == str(FAST_MODEL["max_iter"])
        assert {"validation_rmse", "validation_mae", "validation_r2"} <= set(run.data.metrics)
        assert run.data.metrics["validation_rmse"] == pytest.approx(champion["metrics"]["rmse"])
        assert [inp.dataset.name for inp in run.inputs.dataset_inputs] == ["train"]
        assert version.tags[REFERENCE_TAG] == f"runs:/{champion['run_id']}/{REFERENCE_ARTIFACT}"
    finally:
        services["mlflow_service"].stop()


def test_reference_data_holds_inputs_targets_and_predictions(
    champion: dict[str, T.Any],
    services: dict[str, T.Any],
    train_frame: pd.DataFrame,
    tmp_path: Path,
) -> None:
    services["mlflow_service"].start()
    try:
        path = mlflow.artifacts.download_artifacts(
            f"runs:/{champion['run_id']}/{REFERENCE_ARTIFACT}", dst_path=str(tmp_path)
        )
        model = mlflow.pyfunc.load_model(f"models:/bikes/{champion['model_version']}")
    finally:
        services["mlflow_service"].stop()
    reference = pd.read_parquet(path)
    assert len(reference) == len(train_frame)
    assert {schemas.TARGET, schemas.PREDICTION, *schemas.FEATURE_NAMES} <= set(reference.columns)
    expected = model.predict(schemas.features_of(reference.head(200)))
    assert reference[schemas.PREDICTION].head(200).to_numpy() == pytest.approx(expected)


def test_alias_is_set_when_asked(splits_dir: Path, services: dict[str, T.Any]) -> None:
    job = TrainingJob.model_validate(
        {
            "inputs": {"path": str(splits_dir / "train.parquet"), "limit": 2000},
            "model": {"KIND": "RandomForestRegressor", "n_estimators": 5, "n_jobs": 1},
            "validation_share": 0.0,
            "alias": "challenger",
            **services,
        }
    )
    with job:
        result = job.run()
        client = services["mlflow_service"].client()
        assert (
            str(client.get_model_version_by_alias("bikes", "challenger").version)
            == result["model_version"]
        )
    assert result["metrics"] == {}


def test_schema_violation_stops_before_any_run(
    tmp_path: Path, train_frame: pd.DataFrame, services: dict[str, T.Any]
) -> None:
    bad = train_frame.head(50).copy()
    bad.loc[3, "hr"] = 24
    path = tmp_path / "bad.parquet"
    bad.to_parquet(path)
    job = TrainingJob.model_validate({"inputs": {"path": str(path)}, **services})
    with job:
        before = len(mlflow.search_runs(search_all_experiments=True))
        with pytest.raises(
            SchemaError, match=r"hr: in_range\(0, 23\) failed on 1 row\(s\) \(row 3: 24\)"
        ):
            job.run()
        assert len(mlflow.search_runs(search_all_experiments=True)) == before
