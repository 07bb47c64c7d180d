from __future__ import annotations

import typing as T

import pytest

from bikes.core.errors import InputError
from bikes.jobs.promotion import PromotionJob


def test_alias_moves_to_the_asked_version_and_back(
    champion: dict[str, T.Any], services: dict[str, T.Any]
) -> None:
    version = int(champion["model_version"])
    with PromotionJob(alias="staging", version=version, force=True, **services) as job:
        first = job.run()
    assert first == {"model_version": str(version), "previous_version": None, "alias": "staging"}
    with PromotionJob(alias="staging", force=True, **services) as job:  # newest version
        second = job.run()
    assert int(second["model_version"]) >= version
    assert second["previous_version"] == str(version)


def test_unknown_version_is_refused(champion: dict[str, T.Any], services: dict[str, T.Any]) -> None:
    with (
        PromotionJob(version=999, **services) as job,
        pytest.raises(InputError, match="no version 999"),
    ):
        job.run()


def test_unvalidated_version_is_refused_unless_forced(
    champion: dict[str, T.Any], services: dict[str, T.Any]
) -> None:
    version = int(champion["model_version"])
    job = PromotionJob(alias="refused", version=version, **services)
    with job, pytest.raises(InputError, match="validation_status is unset, not passed"):
        job.run()
    with job:
        client = services["mlflow_service"].client()
        assert "refused" not in client.get_registered_model("bikes").aliases
