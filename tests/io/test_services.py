from __future__ import annotations

import os
from pathlib import Path

import mlflow
import pytest

from bikes.core.errors import InputError
from bikes.io.services import LoggerService, MlflowService


def test_environment_overrides_the_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    service = MlflowService(tracking_uri="sqlite:///config.db")
    assert service.effective_tracking_uri == "sqlite:///config.db"
    assert service.effective_registry_uri == "sqlite:///config.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/env.db")
    assert service.effective_tracking_uri == f"sqlite:///{tmp_path}/env.db"
    assert service.effective_registry_uri == f"sqlite:///{tmp_path}/env.db"
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", "sqlite:///registry.db")
    assert service.effective_registry_uri == "sqlite:///registry.db"


def test_start_creates_the_experiment_with_local_artifacts(tmp_path: Path) -> None:
    service = MlflowService(
        tracking_uri=f"sqlite:///{tmp_path}/m.db",
        experiment_name="exp",
        artifact_root=str(tmp_path / "artifacts"),
    )
    service.start()
    try:
        experiment = mlflow.get_experiment_by_name("exp")
        assert experiment is not None
        assert experiment.artifact_location == (tmp_path / "artifacts").as_uri()
        service.start()  # a second start reuses the experiment
    finally:
        service.stop()
    # MLflow exports the URI it is given; stop() must hand the environment back untouched.
    assert "MLFLOW_TRACKING_URI" not in os.environ
    assert "MLFLOW_REGISTRY_URI" not in os.environ


def test_unreachable_tracking_server_is_an_input_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    service = MlflowService(tracking_uri="http://127.0.0.1:9")
    with pytest.raises(InputError, match=r"MLflow tracking at http://127.0.0.1:9: unreachable"):
        service.start()
    assert "MLFLOW_TRACKING_URI" not in os.environ


def test_logger_levels_are_checked() -> None:
    LoggerService(level="DEBUG").start()
    with pytest.raises(ValueError, match="level"):
        LoggerService.model_validate({"level": "LOUD"})
