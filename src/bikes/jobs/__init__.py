"""The jobs, one module each: ``from bikes import jobs; jobs.EvaluationsJob(...)``.

Each class is imported on first use (module ``__getattr__``), so ``import bikes.jobs`` stays
cheap and the CLI pays only for the job kind it runs (see ``bikes.settings``).
"""

from __future__ import annotations

import importlib
import typing as T

from bikes.settings import JOB_MODULES

if T.TYPE_CHECKING:
    from bikes.jobs.data import DataJob
    from bikes.jobs.evaluations import EvaluationsJob
    from bikes.jobs.export import ExportJob
    from bikes.jobs.inference import InferenceJob
    from bikes.jobs.monitoring import MonitoringJob
    from bikes.jobs.promotion import PromotionJob
    from bikes.jobs.retraining import RetrainingJob
    from bikes.jobs.serving import ServingJob
    from bikes.jobs.traffic import TrafficJob
    from bikes.jobs.training import TrainingJob

__all__ = [
    "DataJob",
    "EvaluationsJob",
    "ExportJob",
    "InferenceJob",
    "MonitoringJob",
    "PromotionJob",
    "RetrainingJob",
    "ServingJob",
    "TrafficJob",
    "TrainingJob",
]


def __getattr__(name: str) -> T.Any:
    if name in JOB_MODULES:
        return getattr(importlib.import_module(JOB_MODULES[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
