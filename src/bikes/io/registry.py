"""The MLflow model registry: resolve URIs to versions, load models, move aliases, tag versions.

Aliases, never the removed stages. Every URI is resolved to a concrete version before loading,
so the version we report is the version that answered, even if an alias moves meanwhile.
A gate's promotion is a compare-and-set (``promote``): the alias moves only if it still points
at the version the gate compared against.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import importlib.metadata
import os
import platform
import re
import tempfile
import typing as T
from pathlib import Path

import numpy as np
import pandas as pd
from loguru import logger

from bikes.core.errors import InputError, PromotionConflictError, first_line
from bikes.core.redaction import redact, redact_url

if T.TYPE_CHECKING:
    from mlflow.models import ModelSignature
    from mlflow.models.model import ModelInfo
    from mlflow.pyfunc import PyFuncModel
    from mlflow.tracking import MlflowClient

# MLflow and SQLAlchemy are imported in the functions that use them: a job that starts MLflow
# in the background (monitoring) imports this module without waiting for them.

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
    from mlflow.exceptions import MlflowException

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
    from mlflow.exceptions import MlflowException

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
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        model: PyFuncModel = mlflow.pyfunc.load_model(ref.uri)
    except (MlflowException, OSError) as error:
        raise InputError(f"{ref.uri}: cannot be loaded ({first_line(error)})") from None
    return model


def set_alias(client: MlflowClient, ref: ModelRef, alias: str) -> None:
    client.set_registered_model_alias(ref.name, alias, ref.version)


def promote(
    client: MlflowClient,
    ref: ModelRef,
    alias: str,
    expected: str | None,
    registry_uri: str,
) -> str | None:
    """Compare-and-set: point ``alias`` at ``ref`` only if it still points at ``expected``
    (None: the alias did not exist). Returns the version it pointed at before.

    Two gates that compared their candidates against the same champion must not both promote:
    the second would replace the first without having been compared with it. So the re-check
    and the move happen under a lock (``promotion_lock``): a PostgreSQL advisory lock on the
    registry's database, a file lock beside a SQLite registry; an http(s) tracking server
    offers no lock, so there the alias is re-checked right before it is set, which narrows the
    window to two requests but cannot close it. A moved alias raises
    ``PromotionConflictError`` naming both versions, and nothing moves. An alias already on
    ``ref`` is left as it is.
    """
    with promotion_lock(registry_uri, f"{ref.name}@{alias}"):
        current = alias_version(client, ref.name, alias)
        if current == ref.version:
            return current
        if current != expected:
            raise PromotionConflictError(conflict_message(ref, alias, expected, current))
        set_alias(client, ref, alias)
    return current


def conflict_message(ref: ModelRef, alias: str, expected: str | None, current: str | None) -> str:
    """Why ``ref`` was not promoted, with both versions named."""
    was = f"version {expected}" if expected is not None else "no version (a first deploy)"
    now = f"version {current}" if current is not None else "no version"
    return (
        f"{ref.name}@{alias} is now {now}, but the gate compared {ref.uri} against {was}: "
        f"nothing moved; run the gate again to compare version {ref.version} with the new "
        f"{alias}"
    )


def alias_version(client: MlflowClient, name: str, alias: str) -> str | None:
    """The version ``alias`` points at, None when the alias or the model does not exist; any
    other registry error is raised (``InputError``), never read as "no alias"."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode

    try:
        aliases: dict[str, T.Any] = client.get_registered_model(name).aliases
    except MlflowException as error:
        if error.error_code == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
            return None
        raise InputError(
            f"registered model '{name}': alias {alias} unreadable ({redact(first_line(error))})"
        ) from None
    version = aliases.get(alias)
    return None if version is None else str(version)


