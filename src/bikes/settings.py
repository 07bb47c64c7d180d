"""The top-level settings: one ``job`` of any kind, chosen by its ``KIND``."""

from __future__ import annotations

import typing as T

import pydantic as pdt
import pydantic_settings as pdts

from bikes.jobs.data import DataJob
from bikes.jobs.evaluations import EvaluationsJob
from bikes.jobs.inference import InferenceJob
from bikes.jobs.monitoring import MonitoringJob
from bikes.jobs.promotion import PromotionJob
from bikes.jobs.serving import ServingJob
from bikes.jobs.traffic import TrafficJob
from bikes.jobs.training import TrainingJob

JobKind = T.Annotated[
    DataJob
    | TrainingJob
    | EvaluationsJob
    | PromotionJob
    | InferenceJob
    | ServingJob
    | TrafficJob
    | MonitoringJob,
    pdt.Field(discriminator="KIND"),
]


class MainSettings(pdts.BaseSettings):
    """What the merged configs describe.

    Secrets (database passwords, MLflow credentials) never belong in a config: they stay in
    the environment, read by the services that need them (``MLFLOW_TRACKING_URI``, ...).
    """

    model_config = pdts.SettingsConfigDict(
        strict=True, frozen=True, extra="forbid", env_prefix="BIKES_", env_nested_delimiter="__"
    )

    job: JobKind
