"""The closed loop for real: labelled rows in a real capture store (SQLite), real training on
the bike data, a real MLflow registry (SQLite), the real gate; and the monitoring trigger."""

from __future__ import annotations

import datetime as dt
import json
import typing as T
import uuid
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml

from bikes import scripts
from bikes.core.errors import ConfigError, InputError
from bikes.io.contracts import load_contract
from bikes.io.store import Store
from bikes.jobs.monitoring import MonitoringJob
from bikes.jobs.promotion import PromotionJob
from bikes.jobs.retraining import LAST_FINDING_TAG, RetrainingJob
from bikes.jobs.training import TrainingJob
from tests.conftest import BIKES_CONTRACT, FAST_MODEL, REPO, started

CONTRACT = load_contract(str(BIKES_CONTRACT))
FEATURES = CONTRACT.feature_names
GROWTH = 2.0  # the world the store saw: twice the demand the champion learnt
DUPLICATED = 50  # rows captured twice (a replayed request): counted once


def _champion(name: str, splits_dir: Path, services: dict[str, T.Any]) -> str:
    """A model of its own registered model, trained on the train split, forced to champion."""
    training = TrainingJob.model_validate(
        {
            "inputs": {"path": str(splits_dir / "train.parquet")},
            "contract": str(BIKES_CONTRACT),
            "model": FAST_MODEL,
            "validation_share": 0.0,
            "registered_model": name,
            **services,
        }
    )
    with training as job:
        version = str(job.run()["model_version"])
    with PromotionJob(registered_model=name, version=int(version), force=True, **services) as job:
        job.run()
    return version


def _aliases(services: dict[str, T.Any], name: str) -> dict[str, str]:
    client = services["mlflow_service"].client()
    return {k: str(v) for k, v in client.get_registered_model(name).aliases.items()}


def _versions(services: dict[str, T.Any], name: str) -> list[str]:
    client = services["mlflow_service"].client()
    return sorted(str(v.version) for v in client.search_model_versions(f"name = '{name}'"))


def _version_tags(services: dict[str, T.Any], name: str, version: str) -> dict[str, str]:
    client = services["mlflow_service"].client()
    return dict(client.get_model_version(name, version).tags)


