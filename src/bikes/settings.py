"""The top-level settings: one ``job`` of any kind, chosen by its ``KIND``.

Each job kind lives in its own module with its own heavy dependencies (scikit-learn for
training, FastAPI for serving, SQLAlchemy for monitoring). A config names its kind, so
``settings_for(kind)`` imports that one module only; ``MainSettings`` (every kind, as a
discriminated union) is for the JSON schema and for configs whose kind is missing or wrong,
where the error should list every valid kind.
"""

from __future__ import annotations

import functools
import importlib
import typing as T

import pydantic as pdt
import pydantic_settings as pdts

if T.TYPE_CHECKING:
    from bikes.jobs.base import Job

JOB_MODULES: dict[str, str] = {
    "DataJob": "bikes.jobs.data",
    "TrainingJob": "bikes.jobs.training",
    "EvaluationsJob": "bikes.jobs.evaluations",
    "PromotionJob": "bikes.jobs.promotion",
    "InferenceJob": "bikes.jobs.inference",
    "ServingJob": "bikes.jobs.serving",
    "TrafficJob": "bikes.jobs.traffic",
    "MonitoringJob": "bikes.jobs.monitoring",
    "RetrainingJob": "bikes.jobs.retraining",
    "ExportJob": "bikes.jobs.export",
}


class Settings(pdts.BaseSettings):
    """What the merged configs describe.

    Secrets (database passwords, MLflow credentials) never belong in a config: they stay in
    the environment, read by the services that need them (``MLFLOW_TRACKING_URI``, ...).
    """

    model_config = pdts.SettingsConfigDict(
        strict=True, frozen=True, extra="forbid", env_prefix="BIKES_", env_nested_delimiter="__"
    )


def job_class(kind: str) -> type[Job]:
    job: type[Job] = getattr(importlib.import_module(JOB_MODULES[kind]), kind)
    return job


@functools.cache
def settings_for(kind: str | None = None) -> type[Settings]:
    """Settings accepting one job ``kind`` (importing only its module), or every kind."""
    kinds = [kind] if kind in JOB_MODULES else list(JOB_MODULES)
    classes = tuple(job_class(name) for name in kinds)
    job: T.Any = (
        classes[0]
        if len(classes) == 1
        else T.Annotated[T.Union[classes], pdt.Field(discriminator="KIND")]  # noqa: UP007
    )
    model: type[Settings] = pdt.create_model(
        "MainSettings",
        __base__=Settings,
        __doc__=Settings.__doc__,
        job=(job, pdt.Field(description="The job to run; its KIND picks which.")),
    )
    return model


def main_settings() -> type[Settings]:
    """Every job kind: what ``bikes --schema`` prints."""
    return settings_for(None)
