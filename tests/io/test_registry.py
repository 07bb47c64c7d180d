from __future__ import annotations

import typing as T

import pytest

from bikes.core.errors import InputError
from bikes.io import registry
from bikes.io.services import MlflowService


@pytest.fixture
def client(mlflow_service: MlflowService, champion: dict[str, T.Any]) -> T.Iterator[T.Any]:
    mlflow_service.start()
    yield mlflow_service.client()
    mlflow_service.stop()


def test_alias_and_version_uris_resolve_to_the_same_version(
    client: T.Any, champion: dict[str, T.Any]
) -> None:
    by_alias = registry.resolve(client, "models:/bikes@champion")
    by_version = registry.resolve(client, f"models:/bikes/{champion['model_version']}")
    assert by_alias == by_version
    assert by_alias.run_id == champion["run_id"]
    assert by_alias.uri == f"models:/bikes/{champion['model_version']}"


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("runs:/abc/model", "expected models:/NAME@ALIAS or models:/NAME/VERSION"),
        ("models:/bikes@nobody", "registered model 'bikes' has no alias 'nobody'"),
        ("models:/bikes/999", "registered model 'bikes' has no version 999"),
        ("models:/unknown@champion", "registered model 'unknown' has no alias 'champion'"),
    ],
)
def test_bad_uris_name_the_culprit(client: T.Any, uri: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        registry.resolve(client, uri)


def test_latest_version_and_alias_lookup(client: T.Any, champion: dict[str, T.Any]) -> None:
    assert int(registry.latest_version(client, "bikes").version) >= int(champion["model_version"])
    assert registry.current_alias_version(client, "bikes", "nobody") is None
    with pytest.raises(InputError, match="no version registered yet"):
        registry.latest_version(client, "never-trained")