@contextlib.contextmanager
def promotion_lock(registry_uri: str, key: str) -> T.Iterator[str]:
    """Hold the registry's promotion lock for ``key`` (``name@alias``); yields its kind.

    ``advisory``: ``pg_advisory_xact_lock`` in a transaction on the PostgreSQL registry
    database itself, so every process promoting into that registry, on any machine, queues
    on it; released when the transaction ends, or when a killed process's connection drops.
    ``file``: ``fcntl.flock`` on ``<database>.promotion.lock`` beside a SQLite registry (or in
    a file registry's folder); released by the kernel when the holder exits, however it dies.
    ``none``: an http(s) tracking server (or another store) offers no lock: the caller's
    re-check right before the set is all there is.
    """
    scheme = registry_uri.split(":", 1)[0].lower() if "://" in registry_uri else "file"
    backend = scheme.split("+", 1)[0]
    if backend in ("postgresql", "postgres"):
        with _advisory_lock(registry_uri, key):
            yield "advisory"
    elif backend == "sqlite" or backend == "file":
        path = _lock_path(registry_uri, backend)
        if path is None:
            yield "none"  # an in-memory database: one process, nothing to share
            return
        with _file_lock(path):
            yield "file"
    else:
        yield "none"


def _lock_path(registry_uri: str, backend: str) -> Path | None:
    import sqlalchemy as sa

    if backend == "sqlite":
        database = sa.make_url(registry_uri).database
        if not database or database == ":memory:":
            return None
        return Path(f"{database}.promotion.lock")
    folder = registry_uri.removeprefix("file://") if "://" in registry_uri else registry_uri
    return Path(folder) / ".promotion.lock"


@contextlib.contextmanager
def _file_lock(path: Path) -> T.Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:  # "a": created if missing, never truncated under a holder
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logger.info("Waiting for the promotion lock {} (another promotion holds it)", path)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def _advisory_lock(registry_uri: str, key: str) -> T.Iterator[None]:
    import sqlalchemy as sa

    url = sa.make_url(registry_uri)
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")  # the driver bikes installs
    digest = hashlib.sha256(f"bikes-promotion:{key}".encode()).digest()
    number = int.from_bytes(digest[:8], "big", signed=True)  # PostgreSQL's bigint is signed
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as connection:
            connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": number})
            yield
    except sa.exc.SQLAlchemyError as error:
        raise InputError(
            f"registry {redact_url(registry_uri)}: promotion lock unavailable "
            f"({redact(first_line(error))})"
        ) from None
    finally:
        engine.dispose()


def set_tags(client: MlflowClient, ref: ModelRef, tags: dict[str, str]) -> None:
    for key, value in tags.items():
        client.set_model_version_tag(ref.name, ref.version, key, value)


def _quote(name: str) -> str:
    return name.replace("'", "\\'")


def current_alias_version(client: MlflowClient, name: str, alias: str) -> str | None:
    """The version an alias points to, or None when the alias (or the model) does not exist."""
    from mlflow.exceptions import MlflowException

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
    from mlflow.exceptions import MlflowException

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
    from mlflow.exceptions import MlflowException

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
    import mlflow
    from mlflow.exceptions import MlflowException

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
    return version_tags(client, ref).get(key)


def version_tags(client: MlflowClient, ref: ModelRef) -> dict[str, str]:
    """Every tag of a model version."""
    tags: dict[str, str] = client.get_model_version(ref.name, ref.version).tags
    return dict(tags)


def log_table(frame: pd.DataFrame, artifact: str) -> None:
    """``frame`` as a parquet artifact of the active run, at ``artifact`` (``dir/name.parquet``)."""
    import mlflow

    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / Path(artifact).name
        frame.to_parquet(path, index=False)
        mlflow.log_artifact(str(path), artifact_path=str(Path(artifact).parent))


# What a scikit-learn model saved with skops imports to load and predict (MLflow itself is
# pinned first). Everything else in the project (FastAPI, SQLAlchemy, ...) serves no prediction.
SKLEARN_MODEL_PACKAGES = ("scikit-learn", "skops", "numpy", "scipy", "pandas")


