"""The MLflow model registry: resolve URIs to versions, load models, move aliases, tag versions.

Aliases, never the removed stages. Every URI is resolved to a concrete version before loading,
so the version we report is the version that answered, even if an alias moves meanwhile.
"""

from __future__ import annotations

import dataclasses
import re
import typing as T

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
    """Predict through the pyfunc, so the model's signature is enforced on our data.

    Floating-point numbers come back as float64; integer, boolean and text classes stay what
    they are. A pyfunc that answers with one column per class (probabilities) is reduced to the
    most probable class: ``scores`` gives the probabilities themselves.
    """
    try:
        predictions = model.predict(features)
    except MlflowException as error:
        # MLflow's message embeds the whole frame; its last "Error:" part says what is wrong.
        detail = str(error).rsplit("Error: ", 1)[-1] if "Error: " in str(error) else str(error)
        raise InputError(
            f"{ref.uri}: its signature does not match the data ({first_line(ValueError(detail))})"
        ) from None
    if isinstance(predictions, pd.DataFrame) and predictions.shape[1] > 1:
        classes: np.ndarray = np.asarray(predictions.columns)
        return np.asarray(classes[predictions.to_numpy().argmax(axis=1)])
    values: np.ndarray = np.asarray(predictions)
    if values.ndim == 2 and values.shape[1] > 1:
        return np.asarray(values.argmax(axis=1))
    values = values.reshape(-1)
    if values.dtype.kind == "f":
        return values.astype(float)
    return values  # integer, boolean or text classes (or integer predictions) as they are


def scores(model: PyFuncModel, features: pd.DataFrame) -> tuple[list[T.Any], np.ndarray] | None:
    """``(classes, probabilities)`` of a classifier, or None when the model gives no scores.

    An sklearn model's ``predict_proba`` (MLflow's pyfunc answers with classes only), or a
    pyfunc that itself answers with one probability column per class.
    """
    try:
        raw = model.get_raw_model()
    except (MlflowException, AttributeError, NotImplementedError):
        raw = None
    if raw is not None and hasattr(raw, "predict_proba") and hasattr(raw, "classes_"):
        probabilities = np.asarray(raw.predict_proba(features), dtype=float)
        return list(raw.classes_), probabilities
    answer = model.predict(features)
    if isinstance(answer, pd.DataFrame) and answer.shape[1] > 1:
        return list(answer.columns), answer.to_numpy(dtype=float)
    return None


def signature_inputs(model: PyFuncModel) -> list[tuple[str, str]] | None:
    """The model signature's named inputs as ``(name, type)``, or None without a signature."""
    schema = model.metadata.get_input_schema()
    if schema is None or not schema.has_input_names():
        return None
    return [(str(spec.name), _type_name(spec)) for spec in schema.inputs]


def signature_inputs_of(ref: ModelRef) -> list[tuple[str, str]] | None:
    """``signature_inputs`` from the version's metadata alone, without loading the model."""
    try:
        info = mlflow.models.get_model_info(ref.uri)
    except (MlflowException, OSError) as error:
        raise InputError(f"{ref.uri}: metadata unreadable ({first_line(error)})") from None
    schema = info.signature.inputs if info.signature is not None else None
    if schema is None or not schema.has_input_names():
        return None
    return [(str(spec.name), _type_name(spec)) for spec in schema.inputs]


def _type_name(spec: T.Any) -> str:
    kind = getattr(spec, "type", None)
    return str(getattr(kind, "name", kind))


def version_tag(client: MlflowClient, ref: ModelRef, key: str) -> str | None:
    """A tag of a model version, or None when it is not set."""
    tags: dict[str, str] = client.get_model_version(ref.name, ref.version).tags
    return tags.get(key)
