"""Serve the champion over HTTP and capture every prediction (and every rejected row) into the
store."""

from __future__ import annotations

import types
import typing as T

import pydantic as pdt
import uvicorn
from loguru import logger

from bikes.core.contract import Contract
from bikes.core.errors import CaptureLossError
from bikes.io.capture import Acknowledge, CaptureWriter
from bikes.io.contracts import CONTRACT_DESCRIPTION, ContractSpec
from bikes.io.store import DEFAULT_STORE_URI, StoreSchema, StoreUri, open_store
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
    """FastAPI on uvicorn; SIGTERM drains the capture queue before the process exits, and the
    job fails (CaptureLossError, exit 7) if acknowledged rows could be kept nowhere.

    Requests are checked against the served version's contract (``contract``, else the one it
    was trained with); a request with an invalid row is answered 422 and each invalid row is
    recorded in the store's ``rejected_rows``. The store URI may carry a password: give it in
    ``BIKES_STORE_URI`` rather than a config.
    """

    KIND: T.Literal["ServingJob"] = "ServingJob"

    host: str = pdt.Field(default="127.0.0.1", description="The address to listen on.")
    port: int = pdt.Field(default=8000, ge=0, le=65535, description="The port to listen on.")
    registered_model: str = pdt.Field(
        default="bikes", description="The registry entry served; model_uri derives from it."
    )
    model_uri: str | None = pdt.Field(
        default=None,
        description="The model to serve, models:/NAME@ALIAS or models:/NAME/VERSION. Default: "
        "models:/<registered_model>@champion.",
    )
    contract: ContractSpec | None = pdt.Field(default=None, description=CONTRACT_DESCRIPTION)
    poll_interval: float = pdt.Field(
        default=30.0,
        ge=0,
        description="Seconds between checks that model_uri still points to the version served "
        "(a moved alias is swapped in without a restart); 0 never checks.",
    )
    capture: bool = pdt.Field(
        default=True, description="Record predictions, labels and rejected rows in the store."
    )
    store_uri: StoreUri = DEFAULT_STORE_URI
    store_schema: StoreSchema = None
    spool_path: str = pdt.Field(
        default="predictions.spool.jsonl",
        description="Where rows wait while the store is unreachable (fsync'd JSON lines), "
        "replayed when it is back; unreadable lines go to <spool stem>.quarantine.jsonl.",
    )
    acknowledge: Acknowledge = pdt.Field(
        default="durable",
        description="When a prediction is answered. durable: once its rows are kept, in a "
        "committed store transaction or an fsync'd spool line (group commit); nothing "
        "acknowledged is lost on kill -9 (SQLite, WAL with synchronous=NORMAL: a commit "
        "survives the process being killed, not a power loss). queued: once its rows are "
        "queued, the old behaviour, faster under load; kill -9 loses the rows still in memory: "
        "at most max_pending rows, in practice those of the last flush_interval plus one "
        "store write.",
    )
    acknowledge_timeout: float = pdt.Field(
        default=10.0,
        gt=0,
        description="durable: seconds a request waits for its rows to be kept before a 503 "
        "(nothing acknowledged); a write already under way gets as long again.",
    )
    batch_size: int = pdt.Field(default=500, gt=0, description="Rows per store write.")
    flush_interval: float = pdt.Field(
        default=0.2,
        gt=0,
        description="queued: seconds the writer waits to fill a batch (durable writes what is "
        "queued at once).",
    )
    retry_interval: float = pdt.Field(
        default=2.0,
        gt=0,
        description="Seconds between replays of the spool, and between retries when neither "
        "the store nor the spool could keep rows (new requests get 503 meanwhile).",
    )
    max_pending: int = pdt.Field(
        default=100_000,
        gt=0,
        description="Rows taken in but not yet stored before requests get 503.",
    )
    max_batch_rows: int = pdt.Field(
        default=10_000, gt=0, description="Rows per request before it gets 413."
    )
    max_label_rows: int = pdt.Field(
        default=100_000, gt=0, description="Labels per /labels request before it gets 413."
    )
    model_threads: int | None = pdt.Field(
        default=1,
        gt=0,
        description="OpenMP and BLAS threads one prediction may use; null: the libraries' "
        "default (one per core). One suits request-sized batches: requests already run in "
        "parallel, and idle OpenMP threads spin between predictions (a 32-row prediction took "
        "0.65 ms on one thread against 1.5 ms on two, at half the CPU). The same with capture "
        "on or off.",
    )

    @property
    def served_uri(self) -> str:
        """``model_uri``, or the registered model's champion."""
        return self.model_uri or f"models:/{self.registered_model}@champion"

    def run(self) -> Locals:
        configured: Contract | None = self.contract
        slot = ModelSlot(
            self.mlflow_service.client(), self.served_uri, self.poll_interval, configured
        )
        store, writer = None, None
        if self.capture:
            store = open_store(self.store_uri, self.store_schema)
            store.create()
            writer = CaptureWriter(
                store,
                spool_path=self.spool_path,
                batch_size=self.batch_size,
                flush_interval=self.flush_interval,
                max_pending=self.max_pending,
                retry_interval=self.retry_interval,
                acknowledge=self.acknowledge,
                acknowledge_timeout=self.acknowledge_timeout,
            )
        app = create_app(
            slot,
            store,
            writer,
            max_batch_rows=self.max_batch_rows,
            max_label_rows=self.max_label_rows,
            model_threads=self.model_threads,
        )
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
        rejected = writer.written_rejected if writer else 0
        logger.info(
            "Stopped; {} rows written to the store ({} rejected rows recorded)", written, rejected
        )
        if writer is not None and store is not None and writer.lost:
            raise CaptureLossError(
                f"{writer.lost} acknowledged rows were kept neither in the store "
                f"{store.safe_uri} nor in the spool {writer.spool_path} ({writer.last_error})"
            )
        return {"rows_written": written, "rejected_rows_written": rejected}