def model_environment(packages: T.Sequence[str] = SKLEARN_MODEL_PACKAGES) -> dict[str, T.Any]:
    """The model's environment, given rather than inferred: MLflow and ``packages`` pinned to
    the versions that trained it, on this Python.

    Left to itself, MLflow infers requirements at each ``log_model``: ``uv export`` of the
    whole project when the working directory holds ``uv.lock`` (every dependency pinned, the
    dev tools' too, and "Detected uv project" logged five times), otherwise a subprocess that
    loads the model and records its imports (seconds). ``pip`` stays unversioned: uv's
    environments have none to pin (MLflow warns "Failed to resolve installed pip version").
    """
    import mlflow

    pins = [f"mlflow=={mlflow.__version__}"]
    pins += [f"{name}=={importlib.metadata.version(name)}" for name in packages]
    return {
        "name": "mlflow-env",
        "channels": ["conda-forge"],
        "dependencies": [f"python={platform.python_version()}", "pip", {"pip": pins}],
    }


def log_sklearn_model(
    client: MlflowClient,
    estimator: T.Any,
    *,
    signature: ModelSignature,
    registered_model: str,
    skops_trusted_types: list[str],
    run_id: str,
    input_example: pd.DataFrame | None = None,
) -> ModelRef:
    """Log ``estimator`` as ``model`` (skops format) in the active run ``run_id``, with
    ``model_environment()``, and register it under ``registered_model`` (``register``: no
    "Successfully registered model" and "Created version" prints on the job's output).

    MLflow's save reloads the skops file with the trusted types (an untrusted type fails the
    log). The signature says the inputs; an ``input_example`` is optional because MLflow then
    loads the logged model once more to predict it (its serving check, which the sklearn
    flavour offers no way to skip: 0.8 s on a quiet machine, 1.5-2.5 s of CPU on a loaded
    one, where one row through 300 trees meets 300 OpenMP barriers). Training logs none: our
    tests load and serve every model they register.
    """
    import mlflow

    with _uv_detection_off():
        info: ModelInfo = mlflow.sklearn.log_model(
            estimator,
            name="model",
            signature=signature,
            input_example=input_example,
            skops_trusted_types=skops_trusted_types,
            conda_env=model_environment(),
        )
    return register(client, registered_model, info.model_id, run_id)


def register(client: MlflowClient, name: str, model_id: str, run_id: str) -> ModelRef:
    """A new version of ``name`` (created if new) from the logged model ``model_id``, linked
    both ways as MLflow's ``register_model`` links them (the logged model's
    ``mlflow.modelVersions`` tag lists its versions), in the registry's words only: no
    prints on the job's output."""
    import json

    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import ALREADY_EXISTS, RESOURCE_ALREADY_EXISTS, ErrorCode
    from mlflow.utils.mlflow_tags import MLFLOW_MODEL_VERSIONS

    try:
        client.create_registered_model(name)
    except MlflowException as error:  # a server answers ALREADY_EXISTS, a database the other
        exists = (ErrorCode.Name(RESOURCE_ALREADY_EXISTS), ErrorCode.Name(ALREADY_EXISTS))
        if error.error_code not in exists:
            raise
    version = client.create_model_version(
        name, source=f"models:/{model_id}", run_id=run_id, model_id=model_id
    )
    listed = client.get_logged_model(model_id).tags.get(MLFLOW_MODEL_VERSIONS)
    versions = [*json.loads(listed or "[]"), {"name": name, "version": version.version}]
    client.set_logged_model_tags(model_id, {MLFLOW_MODEL_VERSIONS: json.dumps(versions)})
    return ModelRef(name=name, version=str(version.version), run_id=run_id)


@contextlib.contextmanager
def _uv_detection_off() -> T.Iterator[None]:
    """``MLFLOW_UV_AUTO_DETECT=false`` for one call: with the environment given, MLflow's uv
    detection would only log "Detected uv project" and mark the model as using uv."""
    saved = os.environ.get("MLFLOW_UV_AUTO_DETECT")
    os.environ["MLFLOW_UV_AUTO_DETECT"] = "false"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("MLFLOW_UV_AUTO_DETECT", None)
        else:
            os.environ["MLFLOW_UV_AUTO_DETECT"] = saved
