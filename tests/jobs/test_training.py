from __future__ import annotations

import logging
import re
import typing as T
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from sklearn import metrics

from bikes.core.errors import ConfigError, ContractError, SchemaError
from bikes.core.reference import HELD_OUT_TAG, HeldOutPerformance
from bikes.io.contracts import CONTRACT_TAG, load_contract, model_contract
from bikes.io.registry import ModelRef
from bikes.jobs.training import HELD_OUT_ARTIFACT, REFERENCE_ARTIFACT, REFERENCE_TAG, TrainingJob
from tests.conftest import (
    BIKES_CONTRACT,
    FAST_MODEL,
    clean_environment,
    new_workspace,
    run_bikes,
    started,
)

BIKE_FEATURES = load_contract(str(BIKES_CONTRACT)).feature_names


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
        assert inputs == BIKE_FEATURES
        assert not set(inputs) & {"casual", "registered", "instant", "cnt", "timestamp"}
        assert info.signature.outputs is not None
        # no input example: MLflow would reload the model to predict it (its serving check)
        assert info.saved_input_example_info is None
        run = client.get_run(champion["run_id"])
        assert run.data.params["model.max_iter"] == str(FAST_MODEL["max_iter"])
        assert {"validation_rmse", "validation_mae", "validation_r2"} <= set(run.data.metrics)
        assert run.data.metrics["validation_rmse"] == pytest.approx(champion["metrics"]["rmse"])
        assert [inp.dataset.name for inp in run.inputs.dataset_inputs] == ["train"]
        assert version.tags[REFERENCE_TAG] == f"runs:/{champion['run_id']}/{REFERENCE_ARTIFACT}"
        # the contract travels with the model: later jobs may leave job.contract out
        assert version.tags[CONTRACT_TAG].startswith(f"runs:/{champion['run_id']}/")
        ref = ModelRef(name="bikes", version=champion["model_version"], run_id=None)
        assert model_contract(client, ref) == load_contract(str(BIKES_CONTRACT))
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
    assert {"cnt", "prediction", *BIKE_FEATURES} <= set(reference.columns)
    expected = model.predict(reference.loc[:, BIKE_FEATURES].head(200))
    assert reference["prediction"].head(200).to_numpy() == pytest.approx(expected)


