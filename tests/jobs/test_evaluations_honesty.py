"""The shipped gate (confs/evaluations.yaml) tells the truth, against a real MLflow store.

A retrain of equal quality passes against the model it retrains (non-inferiority within
noise); the champion gated against itself is skipped, writing nothing; a blocked run ends
FAILED with its verdict in the runs list; the candidate's figures on the gate's rows become its
held-out performance, which monitoring compares production with.
"""

from __future__ import annotations

import typing as T
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from sklearn import metrics
from sklearn.dummy import DummyRegressor

from bikes import scripts
from bikes.core.gate import (
    GATE_PASSED_METRIC,
    GATE_VERDICT_TAG,
    VALIDATION_CHAMPION_TAG,
    VALIDATION_RUN_TAG,
    VALIDATION_STATUS_TAG,
)
from bikes.core.reference import HELD_OUT_TAG, HeldOutPerformance
from bikes.io.contracts import load_contract
from bikes.jobs.evaluations import EvaluationsJob
from bikes.jobs.training import TrainingJob
from tests.conftest import BIKES_CONTRACT, FAST_MODEL, REPO, started

NAME = "honest"
SHIPPED = REPO / "confs" / "evaluations.yaml"
CONTRACT = load_contract(str(BIKES_CONTRACT))


def _train(splits_dir: Path, services: dict[str, T.Any]) -> str:
    """The same config every time, as `invoke gate` trains it: a new version, @challenger."""
    training = TrainingJob.model_validate(
        {
            "inputs": {"path": str(splits_dir / "train.parquet")},
            "contract": str(BIKES_CONTRACT),
            "model": FAST_MODEL,
            "registered_model": NAME,
            "alias": "challenger",
            **services,
        }
    )
    with training as job:
        return str(job.run()["model_version"])


def _gate(splits_dir: Path, services: dict[str, T.Any], run_name: str, *extras: str) -> int:
    """The shipped gate through the CLI's entry point, pointed at the test's store and rows."""
    settings = [
        f"job.inputs.path={splits_dir / 'test.parquet'}",
        f"job.contract={BIKES_CONTRACT}",
        f"job.registered_model={NAME}",
        f"job.mlflow_service.tracking_uri={services['mlflow_service'].tracking_uri}",
        f"job.run_name={run_name}",
        *extras,
    ]
    return scripts.main([str(SHIPPED), *(part for s in settings for part in ("-e", s))])


def _client(services: dict[str, T.Any]) -> T.Any:
    return services["mlflow_service"].client()


def _run(client: T.Any, run_name: str) -> T.Any:
    experiments = [e.experiment_id for e in client.search_experiments()]
    (run,) = client.search_runs(experiments, f"tags.mlflow.runName = '{run_name}'")
    return run


def _verdicts(run_id: str) -> pd.DataFrame:
    table = mlflow.artifacts.load_dict(f"runs:/{run_id}/gate/verdict.json")
    return pd.DataFrame(table["data"], columns=table["columns"])


@pytest.fixture(scope="module")
def retrain(splits_dir: Path, services: dict[str, T.Any]) -> dict[str, T.Any]:
    """Train, gate (a first deploy, promoted); train the same config again, gate again."""
    first = _train(splits_dir, services)
    first_code = _gate(splits_dir, services, "honest-first")
    second = _train(splits_dir, services)
    second_code = _gate(splits_dir, services, "honest-second")
    return {"first": first, "second": second, "codes": (first_code, second_code)}


def test_a_retrain_of_equal_quality_passes_the_shipped_gate_and_is_promoted(
    retrain: dict[str, T.Any], services: dict[str, T.Any]
) -> None:
    first, second = retrain["first"], retrain["second"]
    assert first != second
    assert retrain["codes"] == (0, 0)
    with started(services["mlflow_service"]):
        client = _client(services)
        assert str(client.get_model_version_by_alias(NAME, "champion").version) == second
        tags = client.get_model_version(NAME, second).tags
        assert tags[VALIDATION_STATUS_TAG] == "passed"
        assert tags[VALIDATION_CHAMPION_TAG] == first  # compared with the first, as champion
        run = client.get_run(tags[VALIDATION_RUN_TAG])
        assert run.info.status == "FINISHED"
        assert run.data.tags[GATE_VERDICT_TAG] == "passed"
        assert run.data.metrics[GATE_PASSED_METRIC] == 1.0
        table = _verdicts(run.info.run_id)
    checks = table.set_index(["metric", "check"])
    assert list(checks.index) == [
        ("root_mean_squared_error", "threshold"),
        ("root_mean_squared_error", "non_inferiority"),
        ("r2_score", "threshold"),
    ]
    assert set(table["verdict"]) == {"passed"}
    same = checks.loc[("root_mean_squared_error", "non_inferiority")]
    # The same seeded config: the same predictions, a zero change and a zero interval.
    assert (same["change"], same["interval_low"], same["interval_high"]) == (0.0, 0.0, 0.0)
    assert same["margin"] == pytest.approx(0.05 * same["baseline"])
    assert same["threshold"] == "at most 5.0% worse than baseline"


