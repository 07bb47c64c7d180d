"""Services a job starts on entry and stops on exit: the logger and the MLflow client."""

from __future__ import annotations

import os
import sys
import typing as T
from pathlib import Path

import mlflow
import pydantic as pdt
from loguru import logger
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from bikes.core.errors import InputError, first_line

LOG_FORMAT = (
    "<green>{time:YYYY-MM-DD HH:mm:ss.SSS}</green> | <level>{level: <8}</level> | "
    "<cyan>{name}</cyan> - <level>{message}</level>"
)


class LoggerService(pdt.BaseModel, strict=True, frozen=True, extra="forbid"):
    """Loguru on stderr, so stdout stays free for machine-readable output."""

    level: T.Literal["TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR"] = pdt.Field(
        default="INFO", description="The least severe level logged."
    )
    colorize: bool | None = pdt.Field(
        default=None, description="Colours in the log (default: when stderr is a terminal)."
    )

    def start(self) -> None:
        logger.remove()
        logger.add(sys.stderr, level=self.level, format=LOG_FORMAT, colorize=self.colorize)

    def stop(self) -> None:
        logger.complete()


_URI_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


def _is_local(uri: str) -> bool:
    return uri.startswith("sqlite:") or uri.startswith("file:") or "://" not in uri


class MlflowService(pdt.BaseModel, strict=True, frozen=True, extra="forbid"):
    """Points MLflow at its tracking and registry stores and makes sure the experiment exists.

    The standard ``MLFLOW_TRACKING_URI`` and ``MLFLOW_REGISTRY_URI`` environment variables win
    over the config, so one job file runs against the local SQLite file or a shared server.
    """

    tracking_uri: str = pdt.Field(
        default="sqlite:///mlflow.db",
        description="MLflow tracking store (MLFLOW_TRACKING_URI in the environment wins).",
    )
    registry_uri: str | None = pdt.Field(
        default=None,
        description="MLflow model registry (default: the tracking store; MLFLOW_REGISTRY_URI "
        "wins).",
    )
    experiment_name: str = pdt.Field(default="bikes", description="The MLflow experiment.")
    artifact_root: str = pdt.Field(
        default="mlartifacts",
        description="Where a local tracking store keeps artifacts of new experiments.",
    )

    @property
    def effective_tracking_uri(self) -> str:
        return os.environ.get("MLFLOW_TRACKING_URI") or self.tracking_uri

    @property
    def effective_registry_uri(self) -> str:
        return (
            os.environ.get("MLFLOW_REGISTRY_URI")
            or self.registry_uri
            or self.effective_tracking_uri
        )

    _saved_environment: dict[str, str | None] = pdt.PrivateAttr(default_factory=dict)

    def start(self) -> None:
        # MLflow writes the URIs it is given into the environment (for subprocesses): remember
        # the user's own values, so that stop() restores them and overrides stay overrides.
        if not self._saved_environment:
            self._saved_environment = {name: os.environ.get(name) for name in _URI_VARIABLES}
        mlflow.set_tracking_uri(self.effective_tracking_uri)
        mlflow.set_registry_uri(self.effective_registry_uri)
        try:
            if os.environ.get("MLFLOW_RUN_ID"):
                # Inside `mlflow run`: the project run already chose its experiment and run.
                mlflow.get_run(os.environ["MLFLOW_RUN_ID"])
                return
            experiment = mlflow.get_experiment_by_name(self.experiment_name)
            if experiment is None:
                location = None
                if _is_local(self.effective_tracking_uri):
                    location = Path(self.artifact_root).resolve().as_uri()
                mlflow.create_experiment(self.experiment_name, artifact_location=location)
            mlflow.set_experiment(self.experiment_name)
        except MlflowException as error:
            self.stop()  # hand the environment back even when the store is unusable
            raise InputError(
                f"MLflow tracking at {self.effective_tracking_uri}: unreachable or unusable "
                f"({first_line(error)})"
            ) from None

    def stop(self) -> None:
        if mlflow.active_run() is not None:
            mlflow.end_run(status="FAILED")
        if not self._saved_environment:
            return
        # None is how MLflow forgets a URI (its annotations leave that out).
        mlflow.set_tracking_uri(self._saved_environment["MLFLOW_TRACKING_URI"])  # type: ignore[arg-type]
        mlflow.set_registry_uri(self._saved_environment["MLFLOW_REGISTRY_URI"])  # type: ignore[arg-type]
        for name, value in self._saved_environment.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._saved_environment = {}

    def client(self) -> MlflowClient:
        return MlflowClient(
            tracking_uri=self.effective_tracking_uri, registry_uri=self.effective_registry_uri
        )