@pytest.fixture(scope="module")
def store_uri(
    splits_dir: Path, services: dict[str, T.Any], tmp_path_factory: pytest.TempPathFactory
) -> str:
    """July and August 2012 as the service captured them for three registered models, every
    row labelled with twice the real demand; a few rows captured twice."""
    frame = pd.read_parquet(splits_dir / "production.parquet")
    frame = frame[frame["timestamp"] < "2012-09-01"].reset_index(drop=True)
    training = TrainingJob.model_validate(
        {
            "inputs": {"path": str(splits_dir / "train.parquet")},
            "contract": str(BIKES_CONTRACT),
            "model": FAST_MODEL,
            "validation_share": 0.0,
            "registered_model": "loop-store",
            **services,
        }
    )
    with training as job:
        version = job.run()["model_version"]
    with started(services["mlflow_service"]):
        model = mlflow.pyfunc.load_model(f"models:/loop-store/{version}")
    predictions = np.asarray(model.predict(frame[FEATURES]), dtype=float).tolist()
    uri = f"sqlite:///{tmp_path_factory.mktemp('retraining') / 'predictions.db'}"
    store = Store(uri)
    store.create()
    inputs = frame[FEATURES].to_dict(orient="records")
    events = frame["timestamp"].dt.to_pydatetime().tolist()
    targets = (frame["cnt"] * GROWTH).astype(float).tolist()
    for name in ("loop-promote", "loop-block", "loop-finding"):
        replayed = list(range(DUPLICATED))  # the first rows again, under new ids
        ids = [uuid.uuid4().hex for _ in range(len(frame) + DUPLICATED)]
        rows = list(range(len(frame))) + replayed
        store.write_predictions(
            [
                {
                    "prediction_id": ids[n],
                    "event_time": events[i],
                    "received_time": events[i] + dt.timedelta(seconds=1 + n // len(frame)),
                    "model_name": name,
                    "model_version": "1",
                    "latency_ms": 5.0,
                    "inputs": inputs[i],
                    "prediction": predictions[i],
                }
                for n, i in enumerate(rows)
            ]
        )
        store.write_labels(
            [
                {
                    "prediction_id": ids[n],
                    "label_time": events[i] + dt.timedelta(days=1),
                    "target": targets[i],
                }
                for n, i in enumerate(rows)
            ]
        )
    store.dispose()
    return uri


def _config(
    name: str, splits_dir: Path, store_uri: str, tmp_path: Path, **gate: T.Any
) -> dict[str, T.Any]:
    """A retraining config as a user writes it: the shipped training config with the test's
    model and files; a gate of the test's own (the shipped one is another helper's)."""
    return {
        "store": {"uri": store_uri},
        "holdout": "7D",
        "training": {
            "config": str(REPO / "confs" / "training.yaml"),
            "contract": str(BIKES_CONTRACT),
            "inputs": {"path": str(splits_dir / "train.parquet")},
            "model": FAST_MODEL,
            "validation_share": 0.0,
            "registered_model": name,
        },
        "evaluations": {
            "contract": str(BIKES_CONTRACT),
            "inputs": {"path": str(splits_dir / "test.parquet")},
            "registered_model": name,
            "bootstrap": {"resamples": 50},
            "promote_on_pass": True,
            **gate,
        },
        "results_path": str(tmp_path / "retraining.json"),
        "rows_dir": str(tmp_path / "rows"),
    }


def test_labelled_rows_retrain_register_a_challenger_with_lineage_and_promote_it(
    splits_dir: Path, store_uri: str, services: dict[str, T.Any], tmp_path: Path
) -> None:
    name = "loop-promote"
    champion = _champion(name, splits_dir, services)
    config = _config(
        name,
        splits_dir,
        store_uri,
        tmp_path,
        # Judged on the newest week alone: there the doubled demand is the truth.
        thresholds={"root_mean_squared_error": {"threshold": 400.0, "min_relative_change": 0.1}},
    )
    with RetrainingJob.model_validate({**config, "gate_on_test_split": False, **services}) as job:
        result = job.run()

    version = result["model_version"]
    assert version not in (None, champion)
    assert result["status"] == "promoted"
    assert result["promoted"] is True
    assert _aliases(services, name) == {"champion": version, "challenger": version}

    store = pd.read_parquet(splits_dir / "production.parquet")
    store = store[store["timestamp"] < "2012-09-01"]
    cut = store["timestamp"].max() - pd.Timedelta("7D")
    trained, held = store[store["timestamp"] <= cut], store[store["timestamp"] > cut]
    train_rows = len(pd.read_parquet(splits_dir / "train.parquet"))
    tags = _version_tags(services, name, version)
    assert tags["retrain_window_start"] == "2012-07-01T00:00:00"
    assert tags["retrain_window_end"] == trained["timestamp"].max().isoformat()
    assert tags["retrain_rows"] == str(train_rows + len(trained))  # duplicates counted once
    assert tags["retrain_store_rows"] == str(len(trained))
    assert tags["retrain_holdout_rows"] == str(len(held)) == str(result["gate_rows"])
    assert tags["retrain_trigger"] == "manual"
    assert "retrain_monitoring_run_id" not in tags
    assert tags["validation_status"] == "passed"

    gate_rows = pd.read_parquet(tmp_path / "rows" / "gate.parquet")  # what the gate judged
    assert gate_rows["timestamp"].tolist() == held["timestamp"].tolist()
    assert gate_rows["cnt"].tolist() == (held["cnt"] * GROWTH).tolist()
    document = json.loads((tmp_path / "retraining.json").read_text())
    assert document["status"] == "promoted"
    assert document["rows"] == {
        "store": len(trained),
        "training_data": train_rows,
        "total": train_rows + len(trained),
    }
    assert document["holdout"]["rows"] == len(held)
    assert document["window"]["start"] == "2012-07-01T00:00:00"
    # The runs hang together: training and gate under the retraining run, which finished.
    client = services["mlflow_service"].client()
    parent = client.get_run(result["run_id"])
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["status"] == "promoted"
    for child in (result["training_run_id"], result["evaluations_run_id"]):
        assert client.get_run(child).data.tags["mlflow.parentRunId"] == result["run_id"]
    # The new model learnt the new world: on the held-out week, far closer than the champion.
    with started(services["mlflow_service"]):
        new = mlflow.pyfunc.load_model(f"models:/{name}/{version}").predict(held[FEATURES])
        old = mlflow.pyfunc.load_model(f"models:/{name}/{champion}").predict(held[FEATURES])
    truth = held["cnt"].to_numpy() * GROWTH
    assert np.sqrt(np.mean((new - truth) ** 2)) < 0.7 * np.sqrt(np.mean((old - truth) ** 2))


def test_a_blocked_gate_exits_3_and_leaves_the_champion(
    splits_dir: Path, store_uri: str, services: dict[str, T.Any], tmp_path: Path
) -> None:
    name = "loop-block"
    champion = _champion(name, splits_dir, services)
    config = _config(
        name,
        splits_dir,
        store_uri,
        tmp_path,
        # Half the champion's error, beyond noise, on the holdout and the test split: no.
        thresholds={"root_mean_squared_error": {"threshold": 400.0, "min_relative_change": 0.5}},
    )
    service = services["mlflow_service"]
    config |= {
        "KIND": "RetrainingJob",
        "mlflow_service": service.model_dump(),
        "logger_service": {"level": "WARNING"},
    }
    path = tmp_path / "retraining.yaml"
    path.write_text(yaml.safe_dump({"job": config}))

    code = scripts.main([str(path), "-e", "job.trigger=schedule"])

    assert code == scripts.EXIT_GATE
    versions = _versions(services, name)
    new = max(versions, key=int)
    assert new != champion
    assert _aliases(services, name) == {"champion": champion, "challenger": new}
    tags = _version_tags(services, name, new)
    assert tags["validation_status"] == "failed"
    assert tags["retrain_trigger"] == "schedule"
    document = json.loads((tmp_path / "retraining.json").read_text())
    assert document["status"] == "blocked"
    assert document["promoted"] is False
    assert document["model_version"] == new
    assert document["gate_rows"] == document["holdout"]["rows"] + len(
        pd.read_parquet(splits_dir / "test.parquet")
    )
    client = service.client()
    assert client.get_run(document["run_id"]).info.status == "FAILED"


def test_a_finding_retrains_once_within_the_cooldown(
    splits_dir: Path, store_uri: str, services: dict[str, T.Any], tmp_path: Path
) -> None:
    name = "loop-finding"
    champion = _champion(name, splits_dir, services)
    retraining = _config(
        name,
        splits_dir,
        store_uri,
        tmp_path,
        thresholds={"root_mean_squared_error": {"threshold": 400.0}},
    )
    del retraining["store"]  # unnamed: the retraining reads the monitored store
    monitoring = {
        "registered_model": name,
        "contract": str(BIKES_CONTRACT),
        "current": {
            "KIND": "StoreReader",
            "uri": store_uri,
            "start": "2012-08-18",
            "end": "2012-09-01",
        },
        "results_path": str(tmp_path / "monitoring.json"),
        "report_path": str(tmp_path / "monitoring.html"),
        "channels": [],
        "on_finding": "retrain",
        "retraining": retraining,
        "retrain_cooldown": "7D",
        **services,
    }
    with MonitoringJob.model_validate(monitoring) as job:
        first = job.run()

    assert first["status"] == "detected"  # twice the demand: performance degraded
    retrained = first["retraining"]
    assert retrained["status"] in ("promoted", "passed"), retrained
    version = retrained["model_version"]
    tags = _version_tags(services, name, version)
    assert tags["retrain_trigger"] == "finding"
    assert tags["retrain_monitoring_run_id"] == first["run_id"]
    client = services["mlflow_service"].client()
    remembered = json.loads(client.get_registered_model(name).tags[LAST_FINDING_TAG])
    assert remembered["monitoring_run_id"] == first["run_id"]
    assert client.get_run(first["run_id"]).data.tags["retraining"] == retrained["status"]
    # The report is written again once the retraining is done, and logged again: it says so.
    logged = client.download_artifacts(first["run_id"], "monitoring/monitoring.html", str(tmp_path))
    for text in ((tmp_path / "monitoring.html").read_text(), Path(logged).read_text()):
        assert f"version {version} passed the gate" in text
        assert retrained["run_id"] in text
    versions = _versions(services, name)

    with MonitoringJob.model_validate(monitoring) as job:
        second = job.run()

    assert second["status"] == "detected"  # the same episode, found again ...
    assert second["retraining"]["status"] == "cooldown"  # ... retrains no more
    assert "no retraining: one started at" in (tmp_path / "monitoring.html").read_text()
    assert _versions(services, name) == versions
    assert champion in versions


def test_no_finding_no_retraining_and_a_bad_retraining_config_fails_up_front(
    splits_dir: Path, store_uri: str, services: dict[str, T.Any], tmp_path: Path
) -> None:
    from bikes.jobs.retraining import retrain_on_finding

    config = _config("loop-finding", splits_dir, store_uri, tmp_path)
    monitoring = MonitoringJob.model_validate(
        {
            "registered_model": "loop-finding",
            "on_finding": "retrain",
            "retraining": config,
            **services,
        }
    )
    assert retrain_on_finding(monitoring, ["no_detection", "potential", "no_data"], "r") == {
        "status": "no_finding"
    }
    with pytest.raises(ConfigError, match=r"job\.retraining\.holdout"):
        MonitoringJob.model_validate(
            {"on_finding": "retrain", "retraining": {**config, "holdout": "soon"}, **services}
        )
    with pytest.raises(ConfigError, match=r"retrains 'loop-finding', but this job monitors"):
        MonitoringJob.model_validate({"on_finding": "retrain", "retraining": config, **services})
    with pytest.raises(ConfigError, match=r"job\.retrain_cooldown"):
        MonitoringJob.model_validate(
            {
                "registered_model": "loop-finding",
                "on_finding": "retrain",
                "retraining": config,
                "retrain_cooldown": "-1D",
                **services,
            }
        )


def test_too_few_labels_fail_before_training(
    splits_dir: Path, store_uri: str, services: dict[str, T.Any], tmp_path: Path
) -> None:
    config = _config("loop-promote", splits_dir, store_uri, tmp_path)
    before = _versions(services, "loop-promote")
    too_few = r"job\.min_rows: 2\d labelled store row"
    windows = [
        ({"start": "2012-07-01", "end": "2012-07-09"}, too_few),  # 8 days: 1 after 7 held out
        ({"last": "8D"}, too_few),  # the newest labelled row and the 8 days before it
        ({"start": "2013-01-01", "end": "2013-02-01"}, "no labelled rows of model 'loop-promote'"),
    ]
    for window, message in windows:
        job = RetrainingJob.model_validate({**config, "window": window, **services})
        with job, pytest.raises(InputError, match=message):
            job.run()
    assert _versions(services, "loop-promote") == before