def test_the_champion_gated_against_itself_is_skipped_and_writes_nothing(
    retrain: dict[str, T.Any], splits_dir: Path, services: dict[str, T.Any]
) -> None:
    """`invoke evaluate` right after a promotion: @challenger is @champion. Then a copy of the
    champion's version (the same run's logged model) as @challenger: skipped too."""
    second = retrain["second"]
    with started(services["mlflow_service"]):
        client = _client(services)
        before = dict(client.get_model_version(NAME, second).tags)
    assert _gate(splits_dir, services, "honest-again") == scripts.EXIT_OK
    with started(services["mlflow_service"]):
        client = _client(services)
        assert dict(client.get_model_version(NAME, second).tags) == before  # no verdict
        assert str(client.get_model_version_by_alias(NAME, "champion").version) == second
        run = _run(client, "honest-again")
        assert run.data.tags[GATE_VERDICT_TAG] == "skipped"
        assert run.data.tags["gate_reason"] == (
            f"candidate models:/{NAME}/{second} is the champion: nothing to compare"
        )
        assert GATE_PASSED_METRIC not in run.data.metrics
        assert client.list_artifacts(run.info.run_id, "gate") == []
        copy = str(client.copy_model_version(f"models:/{NAME}/{second}", NAME).version)
        client.set_registered_model_alias(NAME, "challenger", copy)
        copied = dict(client.get_model_version(NAME, copy).tags)
    assert _gate(splits_dir, services, "honest-copy") == scripts.EXIT_OK
    with started(services["mlflow_service"]):
        client = _client(services)
        assert dict(client.get_model_version(NAME, copy).tags) == copied
        assert str(client.get_model_version_by_alias(NAME, "champion").version) == second
        assert _run(client, "honest-copy").data.tags["gate_reason"] == (
            f"candidate models:/{NAME}/{copy} is the champion (the same logged model): "
            "nothing to compare"
        )


def test_a_candidate_given_as_its_own_baseline_is_skipped(
    retrain: dict[str, T.Any], splits_dir: Path, services: dict[str, T.Any]
) -> None:
    first = retrain["first"]
    job = EvaluationsJob.model_validate(
        {
            "inputs": {"path": str(splits_dir / "test.parquet")},
            "registered_model": NAME,
            "candidate_uri": f"models:/{NAME}/{first}",
            "baseline_uri": f"models:/{NAME}/{first}",
            "promote_on_pass": True,
            **services,
        }
    )
    with job:
        result = job.run()
    assert result["verdict"] == "skipped"
    assert (
        result["reason"] == f"candidate models:/{NAME}/{first} is the baseline: nothing to compare"
    )
    assert result["verdicts"] == []
    assert result["promoted"] is False


