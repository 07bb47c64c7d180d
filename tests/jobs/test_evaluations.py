"""The gate against a real MLflow registry: its own registered model, trained for real."""

from __future__ import annotations

import re
import typing as T
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.models.evaluation.validation import ModelValidationFailedException
from sklearn.dummy import DummyRegressor

from bikes import scripts
from bikes.core.errors import ContractError, InputError, SchemaError
from bikes.core.gate import GATE_PASSED_METRIC, GATE_VERDICT_TAG
from bikes.core.metrics import Threshold
from bikes.core.reference import HELD_OUT_TAG, HeldOutPerformance
from bikes.io.contracts import load_contract
from bikes.jobs.evaluations import VALIDATION_RUN_TAG, VALIDATION_STATUS_TAG, EvaluationsJob
from bikes.jobs.promotion import PromotionJob
from bikes.jobs.training import TrainingJob
from tests.conftest import BIKES_CONTRACT, FAST_MODEL, clean_environment, run_bikes, started

NAME = "gate"
CONTRACT = load_contract(str(BIKES_CONTRACT))
FEATURES = CONTRACT.feature_names
TARGET = "cnt"
THRESHOLDS = {
    "root_mean_squared_error": {"threshold": 100.0, "min_relative_change": 0.01},
    "r2_score": {"threshold": 0.8},
}


