"""Serve the champion over HTTP and capture every prediction into the store."""

from __future__ import annotations

import types
import typing as T

import pydantic as pdt
import uvicorn
from loguru import logger

from bikes.io.capture import CaptureWriter
from bikes.io.store import Store, configured_uri
from bikes.jobs.base import Job, Locals
from bikes.serving.app import create_app
from bikes.serving.models import ModelSlot


class _GracefulServer(uvicorn.Server):
    """Exit normally after a graceful SIGTERM/SIGINT shutdown.

    uvicorn re-raises the signal once it has shut down, which kills the process before the
    job can report what it wrote; the capture queue is drained by then (lifespan shutdown), so
    the job finishes its run() and the process exits 0.
    """

    def handle_exit(self, sig: int, frame: types.FrameType | None) -> None:
        super().handle_exit(sig, frame)
        self._captured_signals.clear()


class ServingJob(Job):
    """FastAPI on uvicorn; SIGTERM drains the capture queue before the process exits.

    The store URI may carry a password: give it in ``BIKES_STORE_URI`` rather than a config.
    """

    KIND: T.Literal["ServingJob"] = "ServingJob"

    host: str = "127.0.0.1"
    port: int = pdt.Field(default=8000, ge=0, le=65535)
    model_uri: str = "models:/bikes@champion"
    poll_interval: float = pdt.Field(default=30.0, ge=0)  # seconds; 0 never re-resolves
    capture: bool = True
    store_uri: str = "sqlite:///predictions.db"
    store_schema: str | None = None
    spool_path: str = "predictions.spool.jsonl"
    batch_size: int = pdt.Field(default=500, gt=0)
    flush_interval: float = pdt.Field(default=0.2, gt=0)
    max_pending: int = pdt.Field(default=100_000, gt=0)
    max_batch_rows: int = pdt.Field(default=10_000, gt=0)

    def run(self) -> Locals:
        slot = ModelSlot(self.mlflow_service.client(), self.model_uri, self.poll_interval)
        store, writer = None, None
        if self.capture:
            store = Store(configured_uri(self.store_uri), self.store_schema)
            store.create()
            writer = CaptureWriter(
                store,
                spool_path=self.spool_path,
                batch_size=self.batch_size,
                flush_interval=self.flush_interval,
                max_pending=self.max_pending,
            )
        app = create_app(slot, store, writer, max_batch_rows=self.max_batch_rows)
        logger.info(
            "Serving {} version {} on http://{}:{} (capture: {})",
            slot.current.ref.name,
            slot.current.ref.version,
            self.host,
            self.port,
            store.safe_uri if store else "off",
        )
        server = _GracefulServer(
            uvicorn.Config(
                app, host=self.host, port=self.port, log_level="warning", access_log=False
            )
        )
        server.run()
        written = writer.written if writer else 0
        logger.info("Stopped; {} rows written to the store", written)
        return {"rows_written": written}