def test_a_blocked_gate_run_ends_failed_with_its_verdict_in_the_runs_list(
    retrain: dict[str, T.Any],
    splits_dir: Path,
    services: dict[str, T.Any],
    train_frame: pd.DataFrame,
    capsys: pytest.CaptureFixture[str],
) -> None:
    features = train_frame.loc[:, CONTRACT.feature_names]
    dummy = DummyRegressor(strategy="mean").fit(features, train_frame["cnt"])
    with started(services["mlflow_service"]), mlflow.start_run(run_name="register-mean"):
        version = str(
            mlflow.sklearn.log_model(
                dummy,
                name="model",
                registered_model_name=NAME,
                signature=mlflow.models.infer_signature(features, dummy.predict(features)),
            ).registered_model_version
        )
    code = _gate(
        splits_dir, services, "honest-blocked", f"job.candidate_uri=models:/{NAME}/{version}"
    )
    assert code == scripts.EXIT_GATE == 3
    assert f"candidate models:/{NAME}/{version} blocked: root_mean_squared_error: above 100" in (
        capsys.readouterr().err
    )
    with started(services["mlflow_service"]):
        client = _client(services)
        run = _run(client, "honest-blocked")  # read back from the tracking store
        assert run.info.status == "FAILED"
        assert run.data.tags[GATE_VERDICT_TAG] == "failed"
        assert run.data.metrics[GATE_PASSED_METRIC] == 0.0
        assert client.get_model_version(NAME, version).tags[VALIDATION_STATUS_TAG] == "failed"
        assert str(client.get_model_version_by_alias(NAME, "champion").version) == retrain["second"]
        table = _verdicts(run.info.run_id).set_index(["metric", "check"])
    worse = table.loc[("root_mean_squared_error", "non_inferiority")]
    assert worse["verdict"] == "failed"
    assert worse["interval_high"] > worse["margin"]


def test_the_gate_records_the_candidates_held_out_performance(
    retrain: dict[str, T.Any],
    splits_dir: Path,
    services: dict[str, T.Any],
    test_frame: pd.DataFrame,
) -> None:
    """The gate overwrites training's record with its test-split figures for that very
    version: the monitoring job's names, equal to sklearn on the version's own predictions."""
    with started(services["mlflow_service"]):
        client = _client(services)
        records = {
            version: HeldOutPerformance.from_tag(
                client.get_model_version(NAME, version).tags[HELD_OUT_TAG]
            )
            for version in (retrain["first"], retrain["second"])
        }
        model = mlflow.pyfunc.load_model(f"models:/{NAME}/{retrain['second']}")
        record = records[retrain["second"]]
        assert record.predictions_uri is not None
        rows = pd.read_parquet(mlflow.artifacts.download_artifacts(record.predictions_uri))
    truth = test_frame["cnt"].to_numpy(dtype=float)
    predicted = np.asarray(model.predict(test_frame.loc[:, CONTRACT.feature_names]), dtype=float)
    assert record.rows == len(test_frame) == len(rows)
    assert record.source == (
        f"gate test split {splits_dir / 'test.parquet'} ({len(test_frame):,} rows)"
    )
    assert records[retrain["first"]].source.startswith("gate test split ")  # overwritten
    timestamps = pd.to_datetime(test_frame[str(CONTRACT.timestamp)])
    assert (record.start, record.end) == (timestamps.min(), timestamps.max())
    assert set(record.metrics) == {"rmse", "mae", "r2", "mape"}
    assert record.metrics["rmse"] == pytest.approx(
        metrics.root_mean_squared_error(truth, predicted)
    )
    assert record.metrics["mae"] == pytest.approx(metrics.mean_absolute_error(truth, predicted))
    assert record.metrics["r2"] == pytest.approx(metrics.r2_score(truth, predicted))
    assert record.metrics["mape"] == pytest.approx(
        metrics.mean_absolute_percentage_error(truth + 1, predicted + 1)
    )
    assert rows[CONTRACT.prediction].to_numpy() == pytest.approx(predicted)


def test_the_shipped_gate_switches_to_must_improve_with_the_margin_set_to_null(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from bikes.io.configs import merge_configs
    from bikes.settings import settings_for

    improve = "job.thresholds.root_mean_squared_error.min_relative_change=0.01"
    assert scripts.main([str(SHIPPED), "-e", improve]) == scripts.EXIT_INPUT
    assert (
        "job.thresholds.root_mean_squared_error: Value error, min_relative_change (must be "
        "better than the baseline) contradict(s) max_relative_degradation (may be worse than "
        "it): set one kind (over a config that sets the other, set its keys to null)"
    ) in capsys.readouterr().err
    unset = "job.thresholds.root_mean_squared_error.max_relative_degradation=null"
    merged = merge_configs([str(SHIPPED)], [improve, unset])
    job = settings_for("EvaluationsJob").model_validate(merged).job
    assert job.thresholds is not None
    rmse = job.thresholds["root_mean_squared_error"]
    assert (rmse.threshold, rmse.min_relative_change) == (100.0, 0.01)
    assert not rmse.allows_degradation