class ScaledAtRushHour(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
    """A champion copy that overestimates the evening rush: a slice regression on purpose."""

    def __init__(self, inner_uri: str) -> None:
        self.inner_uri = inner_uri

    def load_context(self, context: T.Any) -> None:
        self.inner = mlflow.pyfunc.load_model(self.inner_uri)

    def predict(self, context: T.Any, model_input: pd.DataFrame) -> np.ndarray:
        predictions = np.asarray(self.inner.predict(model_input), dtype=float)
        rush = model_input["hr"].between(16, 19).to_numpy()
        return np.where(rush, predictions * 1.6, predictions)


def _job(splits_dir: Path, services: dict[str, T.Any], **overrides: T.Any) -> EvaluationsJob:
    config = {
        "inputs": {"path": str(splits_dir / "test.parquet")},
        "contract": str(BIKES_CONTRACT),
        "registered_model": NAME,
        "thresholds": THRESHOLDS,
        "bootstrap": {"resamples": 50},
        **services,
        **overrides,
    }
    return EvaluationsJob.model_validate(config)


def _client(services: dict[str, T.Any]) -> T.Any:
    return services["mlflow_service"].client()


def _register(
    model: T.Any, features: pd.DataFrame, services: dict[str, T.Any], **kwargs: T.Any
) -> str:
    """Log and register a model as a new version of NAME; returns the version."""
    with started(services["mlflow_service"]), mlflow.start_run(run_name="register"):
        info = (
            mlflow.sklearn.log_model(
                model,
                name="model",
                registered_model_name=NAME,
                signature=mlflow.models.infer_signature(features, model.predict(features)),
                **kwargs,
            )
            if not isinstance(model, mlflow.pyfunc.PythonModel)
            else mlflow.pyfunc.log_model(
                name="model",
                python_model=model,
                registered_model_name=NAME,
                signature=mlflow.models.infer_signature(features, np.zeros(len(features))),
            )
        )
    return str(info.registered_model_version)


@pytest.fixture(scope="module")
def first_deploy(splits_dir: Path, services: dict[str, T.Any]) -> dict[str, T.Any]:
    """Version 1 of NAME, trained for real, passed through the gate as a first deploy."""
    training = TrainingJob.model_validate(
        {
            "inputs": {"path": str(splits_dir / "train.parquet")},
            "contract": str(BIKES_CONTRACT),
            "model": FAST_MODEL,
            "validation_share": 0.0,
            "registered_model": NAME,
            **services,
        }
    )
    with training as job:
        trained = job.run()
    with _job(splits_dir, services, promote_on_pass=True) as job:
        result = job.run()
    return {**result, "trained": trained}


@pytest.fixture(scope="module")
def retrained(first_deploy: dict[str, T.Any], splits_dir: Path, services: dict[str, T.Any]) -> str:
    """A second training of version 1's config: another version, the same quality (the same
    seeded model: the same predictions). Not the champion, so the gate compares."""
    training = TrainingJob.model_validate(
        {
            "inputs": {"path": str(splits_dir / "train.parquet")},
            "contract": str(BIKES_CONTRACT),
            "model": FAST_MODEL,
            "validation_share": 0.0,
            "registered_model": NAME,
            **services,
        }
    )
    with training as job:
        return str(job.run()["model_version"])


@pytest.fixture(scope="module")
def dummy(
    first_deploy: dict[str, T.Any], services: dict[str, T.Any], train_frame: pd.DataFrame
) -> str:
    """A version of NAME that predicts the training mean for every row."""
    features = train_frame.loc[:, FEATURES]
    return _register(
        DummyRegressor(strategy="mean").fit(features, train_frame[TARGET]), features, services
    )


def test_first_deploy_passes_on_absolute_thresholds_and_promotes(
    first_deploy: dict[str, T.Any], services: dict[str, T.Any]
) -> None:
    assert first_deploy["baseline_version"] is None
    assert first_deploy["candidate_version"] == "1"
    rows = {row["metric"]: row for row in first_deploy["verdicts"]}
    assert rows["root_mean_squared_error"]["threshold"] == "<= 100"
    assert rows["root_mean_squared_error"]["verdict"] == "passed"
    with started(services["mlflow_service"]):
        client = _client(services)
        version = client.get_model_version(NAME, "1")
        assert version.tags[VALIDATION_STATUS_TAG] == "passed"
        assert version.tags[VALIDATION_RUN_TAG] == first_deploy["run_id"]
        assert client.get_model_version_by_alias(NAME, "champion").version in (1, "1")
        run = client.get_run(first_deploy["run_id"])
        assert run.data.tags["verdict"] == "passed"
        assert run.data.tags["baseline_version"] == "none"
        artifacts = {a.path for a in client.list_artifacts(first_deploy["run_id"], "gate")}
        assert {"gate/verdict.json", "gate/verdict.txt", "gate/slices.json"} <= artifacts


def test_metric_values_equal_sklearn_on_the_same_predictions(
    first_deploy: dict[str, T.Any], services: dict[str, T.Any], test_frame: pd.DataFrame
) -> None:
    from sklearn import metrics

    with started(services["mlflow_service"]):
        model = mlflow.pyfunc.load_model(f"models:/{NAME}/1")
    predicted = model.predict(test_frame.loc[:, FEATURES])
    truth = test_frame[TARGET]
    rows = {row["metric"]: row["candidate"] for row in first_deploy["verdicts"]}
    assert rows["root_mean_squared_error"] == pytest.approx(
        metrics.root_mean_squared_error(truth, predicted)
    )
    assert rows["r2_score"] == pytest.approx(metrics.r2_score(truth, predicted))


def test_mean_predicting_dummy_is_blocked_with_the_gate_exit_code(
    first_deploy: dict[str, T.Any],
    dummy: str,
    services: dict[str, T.Any],
    splits_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    version = dummy
    config = tmp_path / "gate.yaml"
    config.write_text(
        "job:\n  KIND: EvaluationsJob\n"
        f"  inputs: {{path: {splits_dir / 'test.parquet'}}}\n"
        f"  contract: {BIKES_CONTRACT}\n"
        f"  registered_model: {NAME}\n"
        f"  candidate_uri: models:/{NAME}/{version}\n"
        "  promote_on_pass: true\n"
        "  thresholds:\n    root_mean_squared_error: {threshold: 100, min_relative_change: 0.01}\n"
    )
    tracking = services["mlflow_service"].tracking_uri
    code = scripts.main(
        [
            str(config),
            "-e",
            f"job.mlflow_service.tracking_uri={tracking}",
            "-e",
            "job.bootstrap.resamples=20",
        ]
    )
    assert code == scripts.EXIT_GATE == 3
    err = capsys.readouterr().err
    assert f"candidate models:/{NAME}/{version} blocked: root_mean_squared_error: above 100" in err
    with started(services["mlflow_service"]):
        client = _client(services)
        assert str(client.get_model_version_by_alias(NAME, "champion").version) == "1"
        tags = client.get_model_version(NAME, version).tags
        assert tags[VALIDATION_STATUS_TAG] == "failed"
        # The runs list tells the truth at a glance: a FAILED run, its verdict as a tag and a
        # metric (read back from the tracking store).
        run = client.get_run(tags[VALIDATION_RUN_TAG])
        assert run.info.status == "FAILED"
        assert run.data.tags["verdict"] == "failed"
        assert run.data.tags[GATE_VERDICT_TAG] == "failed"
        assert run.data.metrics[GATE_PASSED_METRIC] == 0.0
        # The blocked version's held-out figures are recorded all the same.
        assert HeldOutPerformance.from_tag(tags[HELD_OUT_TAG]).metrics["r2"] < 0.01
    # The gate's word holds at promotion too, unless forced.
    promotion = PromotionJob(registered_model=NAME, version=int(version), **services)
    with promotion, pytest.raises(InputError, match="validation_status is failed"):
        promotion.run()


def test_must_improve_stays_available_and_blocks_an_equal_retrain(
    first_deploy: dict[str, T.Any], retrained: str, splits_dir: Path, services: dict[str, T.Any]
) -> None:
    """``min_relative_change`` asks for a gain: a model of equal quality has none."""
    job = _job(splits_dir, services, candidate_uri=f"models:/{NAME}/{retrained}")
    with (
        job,
        pytest.raises(
            ModelValidationFailedException,
            match="root_mean_squared_error: not 1.0% better than the baseline",
        ),
    ):
        job.run()


def test_rush_hour_regression_fails_the_slice_threshold(
    first_deploy: dict[str, T.Any],
    splits_dir: Path,
    services: dict[str, T.Any],
    test_frame: pd.DataFrame,
) -> None:
    version = _register(
        ScaledAtRushHour(f"models:/{NAME}/1"), test_frame.loc[:49, FEATURES], services
    )
    job = _job(
        splits_dir,
        services,
        candidate_uri=f"models:/{NAME}/{version}",
        thresholds={"root_mean_squared_error": {"threshold": 200.0}},
        slicing={"columns": ["season"], "hour_column": "hr", "max_relative_regression": 0.25},
    )
    with (
        job,
        pytest.raises(
            ModelValidationFailedException,
            match=r"regress by more than 25% .*hour_band=evening_rush",
        ) as caught,
    ):
        job.run()
    assert "root_mean_squared_error:" not in str(caught.value)  # the average still passes


@pytest.mark.parametrize(
    ("overrides", "error", "message"),
    [
        (
            {"candidate_uri": "models:/nobody@challenger"},
            InputError,
            "registered model 'nobody' has no alias",
        ),
        (
            {"baseline_uri": f"models:/{NAME}@retired"},
            InputError,
            f"registered model '{NAME}' has no alias 'retired'",
        ),
        ({"candidate_uri": "s3://bucket/model"}, InputError, "expected models:/NAME@ALIAS"),
    ],
)
def test_bad_model_uris_promote_nothing(
    first_deploy: dict[str, T.Any],
    splits_dir: Path,
    services: dict[str, T.Any],
    overrides: dict[str, str],
    error: type[Exception],
    message: str,
) -> None:
    job = _job(splits_dir, services, promote_on_pass=True, **overrides)
    with job, pytest.raises(error, match=message):
        job.run()
    with started(services["mlflow_service"]):
        assert str(_client(services).get_model_version_by_alias(NAME, "champion").version) == "1"


def test_evaluation_data_violating_the_schema(
    first_deploy: dict[str, T.Any],
    dummy: str,
    splits_dir: Path,
    services: dict[str, T.Any],
    test_frame: pd.DataFrame,
    tmp_path: Path,
) -> None:
    bad = test_frame.head(100).copy()
    bad.loc[5, "weathersit"] = 9
    bad.to_parquet(tmp_path / "bad.parquet")
    job = _job(
        splits_dir,
        services,
        candidate_uri=f"models:/{NAME}/{dummy}",
        inputs={"path": str(tmp_path / "bad.parquet")},
    )
    with (
        job,
        pytest.raises(
            SchemaError,
            match=r"weathersit: isin\(\[1, 2, 3, 4\]\) failed on 1 row\(s\) \(row 5: 9\)",
        ),
    ):
        job.run()


def test_candidate_whose_signature_does_not_match(
    first_deploy: dict[str, T.Any], splits_dir: Path, services: dict[str, T.Any]
) -> None:
    """The contract names bike features the candidate's signature lacks: exit 2, named."""
    other = pd.DataFrame({"wind_kmh": [1.0, 2.0, 3.0], "rain_mm": [0.0, 1.0, 0.5]})
    version = _register(DummyRegressor().fit(other, [1.0, 2.0, 3.0]), other, services)
    job = _job(splits_dir, services, candidate_uri=f"models:/{NAME}/{version}")
    with (
        job,
        pytest.raises(
            ContractError,
            match=rf"job.contract.features: season, .*windspeed not an input of "
            rf"models:/{NAME}/{version} \(its signature has: wind_kmh, rain_mm\)",
        ),
    ):
        job.run()


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            {"metrics": [{"name": "rmsee"}]},
            "job.metrics.0.name: Value error, unknown sklearn metric 'rmsee'",
        ),
        ({"thresholds": {"rmse": {"threshold": 1.0}}}, "thresholds.rmse: not a computed metric"),
        ({"slicing": {"metric": "nope"}}, "slicing.metric: 'nope' is not a computed metric"),
        (
            {"thresholds": {"r2_score": {"threshold": 0.8, "max_relative_degradation": -0.05}}},
            "job.thresholds.r2_score.max_relative_degradation: Value error, "
            "max_relative_degradation is -0.05: a margin is how much worse than the baseline",
        ),
        (
            {
                "thresholds": {
                    "root_mean_squared_error": {
                        "min_relative_change": 0.01,
                        "max_relative_degradation": 0.05,
                    }
                }
            },
            "job.thresholds.root_mean_squared_error: Value error, min_relative_change (must be "
            "better than the baseline) contradict(s) max_relative_degradation (may be worse",
        ),
    ],
)
def test_config_errors_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], config: dict[str, T.Any], message: str
) -> None:
    import yaml

    path = tmp_path / "gate.yaml"
    path.write_text(yaml.safe_dump({"job": {"KIND": "EvaluationsJob", **config}}))
    assert scripts.main([str(path)]) == scripts.EXIT_INPUT
    assert message in capsys.readouterr().err


