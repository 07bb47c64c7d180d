"""Contracts from config: inline, or the path of a YAML file holding one.

``job.contract: confs/bikes-contract.yaml`` and ``job.contract: {task: ..., target: ...}``
both validate to a ``Contract``; a missing or malformed file is a config error naming it.
"""

from __future__ import annotations

import json
import tempfile
import typing as T
from pathlib import Path

import omegaconf as oc
import pydantic as pdt

from bikes.core.contract import Contract
from bikes.core.errors import ContractError, InputError, first_line
from bikes.io import registry
from bikes.io.configs import load_config

if T.TYPE_CHECKING:  # MLflow is imported where it is used (a 3 s import; see io.services)
    from mlflow.pyfunc import PyFuncModel
    from mlflow.tracking import MlflowClient

CONTRACT_ARTIFACT = "contract/contract.json"
CONTRACT_TAG = "contract"  # on a model version: the URI of the contract it was trained with


def _load_if_path(value: T.Any) -> T.Any:
    if isinstance(value, str):
        config = load_config(value)
        return oc.OmegaConf.to_container(config, resolve=True)
    return value


def load_contract(path: str) -> Contract:
    """A contract YAML file, validated."""
    return Contract.model_validate(_load_if_path(path))


ContractSpec = T.Annotated[Contract, pdt.BeforeValidator(_load_if_path)]
"""A job's ``contract`` field: a ``Contract`` inline or the path of a YAML file holding one."""

CONTRACT_DESCRIPTION = (
    "The data contract (task, target, prediction, score, timestamp, id, features, segments), "
    "inline or the path of a YAML file holding one. Default: the contract the model version "
    "was trained with (its `contract` tag), completed by its signature."
)


def log_contract(contract: Contract) -> None:
    """The contract, features resolved, as an artifact of the active run."""
    import mlflow

    mlflow.log_dict(contract.model_dump(mode="json"), CONTRACT_ARTIFACT)


def model_contract(client: MlflowClient, ref: registry.ModelRef) -> Contract | None:
    """The contract a version was trained with (its ``contract`` tag), or None."""
    import mlflow
    from mlflow.exceptions import MlflowException

    uri = registry.version_tag(client, ref, CONTRACT_TAG)
    if uri is None:
        return None
    with tempfile.TemporaryDirectory() as directory:
        try:
            path = mlflow.artifacts.download_artifacts(uri, dst_path=directory)
            document = json.loads(Path(path).read_text(encoding="utf-8"))
        except (MlflowException, OSError, ValueError) as error:
            raise InputError(
                f"{ref.uri}: contract {uri} unreadable ({first_line(error)})"
            ) from None
    try:
        return Contract.model_validate(document)
    except pdt.ValidationError as error:
        raise ContractError(f"{ref.uri}: its contract is invalid ({first_line(error)})") from None


def resolve_contract(
    client: MlflowClient,
    ref: registry.ModelRef,
    configured: Contract | None,
    model: PyFuncModel | None = None,
) -> Contract:
    """The job's contract (else the version's own), checked against the model's signature.

    A model trained elsewhere, with no contract in config or tags, is taken at its signature:
    a regression on its inputs, with no label known. ``model``: the loaded model, if the job
    has it already; otherwise only its metadata is read.
    """
    contract = configured or model_contract(client, ref) or Contract()
    inputs = registry.signature_inputs(model) if model else registry.signature_inputs_of(ref)
    if inputs is None:
        if contract.features is None:
            raise ContractError(
                f"{ref.uri}: the model has no signature: list job.contract.features"
            )
        return contract
    return contract.with_signature(inputs, ref.uri)
