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


def test_register_links_version_and_logged_model_without_printing(
    mlflow_service: MlflowService, capsys: pytest.CaptureFixture[str]
) -> None:
    """What MLflow's fluent ``register_model`` records (a version whose source is the logged
    model, that model's ``mlflow.modelVersions`` tag), without its two prints."""
    import json

    import mlflow
    import numpy as np
    from sklearn.linear_model import LinearRegression

    mlflow_service.start()
    try:
        client = mlflow_service.client()
        features = np.arange(20, dtype=float).reshape(10, 2)
        with mlflow.start_run() as run:
            info = mlflow.sklearn.log_model(
                LinearRegression().fit(features, features.sum(axis=1)), name="model"
            )
        capsys.readouterr()
        first = registry.register(client, "registered-quietly", info.model_id, run.info.run_id)
        second = registry.register(client, "registered-quietly", info.model_id, run.info.run_id)
        printed = capsys.readouterr()
        version = client.get_model_version("registered-quietly", second.version)
        tag = client.get_logged_model(info.model_id).tags["mlflow.modelVersions"]
        served = mlflow.pyfunc.load_model(second.uri).predict(features[:2])
    finally:
        mlflow_service.stop()
    assert (first.version, second.version) == ("1", "2")
    assert first.run_id == run.info.run_id
    assert version.run_id == run.info.run_id
    assert version.source == f"models:/{info.model_id}"
    assert json.loads(tag) == [
        {"name": "registered-quietly", "version": 1},
        {"name": "registered-quietly", "version": 2},
    ]
    assert list(served) == pytest.approx([1.0, 5.0])
    assert "registered" not in printed.out + printed.err
    assert "Created version" not in printed.out + printed.err