def test_slicing_column_missing_from_data(
    first_deploy: dict[str, T.Any], dummy: str, splits_dir: Path, services: dict[str, T.Any]
) -> None:
    job = _job(
        splits_dir,
        services,
        candidate_uri=f"models:/{NAME}/{dummy}",
        slicing={"columns": ["district"]},
    )
    with job, pytest.raises(InputError, match=r"slicing column\(s\) district not in the data"):
        job.run()


def test_explainability_hands_mlflow_the_model_and_gets_the_same_metrics(
    first_deploy: dict[str, T.Any], retrained: str, splits_dir: Path, services: dict[str, T.Any]
) -> None:
    job = _job(
        splits_dir,
        services,
        candidate_uri=f"models:/{NAME}/1",
        baseline_uri=f"models:/{NAME}/{retrained}",  # the same model: the same predictions
        thresholds={"r2_score": {"threshold": 0.8}},
        explainability=True,
        bootstrap={"enabled": False},
    )
    with job:
        result = job.run()
    assert result["verdicts"][0]["candidate"] == pytest.approx(result["verdicts"][0]["baseline"])
    first = {row["metric"]: row["candidate"] for row in first_deploy["verdicts"]}
    assert result["verdicts"][0]["candidate"] == pytest.approx(first["r2_score"])


