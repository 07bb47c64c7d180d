"""The MLflow model registry: resolve URIs to versions, load models, move aliases, tag versions.

Aliases, never the removed stages. Every URI is resolved to a concrete version before loading,
so the version we report is the version that answered, even if an alias moves meanwhile.
"""

from __future__ import annotations

import dataclasses
import re

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.pyfunc import PyFuncModel
from mlflow.tracking import MlflowClient

from bikes.core.errors import InputError, first_line

_MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")


@dataclasses.dataclass(frozen=True)
class ModelRef:
    """A registered model version, as resolved from a ``models:/`` URI."""

    name: str
    version: str
    run_id: str | None

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def resolve(client: MlflowClient, uri: str) -> ModelRef:
    """``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` to a concrete version."""
    match = _MODELS_URI.match(uri)
    if match is None:
        raise InputError(f"{uri}: expected models:/NAME@ALIAS or models:/NAME/VERSION")
    name, alias, version = match["name"], match["alias"], match["version"]
    try:
        if alias is not None:
            found = client.get_model_version_by_alias(name, alias)
        else:
            found = client.get_model_version(name, version)
    except MlflowException as error:
        what = f"alias '{alias}'" if alias is not None else f"version {version}"
        raise InputError(
            f"{uri}: registered model '{name}' has no {what} ({first_line(error)})"
        ) from None
    return ModelRef(name=name, version=str(found.version), run_id=found.run_id)


def latest_version(client: MlflowClient, name: str) -> ModelRef:
    """The newest registered version of a model."""
    try:
        versions = client.search_model_versions(f"name = '{_quote(name)}'")
    except MlflowException as error:
        raise InputError(f"registered model '{name}': {first_line(error)}") from None
    if not versions:
        raise InputError(f"registered model '{name}': no version registered yet (train first)")
    newest = max(versions, key=lambda version: int(version.version))
    return ModelRef(name=name, version=str(newest.version), run_id=newest.run_id)


def load(ref: ModelRef) -> PyFuncModel:
    """Load a resolved version as a pyfunc model."""
    try:
        model: PyFuncModel = mlflow.pyfunc.load_model(ref.uri)
    except (MlflowException, OSError) as error:
        raise InputError(f"{ref.uri}: cannot be loaded ({first_line(error)})") from None
    return model


def set_alias(client: MlflowClient, ref: ModelRef, alias: str) -> None:
    client.set_registered_model_alias(ref.name, alias, ref.version)


def set_tags(client: MlflowClient, ref: ModelRef, tags: dict[str, str]) -> None:
    for key, value in tags.items():
        client.set_model_version_tag(ref.name, ref.version, key, value)


def _quote(name: str) -> str:
    return name.replace("'", "\\'")


def current_alias_version(client: MlflowClient, name: str, alias: str) -> str | None:
    """The version an alias points to, or None when the alias (or the model) does not exist."""
    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def predict(model: PyFuncModel, ref: ModelRef, features: pd.DataFrame) -> np.ndarray:
    """Predict through the pyfunc, so the model's signature is enforced on our data."""
    try:
        predictions = model.predict(features)
    except MlflowException as error:
        # MLflow's message embeds the whole frame; its last "Error:" part says what is wrong.
        detail = str(error).rsplit("Error: ", 1)[-1] if "Error: " in str(error) else str(error)
        raise InputError(
            f"{ref.uri}: its signature does not match the data ({first_line(ValueError(detail))})"
        ) from None
    return np.asarray(predictions, dtype=float).reshape(-1)


def version_tag(client: MlflowClient, ref: ModelRef, key: str) -> str | None:
    """A tag of a model version, or None when it is not set."""
    tags: dict[str, str] = client.get_model_version(ref.name, ref.version).tags
    return tags.get(key)
