"""Move an alias (``champion`` by default) to a registered model version."""

from __future__ import annotations

import typing as T

import pydantic as pdt
from loguru import logger

from bikes.core import gate
from bikes.core.errors import InputError
from bikes.core.gate import (
    VALIDATION_CHAMPION_ALIAS_TAG,
    VALIDATION_CHAMPION_TAG,
    VALIDATION_STATUS_TAG,
)
from bikes.io import registry
from bikes.jobs.base import Job, Locals


class PromotionJob(Job):
    """Point ``models:/<name>@<alias>`` at ``version`` (the newest version when unset).

    The gate's word is final: a version whose ``validation_status`` tag is not ``passed`` is
    refused, unless ``force: true`` (logged as a warning, for emergencies and first set-ups).
    And it holds only against the champion it was given: moving the gate's own alias
    (``validation_champion_alias``, ``champion``) is a compare-and-set against the version the
    gate compared with (``validation_champion_version``): if the alias moved since, ``bikes``
    exits 5 (``PromotionConflictError``) and nothing moves; re-run the gate. ``force`` skips
    both checks.
    """

    KIND: T.Literal["PromotionJob"] = "PromotionJob"

    registered_model: str = pdt.Field(
        default="bikes", description="The registered model whose alias moves."
    )
    alias: str = pdt.Field(default="champion", description="The alias to move.")
    version: int | None = pdt.Field(
        default=None, gt=0, description="The version to point at. Default: the newest."
    )
    force: bool = pdt.Field(
        default=False,
        description="Promote even a version the gate did not pass (logged as a warning).",
    )

    def run(self) -> Locals:
        client = self.mlflow_service.client()
        name = self.registered_model
        if self.version is None:
            ref = registry.latest_version(client, name)
        else:
            ref = registry.resolve(client, f"models:/{name}/{self.version}")
        status = registry.version_tag(client, ref, VALIDATION_STATUS_TAG)
        if status != "passed":
            advice = (
                "it failed the evaluations gate"
                if status == "failed"
                else "run the evaluations gate first"
            )
            if not self.force:
                raise InputError(
                    f"{ref.uri}: validation_status is {status or 'unset'}, not passed: {advice}, "
                    "or set job.force=true to override"
                )
            logger.warning(
                "Forcing {}@{} to version {} (validation_status: {})",
                name,
                self.alias,
                ref.version,
                status or "unset",
            )
        tags = registry.version_tags(client, ref)
        compared = tags.get(VALIDATION_CHAMPION_TAG)
        gated_alias = tags.get(VALIDATION_CHAMPION_ALIAS_TAG, "champion")
        if self.force or status != "passed" or compared is None or gated_alias != self.alias:
            if not self.force and status == "passed" and compared is None:
                logger.warning(
                    "{}: the gate recorded no champion (an older bikes): {}@{} moves without "
                    "compare-and-set",
                    ref.uri,
                    name,
                    self.alias,
                )
            previous = registry.current_alias_version(client, name, self.alias)
            registry.set_alias(client, ref, self.alias)
        else:
            previous = registry.promote(
                client,
                ref,
                self.alias,
                gate.compared_champion(compared),
                self.mlflow_service.effective_registry_uri,
            )
        logger.success(
            "{}@{} -> version {} (was {})", name, self.alias, ref.version, previous or "unset"
        )
        return {"model_version": ref.version, "previous_version": previous, "alias": self.alias}
