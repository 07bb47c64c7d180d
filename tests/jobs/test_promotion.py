from __future__ import annotations

import typing as T

import pytest

from bikes.core.errors import InputError
from bikes.jobs.promotion import PromotionJob


def test_alias_moves_to_the_asked_version_and_back(
    champion: dict[str, T.Any], services: dict[str, T.Any]
) -> None:
    version = int(champion["model_version"])
    with PromotionJob(alias="staging", version=version, **services) as job:
        first = job.run()
    assert first == {"model_version": str(version), "previous_version": None, "alias": "staging"}
    with PromotionJob(alias="staging", **services) as job:  # newest version
        second = job.run()
    assert int(second["model_version"]) >= version
    assert second["previous_version"] == str(version)


def test_unknown_version_is_refused(champion: dict[str, T.Any], services: dict[str, T.Any]) -> None:
    with (
        PromotionJob(version=999, **services) as job,
        pytest.raises(InputError, match="no version 999"),
    ):
        job.run()