def test_the_course_snippet_runs_as_written(
    champion: dict[str, T.Any],
    splits_dir: Path,
    services: dict[str, T.Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The course's notebook: inputs and targets in two files, the bike model as champion,
    every other setting left to its default (the contract is the candidate's own)."""
    # The challenger: the champion's config trained again (a copy of the champion would be the
    # champion itself, which the gate skips), so the gate tags the new version and other tests
    # find the session's champion as they left it.
    training = TrainingJob.model_validate(
        {
            "inputs": {"path": str(splits_dir / "train.parquet")},
            "contract": str(BIKES_CONTRACT),
            "model": FAST_MODEL,
            "validation_share": 0.0,
            "alias": "challenger",
            **services,
        }
    )
    with training as job:
        challenger = str(job.run()["model_version"])
    test = pd.read_parquet(splits_dir / "test.parquet")
    test.drop(columns=TARGET).to_parquet(tmp_path / "inputs_test.parquet")
    test[[TARGET]].to_parquet(tmp_path / "targets_test.parquet")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", services["mlflow_service"].tracking_uri)
    monkeypatch.chdir(tmp_path)

    # -- the snippet ------------------------------------------------------------------------
    from bikes import jobs
    from bikes.core import metrics
    from bikes.io import datasets

    evaluations_job = jobs.EvaluationsJob(
        inputs=datasets.ParquetReader(path="inputs_test.parquet"),
        targets=datasets.ParquetReader(path="targets_test.parquet"),
        metrics=[metrics.SklearnMetric(name="r2_score", greater_is_better=True)],
        thresholds={"r2_score": metrics.Threshold(threshold=0.5, greater_is_better=True)},
    )
    with evaluations_job as runner:
        result = runner.run()
    # ----------------------------------------------------------------------------------------

    (r2,) = (row for row in result["verdicts"] if row["metric"] == "r2_score")
    assert r2["verdict"] == "passed"
    assert r2["threshold"] == ">= 0.5"
    assert result["baseline_version"] == champion["model_version"]
    assert result["candidate_version"] == challenger
    with started(services["mlflow_service"]):
        model = mlflow.pyfunc.load_model(f"models:/bikes/{result['candidate_version']}")
    from sklearn.metrics import r2_score

    assert r2["candidate"] == pytest.approx(r2_score(test[TARGET], model.predict(test[FEATURES])))
    assert set(result["slices"]["segment"]) == {"season", "workingday", "weathersit"}


def test_one_table_with_the_target_and_a_targets_table_agree(
    first_deploy: dict[str, T.Any],
    dummy: str,
    splits_dir: Path,
    services: dict[str, T.Any],
    tmp_path: Path,
) -> None:
    test = pd.read_parquet(splits_dir / "test.parquet")
    test.drop(columns=TARGET).to_parquet(tmp_path / "inputs.parquet")
    test[[TARGET]].assign(row=range(len(test))).to_parquet(tmp_path / "targets.parquet")
    common = {
        "candidate_uri": f"models:/{NAME}/1",
        "baseline_uri": f"models:/{NAME}/{dummy}",
        "thresholds": {"r2_score": {"threshold": 0.8}},
        "bootstrap": {"enabled": False},
    }
    with _job(splits_dir, services, **common) as job:
        one = job.run()
    split = _job(
        splits_dir,
        services,
        inputs={"path": str(tmp_path / "inputs.parquet")},
        targets={"path": str(tmp_path / "targets.parquet")},
        **common,
    )
    with split as job:
        two = job.run()
    assert one["metrics"]["candidate"] == pytest.approx(two["metrics"]["candidate"])


def test_threshold_direction_must_agree_with_its_metric(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError, match="greater_is_better=False contradicts r2_score"):
        EvaluationsJob(thresholds={"r2_score": Threshold(threshold=0.5, greater_is_better=False)})


def test_a_blocked_gate_reads_as_a_story_in_100_columns(
    first_deploy: dict[str, T.Any],
    dummy: str,
    services: dict[str, T.Any],
    splits_dir: Path,
    tmp_path: Path,
) -> None:
    """The gate as a user runs it (a fresh process, its whole output): MLflow passes the
    bounds it checks (a generous RMSE bound, an r2 above -10) while the non-inferiority margin
    blocks the mean-predicting dummy. MLflow's "Model validation passed!" must not be printed
    before a FAILED verdict; the verdict and segment tables fit 100 columns; every column and
    the whole reasons stay in the run's gate/verdict.txt."""
    config = tmp_path / "gate.yaml"
    config.write_text(
        "job:\n  KIND: EvaluationsJob\n"
        f"  inputs: {{path: {splits_dir / 'test.parquet'}}}\n"
        f"  contract: {BIKES_CONTRACT}\n"
        f"  registered_model: {NAME}\n"
        f"  candidate_uri: models:/{NAME}/{dummy}\n"
        "  thresholds:\n"
        "    root_mean_squared_error: {threshold: 1000, max_relative_degradation: 0.05}\n"
        "    r2_score: {threshold: -10}\n"
        "  bootstrap: {resamples: 20}\n"
        f"  mlflow_service: {{tracking_uri: '{services['mlflow_service'].tracking_uri}'}}\n"
    )
    done = run_bikes([str(config)], tmp_path, clean_environment())
    output = done.stdout + done.stderr
    assert done.returncode == 3, output[-3000:]
    assert "Model validation passed" not in output
    assert "Validating candidate model metrics against baseline" not in output
    assert "Testing metrics on first row" not in output  # MLflow's evaluator, once per model
    lines = output.splitlines()
    log_line = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")
    tables = {}
    for title in ("Gate for ", "Segments ("):
        (start,) = [i for i, line in enumerate(lines) if title in line]
        end = next(i for i in range(start + 1, len(lines)) if log_line.match(lines[i]))
        tables[title] = lines[start + 1 : end]
    verdicts = tables["Gate for "]
    assert verdicts[0].split()[:3] == ["metric", "check", "candidate"]
    assert len(verdicts) >= 4  # a header, three checks, what failed
    assert any("non_inferiority" in line and "failed" in line for line in verdicts)
    assert any(line.startswith("  failed: root_mean_squared_error") for line in verdicts)
    assert len(tables["Segments ("]) >= 2
    too_wide = [line for table in tables.values() for line in table if len(line) > 100]
    assert too_wide == []
    assert any("Gate FAILED" in line for line in lines)
    with started(services["mlflow_service"]):
        client = _client(services)
        version = client.get_model_version(NAME, dummy)
        text = mlflow.artifacts.load_text(
            f"runs:/{version.tags[VALIDATION_RUN_TAG]}/gate/verdict.txt"
        )
    header = text.splitlines()[0].split()
    assert header == [
        "metric",
        "check",
        "candidate",
        "baseline",
        "threshold",
        "change",
        "interval_low",
        "interval_high",
        "margin",
        "verdict",
        "reason",
    ]
    assert "beyond the margin" in text  # the whole reason of the failed check
