"""Bring your own model: the whole chain on tables that are not bikes.

A classifier on the Gibraltar weather data (a text label, a string feature, its own timestamp
name), through the CLI as a user runs it: train, gate, promote, serve, capture, labels, monitor.
And a regression model bikes did not train, registered under another name, through the jobs.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import typing as T
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from sklearn import metrics

from bikes.jobs.evaluations import EvaluationsJob
from bikes.jobs.monitoring import MonitoringJob
from bikes.jobs.promotion import PromotionJob
from tests.conftest import clean_environment, new_workspace, run_bikes, started, wait_until_up
from tests.serving.test_app import free_port

TIMEOUT = httpx.Timeout(60.0)  # our server, on a possibly loaded machine


def _ok(done: subprocess.CompletedProcess[str]) -> None:
    assert done.returncode == 0, done.stderr[-4000:]
    assert "Traceback" not in done.stderr, done.stderr[-4000:]


def _serve(cwd: Path, env: dict[str, str], *extras: str) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    arguments = [f"job.port={port}", "job.poll_interval=0", *extras]
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bikes",
            "confs/serving.yaml",
            *[item for extra in arguments for item in ("-e", extra)],
        ],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    wait_until_up(f"{base}/health", server, lambda: server.communicate()[1], timeout=120)
    return server, base


def _stop(server: subprocess.Popen[str]) -> str:
    server.send_signal(signal.SIGTERM)
    _, errors = server.communicate(timeout=120)
    assert server.returncode == 0, errors[-3000:]
    return errors


def test_a_classifier_through_every_job_from_the_cli(tmp_path: Path) -> None:
    cwd, env = new_workspace(tmp_path), clean_environment()
    _ok(
        subprocess.run(
            [sys.executable, "-m", "bikes.examples.gibraltar", "data/gibraltar"],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    )
    _ok(
        run_bikes(
            ["confs/examples/gibraltar-training.yaml", "-e", "job.alias=challenger"], cwd, env
        )
    )
    gate = run_bikes(
        ["confs/examples/gibraltar-evaluations.yaml", "-e", "job.bootstrap.resamples=20"], cwd, env
    )
    _ok(gate)  # a first deploy: promoted on pass
    assert "weather@champion -> version 1" in gate.stderr

    server, base = _serve(cwd, env, "job.registered_model=weather")
    try:
        production = pd.read_parquet(cwd / "data" / "gibraltar" / "production.parquet")
        row = (
            production.drop(columns=["sky"])
            .head(1)
            .assign(observed_at=lambda f: f["observed_at"].dt.strftime("%Y-%m-%dT%H:%M:%S"))
        )
        answer = httpx.post(
            f"{base}/invocations",
            json={"dataframe_records": row.to_dict(orient="records")},
            timeout=TIMEOUT,
        )
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["predictions"][0] in {"fair", "cloudy", "wet"}
        assert set(body["probabilities"][0]) == {"fair", "cloudy", "wet"}
        assert sum(body["probabilities"][0].values()) == pytest.approx(1.0)
        # a row the contract refuses: 422 for the caller, recorded for monitoring
        bad = row.drop(columns=["temp"]).to_dict(orient="records")
        refused = httpx.post(
            f"{base}/invocations", json={"dataframe_records": bad}, timeout=TIMEOUT
        )
        assert refused.status_code == 422
        assert "temp" in refused.text
        traffic = run_bikes(
            [
                "confs/traffic.yaml",
                "-e",
                "job.registered_model=weather",
                "-e",
                "job.inputs.path=data/gibraltar/production.parquet",
                "-e",
                f"job.url={base}",
                "-e",
                "job.label_delay_hours=6",
            ],
            cwd,
            env,
        )
        _ok(traffic)
    finally:
        _stop(server)

    monitoring = run_bikes(["confs/examples/gibraltar-monitoring.yaml"], cwd, env)
    _ok(monitoring)
    document = json.loads((cwd / "outputs" / "weather-monitoring.json").read_text())
    windows = document["windows"]
    assert len(windows) == 7  # 2023-05-25 .. 2023-05-31, day by day
    # one store, several models: only `weather` rows, each window as the store holds it
    with sqlite3.connect(cwd / "predictions.db") as connection:
        stored = pd.read_sql(
            "SELECT p.event_time, p.model_name, p.prediction, l.target FROM predictions p "
            "LEFT JOIN labels l ON l.prediction_id = p.prediction_id "
            "WHERE p.model_name = 'weather'",
            connection,
        )
    assert len(stored) == len(production) + 1
    stored["event_time"] = pd.to_datetime(stored["event_time"])
    stored["prediction"] = stored["prediction"].map(json.loads)
    first = windows[0]
    day = stored[stored["event_time"] < pd.Timestamp("2023-05-26")].dropna(subset=["target"])
    day_truth = day["target"].map(json.loads)
    performance = first["performance"]
    assert set(performance["current"]) >= {"accuracy", "precision", "recall", "f1"}
    assert performance["current"]["accuracy"] == pytest.approx(
        metrics.accuracy_score(day_truth, day["prediction"])
    )
    assert performance["current"]["f1"] == pytest.approx(
        metrics.f1_score(day_truth, day["prediction"], average="macro", zero_division=0)
    )
    assert performance["metric"] == "f1"
    assert performance["degraded"] in (True, False)
    # the string feature is watched like any other; the refused row is counted, not hidden
    assert "wind_dir" in first["data_drift"]["columns"]
    assert first["data_quality"]["rejected_rows"] >= 1
    assert all(w["status"] != "no_detection" or w["window"]["rows"] > 0 for w in windows)


def test_a_regression_model_bikes_did_not_train(
    foreign_regressor: dict[str, T.Any], services: dict[str, T.Any], tmp_path: Path
) -> None:
    """`sales-forecast`, fitted by plain scikit-learn: no bikes tags, no contract logged.
    The contract says what the signature cannot (the label); monitoring's reference is a
    parquet file of the user's."""
    paths, name = foreign_regressor["paths"], foreign_regressor["name"]
    contract = {"target": "sales", "timestamp": "day", "segments": ["shop"]}
    with started(services["mlflow_service"]) as service:
        # Registered @champion elsewhere, never gated: gated against itself it would be skipped
        # (nothing to compare), so bikes' first gate is a first deploy.
        service.client().delete_registered_model_alias(name, "champion")
    gate = EvaluationsJob.model_validate(
        {
            "registered_model": name,
            "candidate_uri": f"models:/{name}/{foreign_regressor['version']}",
            "contract": contract,
            "inputs": {"path": str(paths["test"])},
            "metrics": [{"name": "root_mean_squared_error"}, {"name": "r2_score"}],
            "thresholds": {"r2_score": {"threshold": 0.8}},
            "bootstrap": {"resamples": 20},
            **services,
        }
    )
    with gate as job:
        verdict = job.run()
    assert verdict["candidate_version"] == foreign_regressor["version"]
    with PromotionJob.model_validate({"registered_model": name, **services}) as job:
        assert job.run()["model_version"] == foreign_regressor["version"]

    # serve it (the signature says the features), capture, send labels, monitor the store
    (tmp_path / "workspace").mkdir()
    cwd = new_workspace(tmp_path / "workspace")
    env = {**clean_environment(), "MLFLOW_TRACKING_URI": services["mlflow_service"].tracking_uri}
    production = pd.read_parquet(paths["production"])
    server, base = _serve(
        cwd,
        env,
        f"job.registered_model={name}",
        "job.contract={target: sales, timestamp: day}",
        f"job.store_uri=sqlite:///{tmp_path / 'sales.db'}",
    )
    try:
        records = production.drop(columns=["sales"]).assign(
            day=production["day"].dt.strftime("%Y-%m-%dT%H:%M:%S")
        )
        answer = httpx.post(
            f"{base}/invocations",
            json={"dataframe_records": records.to_dict(orient="records")},
            timeout=TIMEOUT,
        )
        assert answer.status_code == 200, answer.text
        ids = answer.json()["prediction_ids"]
        labels = [
            {"prediction_id": i, "target": float(t)}
            for i, t in zip(ids, production["sales"], strict=True)
        ]
        recorded = httpx.post(f"{base}/labels", json={"labels": labels}, timeout=TIMEOUT)
        assert recorded.status_code == 200, recorded.text
        assert recorded.json()["recorded"] == len(production)
    finally:
        _stop(server)
    predicted = np.asarray(answer.json()["predictions"], dtype=float)

    monitoring = MonitoringJob.model_validate(
        {
            "registered_model": name,
            "contract": contract,
            "reference": {"KIND": "ParquetReader", "path": str(paths["train"])},
            "current": {"KIND": "StoreReader", "uri": f"sqlite:///{tmp_path / 'sales.db'}"},
            "results_path": str(tmp_path / "monitoring.json"),
            "report_path": str(tmp_path / "monitoring.html"),
            **services,
        }
    )
    with monitoring as job:
        result = job.run()["results"]
    assert result["window"]["rows"] == len(production)
    drift = result["data_drift"]["columns"]
    assert set(drift) == {"a", "b", "c", "shop"}
    assert drift["a"]["drift"] is True  # shifted by 1.5 standard deviations
    assert drift["b"]["drift"] is False
    assert result["data_quality"]["columns"]["shop"]["missing_share"] == 0.0
    performance = result["performance"]
    truth = production["sales"].to_numpy()
    assert performance["current"]["rmse"] == pytest.approx(
        metrics.root_mean_squared_error(truth, predicted)
    )
    assert performance["current"]["r2"] == pytest.approx(metrics.r2_score(truth, predicted))
    assert performance["metric"] == "rmse"
    assert performance["label_coverage"] == 1.0