def test_alias_is_set_when_asked(splits_dir: Path, services: dict[str, T.Any]) -> None:
    job = TrainingJob.model_validate(
        {
            "inputs": {"path": str(splits_dir / "train.parquet"), "limit": 2000},
            "contract": str(BIKES_CONTRACT),
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
    version = client.get_model_version("bikes", result["model_version"])
    assert HELD_OUT_TAG not in version.tags  # nothing held out: no record, never a made-up one


def test_schema_violation_stops_before_any_run(
    tmp_path: Path, train_frame: pd.DataFrame, services: dict[str, T.Any]
) -> None:
    bad = train_frame.head(50).copy()
    bad.loc[3, "hr"] = 24
    path = tmp_path / "bad.parquet"
    bad.to_parquet(path)
    job = TrainingJob.model_validate(
        {"inputs": {"path": str(path)}, "contract": str(BIKES_CONTRACT), **services}
    )
    with job:
        before = len(mlflow.search_runs(search_all_experiments=True))
        with pytest.raises(
            SchemaError, match=r"hr: in_range\(0.0, 23.0\) failed on 1 row\(s\) \(row 3: 24\)"
        ):
            job.run()
        assert len(mlflow.search_runs(search_all_experiments=True)) == before


def test_a_classifier_is_trained_from_the_contract_alone(
    classifier: dict[str, T.Any], services: dict[str, T.Any], gibraltar_splits: Path
) -> None:
    """Gibraltar weather: text label, string feature, its own timestamp name; features
    inferred from the table, kinds from its types, probabilities in the reference data."""
    with started(services["mlflow_service"]) as service:
        client = service.client()
        info = mlflow.models.get_model_info(f"models:/weather/{classifier['model_version']}")
        inputs = {c.name: c.type.name for c in info.signature.inputs.inputs}
        reference_path = mlflow.artifacts.download_artifacts(
            f"runs:/{classifier['run_id']}/{REFERENCE_ARTIFACT}"
        )
        ref = ModelRef(name="weather", version=classifier["model_version"], run_id=None)
        contract = model_contract(client, ref)
        model = mlflow.sklearn.load_model(f"models:/weather/{classifier['model_version']}")
    assert inputs["wind_dir"] == "string"
    assert "sky" not in inputs
    assert "observed_at" not in inputs
    assert contract is not None
    assert contract.feature("wind_dir").kind == "categorical"  # type: ignore[union-attr]
    reference = pd.read_parquet(reference_path)
    assert {"predicted_sky", "p_fair", "p_cloudy", "p_wet", "sky"} <= set(reference.columns)
    features = reference[contract.feature_names]
    assert reference["predicted_sky"].tolist() == model.predict(features).tolist()
    fair = list(model.classes_).index("fair")
    assert reference["p_fair"].to_numpy() == pytest.approx(model.predict_proba(features)[:, fair])
    # validation figures: the held-out latest rows, scored as sklearn scores them
    train = pd.read_parquet(gibraltar_splits / "train.parquet")
    assert set(classifier["metrics"]) == {
        "accuracy",
        "precision",
        "recall",
        "f1",
        "roc_auc",
        "log_loss",
    }
    assert 0 < classifier["metrics"]["accuracy"] <= 1
    cut = int(len(train) * 0.8)
    late = train.iloc[cut:]
    majority = metrics.accuracy_score(late["sky"], [train["sky"].iloc[:cut].mode()[0]] * len(late))
    assert classifier["metrics"]["accuracy"] >= majority - 0.1


def test_a_model_of_another_table_needs_no_bike_column(
    tmp_path: Path, services: dict[str, T.Any]
) -> None:
    """A make_regression table with a string column, its own target name, no timestamp."""
    from sklearn.datasets import make_regression

    x, y = make_regression(n_samples=400, n_features=3, noise=5.0, random_state=0)
    frame = pd.DataFrame(x, columns=["a", "b", "c"]).assign(shop=["north", "south"] * 200, sales=y)
    frame.to_parquet(tmp_path / "sales.parquet")
    job = TrainingJob.model_validate(
        {
            "inputs": {"path": str(tmp_path / "sales.parquet")},
            "contract": {"target": "sales"},
            "model": {"max_iter": 30},
            "registered_model": "sales",
            **services,
        }
    )
    with job:
        result = job.run()
    assert result["metrics"]["r2"] > 0.5
    with started(services["mlflow_service"]):
        info = mlflow.models.get_model_info(f"models:/sales/{result['model_version']}")
    assert [c.name for c in info.signature.inputs.inputs] == ["a", "b", "c", "shop"]


def test_contract_errors_name_the_column(
    tmp_path: Path, train_frame: pd.DataFrame, services: dict[str, T.Any]
) -> None:
    path = tmp_path / "train.parquet"
    train_frame.head(100).to_parquet(path)
    missing_target = TrainingJob.model_validate(
        {"inputs": {"path": str(path)}, "contract": {"target": "rentals"}, **services}
    )
    with missing_target, pytest.raises(SchemaError, match=r"missing column\(s\): rentals"):
        missing_target.run()
    train_frame.head(100).assign(cnt=-1).to_parquet(path)
    negative = TrainingJob.model_validate(
        {
            "inputs": {"path": str(path)},
            "contract": {"target": "cnt", "timestamp": "timestamp"},
            "model": {"log_target": True},
            **services,
        }
    )
    with negative, pytest.raises(ConfigError, match="log_target: .*'cnt' has negative values"):
        negative.run()
    train_frame.head(100).assign(temp="warm").to_parquet(path)
    wrong_kind = TrainingJob.model_validate(
        {"inputs": {"path": str(path)}, "contract": str(BIKES_CONTRACT), **services}
    )
    with wrong_kind, pytest.raises(ContractError, match="'temp' is numeric in the contract"):
        wrong_kind.run()


def test_training_needs_a_contract(services: dict[str, T.Any]) -> None:
    import pydantic

    with pytest.raises(pydantic.ValidationError, match="contract"):
        TrainingJob.model_validate({**services})


def test_the_held_out_record_is_the_validation_part_predicted_without_it(
    champion: dict[str, T.Any],
    services: dict[str, T.Any],
    train_frame: pd.DataFrame,
    tmp_path: Path,
) -> None:
    """The version's held_out_performance tag: the latest 20% of the period, scored by the
    model fitted on the earlier rows only (refitted here as training fits it: the same rows,
    the same seed), with their count, period and the rows kept as an artifact."""
    with started(services["mlflow_service"]) as service:
        tags = service.client().get_model_version("bikes", champion["model_version"]).tags
        record = HeldOutPerformance.from_tag(tags[HELD_OUT_TAG])
        assert record.predictions_uri == f"runs:/{champion['run_id']}/{HELD_OUT_ARTIFACT}"
        kept = pd.read_parquet(
            mlflow.artifacts.download_artifacts(record.predictions_uri, dst_path=str(tmp_path))
        )
    ordered = train_frame.sort_values("timestamp", kind="stable").reset_index(drop=True)
    cut = int(len(ordered) * 0.8)
    early, late = ordered.iloc[:cut], ordered.iloc[cut:]
    contract = load_contract(str(BIKES_CONTRACT))
    fitted = (
        TrainingJob.model_validate({"contract": str(BIKES_CONTRACT), "model": FAST_MODEL})
        .model.pipeline(contract)
        .fit(early[BIKE_FEATURES], early["cnt"])
    )
    predicted = fitted.predict(late[BIKE_FEATURES])
    assert record.rows == len(late) == len(kept)
    assert record.start == late["timestamp"].min().to_pydatetime()
    assert record.end == late["timestamp"].max().to_pydatetime()
    assert record.source == (
        f"validation split of training (last 20%, {len(late):,} rows, "
        f"{record.start.date()}..{record.end.date()})"  # type: ignore[union-attr]
    )
    assert record.metrics == pytest.approx(champion["metrics"])
    assert record.metrics["rmse"] == pytest.approx(
        metrics.root_mean_squared_error(late["cnt"], predicted)
    )
    assert record.metrics["r2"] == pytest.approx(metrics.r2_score(late["cnt"], predicted))
    assert kept["prediction"].to_numpy() == pytest.approx(predicted)
    assert kept["timestamp"].tolist() == late["timestamp"].tolist()
    # The in-sample fit of the registered model is far better than this: the optimism the
    # held-out record replaces.
    with started(services["mlflow_service"]):
        model = mlflow.pyfunc.load_model(f"models:/bikes/{champion['model_version']}")
    in_sample = metrics.root_mean_squared_error(
        ordered["cnt"], model.predict(ordered[BIKE_FEATURES])
    )
    assert in_sample < 0.5 * record.metrics["rmse"]


def test_a_classifier_records_its_held_out_scores_too(
    classifier: dict[str, T.Any], services: dict[str, T.Any], tmp_path: Path
) -> None:
    with started(services["mlflow_service"]) as service:
        tags = service.client().get_model_version("weather", classifier["model_version"]).tags
        record = HeldOutPerformance.from_tag(tags[HELD_OUT_TAG])
        kept = pd.read_parquet(
            mlflow.artifacts.download_artifacts(str(record.predictions_uri), dst_path=str(tmp_path))
        )
    assert record.metrics == pytest.approx(classifier["metrics"])
    assert {"sky", "predicted_sky", "p_fair", "p_cloudy", "p_wet"} <= set(kept.columns)
    assert record.metrics["accuracy"] == pytest.approx(
        metrics.accuracy_score(kept["sky"], kept["predicted_sky"])
    )
    assert record.start is not None
    assert "validation split of training (last 20%" in record.source


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_the_validation_line_names_its_rows_and_units_and_the_model_states_its_environment(
    splits_dir: Path,
    services: dict[str, T.Any],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The log says which rows and units its figures are (the gate's differ: other rows);
    the model's requirements are pinned, not inferred (no "Detected uv project" although the
    tests run beside uv.lock, no pip-version warning), and it still loads and predicts."""
    import importlib.metadata

    job = TrainingJob.model_validate(
        {
            "inputs": {"path": str(splits_dir / "train.parquet"), "limit": 2000},
            "contract": str(BIKES_CONTRACT),
            "model": {"KIND": "HistGradientBoosting", "max_iter": 20, "log_target": True},
            "validation_share": 0.25,
            "registered_model": "bikes-environment",
            **services,
            "logger_service": {"level": "INFO", "colorize": False},
        }
    )
    records = _Records()
    logging.getLogger("mlflow").addHandler(records)
    try:
        with job:
            result = job.run()
    finally:
        logging.getLogger("mlflow").removeHandler(records)
    line = next(x for x in capsys.readouterr().err.splitlines() if "Validation part" in x)
    assert "latest 25% of the training rows: 500, 2011-" in line
    assert "model fitted on the earlier 1,500" in line
    assert "cnt in original units, the model fits log1p" in line
    assert "the gate scores the test split" in line
    logged_r2 = float(re.search(r"\br2=(-?[\d.]+)", line).group(1))  # type: ignore[union-attr]
    uri = f"models:/bikes-environment/{result['model_version']}"
    with started(services["mlflow_service"]):
        held_out = pd.read_parquet(
            mlflow.artifacts.download_artifacts(
                f"runs:/{result['run_id']}/{HELD_OUT_ARTIFACT}", dst_path=str(tmp_path / "h")
            )
        )
        reference = pd.read_parquet(
            mlflow.artifacts.download_artifacts(
                f"runs:/{result['run_id']}/{REFERENCE_ARTIFACT}", dst_path=str(tmp_path / "r")
            )
        )
        requirements = Path(mlflow.pyfunc.get_model_dependencies(uri)).read_text()
        served = mlflow.pyfunc.load_model(uri).predict(reference[BIKE_FEATURES].head(50))
    assert len(held_out) == 500
    assert logged_r2 == pytest.approx(
        metrics.r2_score(held_out["cnt"], held_out["prediction"]), abs=1e-4
    )
    assert served == pytest.approx(reference["prediction"].head(50).to_numpy())
    pinned = {
        f"{name}=={importlib.metadata.version(name)}"
        for name in ("mlflow", "scikit-learn", "skops", "numpy", "scipy", "pandas")
    }
    assert set(requirements.split()) == pinned
    noise = [
        m
        for m in records.messages
        if "Detected uv project" in m or "pip version" in m or "mismatches" in m
    ]
    assert noise == []


MLFLOW_CHATTER = (
    "Successfully registered model",  # MLflow's fluent registration prints these two
    "already exists. Creating a new version",
    "Created version",
    "Downloading artifacts",  # its progress bar for every artifact download
    "it/s]",
)


def test_a_training_run_and_a_model_load_read_one_line_per_step(
    splits_dir: Path, tmp_path: Path
) -> None:
    """As a user runs them, in fresh processes: the job's own lines, none of MLflow's prints
    or progress bars (registering twice: the second says nothing of an existing model)."""
    cwd, env = new_workspace(tmp_path), clean_environment()
    train = [
        "confs/training.yaml",
        "-e",
        "job.model.max_iter=20",
        "-e",
        "job.alias=champion",
        "-e",
        f"job.inputs.path={splits_dir / 'train.parquet'}",
    ]
    first, second = run_bikes(train, cwd, env), run_bikes(train, cwd, env)
    predicted = run_bikes(
        ["confs/inference.yaml", "-e", f"job.inputs.path={splits_dir / 'production.parquet'}"],
        cwd,
        env,
    )
    for done in (first, second, predicted):
        assert done.returncode == 0, done.stderr[-3000:]
        said = done.stdout + done.stderr
        assert [noise for noise in MLFLOW_CHATTER if noise in said] == []
    assert "Fitting a HistGradientBoosting regression on 10821 rows" in first.stderr
    assert "Registered bikes version 1 as @champion" in first.stderr
    assert "Registered bikes version 2 as @champion" in second.stderr
    assert "Scoring 4376 rows with bikes version 2" in predicted.stderr
    assert "Wrote 4376 predictions to outputs/predictions.parquet" in predicted.stderr
