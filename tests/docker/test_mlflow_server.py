"""The compose stack's MLflow server, for real: PostgreSQL backend, proxied artifacts, and the
jobs (training, the evaluations gate, monitoring) talking to it over HTTP."""

from __future__ import annotations

import shutil
import subprocess
import sys
import typing as T
from pathlib import Path

import httpx
import mlflow
import pytest
import yaml

from tests.conftest import (
    REPO,
    clean_environment,
    new_workspace,
    postgres_database,
    run_bikes,
    wait_until_up,
)
from tests.serving.test_app import free_port

COMPOSE = REPO / "docker" / "compose.yaml"


def local_command(command: list[str], values: dict[str, str]) -> list[str]:
    """The compose service's command with this machine's values for the options named."""
    local = list(command)
    for option, value in values.items():
        local[local.index(option) + 1] = value
    return local


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> T.Iterator[str]:
    """``mlflow server`` exactly as compose runs it, on a free loopback port and a new database."""
    service = yaml.safe_load(COMPOSE.read_text())["services"]["mlflow"]
    assert service["entrypoint"] == ["mlflow"]
    port = free_port()
    artifacts = tmp_path_factory.mktemp("mlartifacts")
    log = tmp_path_factory.mktemp("mlflow-server") / "server.log"
    with postgres_database("bikes_mlflow") as backend:
        command = local_command(
            service["command"],
            {
                "--backend-store-uri": backend,
                "--artifacts-destination": str(artifacts),
                "--host": "127.0.0.1",
                "--port": str(port),
                "--allowed-hosts": service["command"][
                    service["command"].index("--allowed-hosts") + 1
                ].replace(":5000", f":{port}"),
            },
        )
        with log.open("w") as output:
            server = subprocess.Popen(
                [sys.executable, "-m", "mlflow", *command],
                stdout=output,
                stderr=subprocess.STDOUT,
                env=clean_environment(),
            )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until_up(f"{url}/health", server, log.read_text, timeout=180)
            yield url
        finally:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()


def test_the_server_accepts_the_compose_host_names_only(mlflow_server: str) -> None:
    port = mlflow_server.rsplit(":", 1)[1]
    api = f"{mlflow_server}/api/2.0/mlflow/experiments/search?max_results=1"
    # A loaded machine can keep a fresh server busy for seconds: never the client's default 5 s.
    inside = httpx.get(api, headers={"Host": f"mlflow:{port}"}, timeout=60)
    assert inside.status_code == 200  # the service and scheduler call http://mlflow:5000
    rebinding = httpx.get(api, headers={"Host": f"attacker.example:{port}"}, timeout=60)
    assert rebinding.status_code in (400, 403)


def test_training_gate_and_monitoring_over_http(
    mlflow_server: str, tmp_path: Path, splits_dir: Path
) -> None:
    new_workspace(tmp_path)
    # The session's splits, as `bikes confs/data.yaml` writes them: the data job never talks
    # to MLflow (tests/test_scripts.py runs it from the CLI), the three jobs below do.
    shutil.copytree(splits_dir, tmp_path / "data" / "splits")
    env = {**clean_environment(), "MLFLOW_TRACKING_URI": mlflow_server}
    monitoring = tmp_path / "monitoring.yaml"
    monitoring.write_text(
        "job:\n"
        "  KIND: MonitoringJob\n"
        "  current: {KIND: ParquetReader, path: data/splits/production.parquet}\n"
        "  channels: []\n"
    )
    steps = [
        ["confs/training.yaml", "-e", "job.model.max_iter=40", "-e", "job.alias=challenger"],
        ["confs/evaluations.yaml", "-e", "job.bootstrap.resamples=20"],  # passes: promotes
        [str(monitoring)],
    ]
    for step in steps:
        done = run_bikes(step, tmp_path, env)
        assert done.returncode == 0, f"{step}: {done.stderr[-3000:]}"
    assert not (tmp_path / "mlflow.db").exists()  # everything went to the server
    client = mlflow.MlflowClient(tracking_uri=mlflow_server, registry_uri=mlflow_server)
    champion = client.get_model_version_by_alias("bikes", "champion")
    assert champion.tags["validation_status"] == "passed"
    experiment = client.get_experiment_by_name("bikes")
    assert experiment is not None
    assert experiment.artifact_location.startswith("mlflow-artifacts:")  # proxied by the server
    [run] = client.search_runs(
        [experiment.experiment_id], "tags.mlflow.runName = 'monitoring'", max_results=1
    )
    fetched = mlflow.artifacts.download_artifacts(
        run_id=run.info.run_id,
        artifact_path="monitoring/monitoring.html",
        dst_path=str(tmp_path / "fetched"),
        tracking_uri=mlflow_server,
    )
    report = Path(fetched).read_text()
    assert report == (tmp_path / "outputs" / "monitoring.html").read_text()
    assert "<svg" in report
    assert "bikes monitoring" in report
