"""What every job shares: a strict, frozen config that starts its services on entry."""

from __future__ import annotations

import abc
import types
import typing as T

import pydantic as pdt

from bikes.io.services import LoggerService, MlflowService

Locals = dict[str, T.Any]


class Job(abc.ABC, pdt.BaseModel, strict=True, frozen=True, extra="forbid"):
    """A config with a ``run()``; ``with job:`` starts the logger and MLflow, and stops them."""

    KIND: str
    logger_service: LoggerService = pdt.Field(
        default=LoggerService(), description="Logging: level and colours."
    )
    mlflow_service: MlflowService = pdt.Field(
        default=MlflowService(), description="MLflow tracking and registry stores."
    )

    # Jobs that never touch MLflow (the data job) skip connecting to it.
    uses_mlflow: T.ClassVar[bool] = True

    def __enter__(self) -> T.Self:
        self.logger_service.start()
        if self.uses_mlflow:
            self.mlflow_service.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: types.TracebackType | None,
    ) -> None:
        if self.uses_mlflow:
            self.mlflow_service.stop()
        self.logger_service.stop()

    @abc.abstractmethod
    def run(self) -> Locals:
        """Do the work; return a small summary (ids, versions, metrics) for callers and tests."""
