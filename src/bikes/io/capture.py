"""Take capture writes off the request path without ever losing an acknowledged row.

Requests put rows on a bounded queue and return; one background thread drains it in batches.
When the database fails, batches go to an append-only spool file (fsync'd JSON lines) and
are replayed, in order, once it answers again; writes are idempotent on ``prediction_id``
(and ``rejection_id``), so a replay after a partial failure never duplicates. ``stop()``
drains the queue before exit. The rows a service rejected travel the same way
(``submit_rejected``), to the ``rejected_rows`` table.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import queue
import threading
import time
import typing as T
from pathlib import Path

import sqlalchemy as sa
from loguru import logger

from bikes.io.store import PREDICTION_COLUMNS, PREDICTIONS, REJECTED, Store, json_default

Row = dict[str, T.Any]
_DATETIME_FIELDS = ("event_time", "received_time")
_TABLE_KEY = "_table"  # in the spool: which table a line belongs to (predictions if absent)
# The columns of a prediction row other than its features, as the spool of an older bikes
# (one key per feature, no ``inputs``) holds them.
_PREDICTION_KEYS = frozenset({*PREDICTION_COLUMNS, "prediction", "scores"})


class CaptureFullError(RuntimeError):
    """The queue is full: the caller should shed load (HTTP 503) rather than lose rows."""


class CaptureWriter:
    """A bounded queue, a batching writer thread and a spool for database outages."""

    def __init__(
        self,
        store: Store,
        spool_path: str | Path,
        batch_size: int = 500,
        flush_interval: float = 0.2,
        max_pending: int = 100_000,
        retry_interval: float = 2.0,
        on_written: T.Callable[[int], None] | None = None,
    ) -> None:
        self.store = store
        self.spool_path = Path(spool_path)
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.retry_interval = retry_interval
        self.on_written = on_written
        # One queue item per request (its table and rows, in order): one lock round trip, not
        # one per row.
        self._queue: queue.Queue[tuple[str, list[Row]]] = queue.Queue()
        self.max_pending = max_pending
        self._queued_rows = 0
        self._count_lock = threading.Lock()
        self._stopping = threading.Event()
        self._lock = threading.Lock()  # guards the spool file
        self._thread = threading.Thread(target=self._loop, name="capture-writer", daemon=True)
        self._spooled = self._count_spooled()
        self._last_retry = 0.0
        self.written = 0  # predictions
        self.written_rejected = 0

    # -- the request side ---------------------------------------------------------------------
    def submit(self, rows: T.Sequence[Row]) -> None:
        """Enqueue prediction rows, all or none; raises CaptureFullError when they do not fit."""
        self._submit(PREDICTIONS, rows)

    def submit_rejected(self, rows: T.Sequence[Row]) -> None:
        """Enqueue rejected rows (``Store.write_rejected``'s), all or none; CaptureFullError
        when they do not fit."""
        self._submit(REJECTED, rows)

    def _submit(self, table: str, rows: T.Sequence[Row]) -> None:
        with self._count_lock:
            if self._queued_rows + len(rows) > self.max_pending:
                raise CaptureFullError(f"capture queue full ({self._queued_rows} rows pending)")
            self._queued_rows += len(rows)
        self._queue.put_nowait((table, list(rows)))

    @property
    def pending(self) -> int:
        """Rows acknowledged but not yet in the database (queued or spooled)."""
        return self._queued_rows + self._spooled

    @property
    def degraded(self) -> bool:
        """True while rows wait in the spool for the database to come back."""
        return self._spooled > 0

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every queued row has been written or spooled."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)
        return self._queue.unfinished_tasks == 0

    # -- life cycle -----------------------------------------------------------------------------
    def start(self) -> None:
        if self._spooled:
            logger.warning("{} spooled rows from an earlier run will be replayed", self._spooled)
        self._thread.start()

    def stop(self, timeout: float = 60.0) -> None:
        """Drain the queue, try one last replay; what cannot be written stays in the spool."""
        self._stopping.set()
        self._thread.join(timeout)
        self._replay()
        if self._spooled:
            logger.warning(
                "{} rows stay in {} until the next start", self._spooled, self.spool_path
            )

    # -- the writer thread ----------------------------------------------------------------------
    def _loop(self) -> None:
        while not (self._stopping.is_set() and self._queue.empty()):
            items = self._next_items()
            if items:
                batch: dict[str, list[Row]] = {PREDICTIONS: [], REJECTED: []}
                for table, rows in items:
                    batch[table].extend(rows)
                self._persist(batch)
                with self._count_lock:
                    self._queued_rows -= sum(len(rows) for rows in batch.values())
                for _ in items:
                    self._queue.task_done()
            if self._spooled and time.monotonic() - self._last_retry >= self.retry_interval:
                self._replay()

    def _next_items(self) -> list[tuple[str, list[Row]]]:
        """Requests' rows until a batch is full or the flush interval has passed."""
        items: list[tuple[str, list[Row]]] = []
        rows = 0
        deadline = time.monotonic() + self.flush_interval
        while rows < self.batch_size:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                item = self._queue.get(timeout=remaining)
            except queue.Empty:
                break
            items.append(item)
            rows += len(item[1])
        return items

    def _write(self, batch: dict[str, list[Row]]) -> None:
        """Both tables; rows written before a failure are written again later (idempotent)."""
        for start in range(0, len(batch[PREDICTIONS]), self.batch_size):
            self.store.write_predictions(batch[PREDICTIONS][start : start + self.batch_size])
        for start in range(0, len(batch[REJECTED]), self.batch_size):
            self.store.write_rejected(batch[REJECTED][start : start + self.batch_size])

    def _persist(self, batch: dict[str, list[Row]]) -> None:
        if not self._spooled:  # keep order: while rows wait in the spool, new rows join them
            try:
                self._write(batch)
            except sa.exc.SQLAlchemyError as error:
                logger.error(
                    "Store unreachable, spooling to {}: {}",
                    self.spool_path,
                    error.__class__.__name__,
                )
            else:
                self._count_written(batch)
                return
        self._spool(batch)

    def _spool(self, batch: dict[str, list[Row]]) -> None:
        lines = [
            json.dumps(_encode(row), default=json_default) + "\n" for row in batch[PREDICTIONS]
        ]
        lines += [
            json.dumps({**_encode(row), _TABLE_KEY: REJECTED}, default=json_default) + "\n"
            for row in batch[REJECTED]
        ]
        with self._lock:
            self.spool_path.parent.mkdir(parents=True, exist_ok=True)
            with self.spool_path.open("a", encoding="utf-8") as spool:
                spool.writelines(lines)
                spool.flush()
                os.fsync(spool.fileno())
            self._spooled += len(lines)

    def _replay(self) -> None:
        """Write the spool in order, in chunks; on success remove it, on failure keep it all."""
        self._last_retry = time.monotonic()
        with self._lock:
            if not self.spool_path.exists():
                self._spooled = 0
                return
            batch: dict[str, list[Row]] = {PREDICTIONS: [], REJECTED: []}
            with self.spool_path.open(encoding="utf-8") as spool:
                for line in spool:
                    if line.strip():
                        row = json.loads(line)
                        batch[row.pop(_TABLE_KEY, PREDICTIONS)].append(_decode(row))
            try:
                self._write(batch)
            except sa.exc.SQLAlchemyError:
                return  # still down: everything stays spooled (writes are idempotent)
            self.spool_path.unlink()
            self._spooled = 0
        logger.success(
            "Store is back: replayed {} spooled rows", sum(len(rows) for rows in batch.values())
        )
        self._count_written(batch)

    def _count_written(self, batch: dict[str, list[Row]]) -> None:
        self.written += len(batch[PREDICTIONS])
        self.written_rejected += len(batch[REJECTED])
        if self.on_written is not None and batch[PREDICTIONS]:
            self.on_written(len(batch[PREDICTIONS]))

    def _count_spooled(self) -> int:
        if not self.spool_path.exists():
            return 0
        with self.spool_path.open(encoding="utf-8") as spool:
            return sum(1 for line in spool if line.strip())


def _encode(row: Row) -> Row:
    return {k: v.isoformat() if isinstance(v, dt.datetime) else v for k, v in row.items()}


def _decode(row: Row) -> Row:
    decoded = {
        k: dt.datetime.fromisoformat(v) if k in _DATETIME_FIELDS and isinstance(v, str) else v
        for k, v in row.items()
    }
    if "prediction_id" in decoded and "inputs" not in decoded:
        # Spooled by an older bikes: its features were keys of their own.
        inputs = {k: v for k, v in decoded.items() if k not in _PREDICTION_KEYS}
        decoded = {k: v for k, v in decoded.items() if k in _PREDICTION_KEYS}
        decoded["inputs"] = inputs
    return decoded
