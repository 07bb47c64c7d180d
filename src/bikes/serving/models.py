"""The model being served, swapped without dropping a request when its alias moves.

A version comes with its contract (the job's, else the one it was trained with, checked
against its signature) and the request validation built from both: a swap to a version with
other features swaps the validation with it, in one assignment.
"""

from __future__ import annotations

import dataclasses
import threading

import numpy as np
from loguru import logger
from mlflow.exceptions import MlflowException
from mlflow.pyfunc import PyFuncModel
from mlflow.tracking import MlflowClient

from bikes.core.contract import Contract
from bikes.core.errors import BikesError, ContractError
from bikes.io import registry
from bikes.io.contracts import resolve_contract
from bikes.serving.contract import RowContract


@dataclasses.dataclass(frozen=True)
class LoadedModel:
    """A resolved version, its model, contract and request validation: a request reads them
    at once, so they always agree."""

    ref: registry.ModelRef
    model: PyFuncModel
    contract: Contract
    rows: RowContract


def load_model(
    client: MlflowClient, ref: registry.ModelRef, configured: Contract | None
) -> LoadedModel:
    """A version, ready to serve; a contract that contradicts it is a ``ContractError``."""
    model = registry.load(ref)
    contract = resolve_contract(client, ref, configured, model)
    _check_scores(contract, model)
    rows = RowContract(contract, registry.signature_inputs(model))
    return LoadedModel(ref, model, contract, rows)


def _check_scores(contract: Contract, model: PyFuncModel) -> None:
    """The contract's score columns must name the classes of an sklearn classifier: found at
    load time, not on every request."""
    if not contract.is_classification or contract.score is None:
        return
    try:
        classes = getattr(model.get_raw_model(), "classes_", None)
    except (MlflowException, AttributeError, NotImplementedError):
        return
    if classes is not None:
        contract.score_frame(list(classes), np.zeros((0, len(classes))))


class ModelSlot:
    """Holds the current model; a poller thread swaps in a new version when the URI moves.

    ``contract``: the job's contract, or None for each version's own.
    """

    def __init__(
        self,
        client: MlflowClient,
        uri: str,
        poll_interval: float,
        contract: Contract | None = None,
    ) -> None:
        self.client = client
        self.uri = uri
        self.poll_interval = poll_interval
        self.configured = contract
        self.current = load_model(client, registry.resolve(client, uri), contract)
        self._refused: str | None = None  # a version whose contract is broken: not retried
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="model-poller", daemon=True)

    def start(self) -> None:
        if self.poll_interval > 0:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def refresh(self) -> bool:
        """Load the version the URI points to now, if it changed; True when swapped."""
        ref = registry.resolve(self.client, self.uri)
        if ref.version in (self.current.ref.version, self._refused):
            return False
        try:
            loaded = load_model(self.client, ref, self.configured)
        except ContractError:
            self._refused = ref.version
            raise
        previous, self.current = self.current.ref.version, loaded  # one atomic assignment
        logger.info("{} moved: now serving version {} (was {})", self.uri, ref.version, previous)
        return True

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_interval):
            try:
                self.refresh()
            except BikesError as error:  # registry down, alias removed, contract broken
                logger.warning(
                    "Model poll failed, keeping version {}: {}", self.current.ref.version, error
                )
