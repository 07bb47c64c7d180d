"""The model being served, swapped without dropping a request when its alias moves."""

from __future__ import annotations

import dataclasses
import threading

from loguru import logger
from mlflow.pyfunc import PyFuncModel
from mlflow.tracking import MlflowClient

from bikes.core.errors import BikesError
from bikes.io import registry


@dataclasses.dataclass(frozen=True)
class LoadedModel:
    """A resolved version and its model: a request reads both at once, so they always agree."""

    ref: registry.ModelRef
    model: PyFuncModel


class ModelSlot:
    """Holds the current model; a poller thread swaps in a new version when the URI moves."""

    def __init__(self, client: MlflowClient, uri: str, poll_interval: float) -> None:
        self.client = client
        self.uri = uri
        self.poll_interval = poll_interval
        ref = registry.resolve(client, uri)
        self.current = LoadedModel(ref, registry.load(ref))
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
        if ref.version == self.current.ref.version:
            return False
        loaded = LoadedModel(ref, registry.load(ref))
        previous, self.current = self.current.ref.version, loaded  # one atomic assignment
        logger.info("{} moved: now serving version {} (was {})", self.uri, ref.version, previous)
        return True

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_interval):
            try:
                self.refresh()
            except BikesError as error:  # registry down or alias removed: keep serving
                logger.warning(
                    "Model poll failed, keeping version {}: {}", self.current.ref.version, error
                )
