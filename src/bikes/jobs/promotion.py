"""Move an alias (``champion`` by default) to a registered model version."""

from __future__ import annotations

import typing as T

import pydantic as pdt
from loguru import logger

from bikes.io import registry
from bikes.jobs.base import Job, Locals


class PromotionJob(Job):
    """Point ``models:/<name>@<alias>`` at ``version`` (the newest version when unset)."""

    KIND: T.Literal["PromotionJob"] = "PromotionJob"

    registered_model_name: str = "bikes"
    alias: str = "champion"
    version: int | None = pdt.Field(default=None, gt=0)

    def run(self) -> Locals:
        client = self.mlflow_service.client()
        name = self.registered_model_name
        if self.version is None:
            ref = registry.latest_version(client, name)
        else:
            ref = registry.resolve(client, f"models:/{name}/{self.version}")
        previous = registry.current_alias_version(client, name, self.alias)
        registry.set_alias(client, ref, self.alias)
        logger.success(
            "{}@{} -> version {} (was {})", name, self.alias, ref.version, previous or "unset"
        )
        return {"model_version": ref.version, "previous_version": previous, "alias": self.alias}
