"""Capture every prediction (and every rejected row) without ever losing an acknowledged row.

A request's rows go on a bounded queue; one background thread writes them. Two ways to
acknowledge (``acknowledge``):

- ``durable`` (the default): the request waits until its rows are kept, in the store (a
  committed transaction) or in the spool (appended and fsync'd), and only then is answered.
  Group commit, leader and followers: a request thread that finds no write under way writes
  everything queued at that moment itself, in one go, and wakes every request of the group;
  those that find a write under way wait for it, and the first of them left over leads the
  next. No hand-off to another thread and back on the way (two thread wake-ups, a tenth of a
  millisecond or more each). The writer thread replays the spool and retries. A request whose
  rows could not be kept is refused (``CaptureRefusedError``, HTTP 503): nothing was
  acknowledged, so nothing is lost.
- ``queued``: a request is answered once its rows are queued; the writer batches them every
  ``flush_interval``. Faster under load, but rows still in memory (at most ``max_pending``)
  are lost if the process is killed (``kill -9``, OOM) before they are written.

What "kept" survives: a committed SQLite transaction (WAL, ``synchronous=NORMAL``; the log
is checkpointed by the writer thread, never by a request's commit) survives the process being
killed, not a power loss or an OS crash; a committed PostgreSQL transaction
survives what the server's own settings promise; a spooled line is fsync'd, so it survives
both.

When the database fails, rows go to an append-only spool file (JSON lines) and are replayed,
in order, once it answers again; writes are idempotent on ``prediction_id`` (and
``rejection_id``), so a replay after a partial failure never duplicates. A spool line that
cannot be read back (truncated, not JSON, not a row) is moved to a quarantine file next to the
spool and named in the log; the rest is replayed.

The writer thread never dies of an error: whatever fails is logged with its class and counted
(``failures``). When neither the store nor the spool can take rows (a full disk, an unwritable
spool directory), new rows are refused until a retry succeeds; in ``queued`` mode the rows
already acknowledged are held in memory and retried, and ``stop()`` reports how many it could
keep nowhere.
"""

from __future__ import annotations

import contextlib
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

from bikes.core.errors import first_line
from bikes.core.redaction import redact
from bikes.io.store import PREDICTION_COLUMNS, PREDICTIONS, REJECTED, Store, json_default

Row = dict[str, T.Any]
Acknowledge = T.Literal["durable", "queued"]
STAGES = ("store", "spool", "replay", "writer")  # where a failure happened, for /metrics
_DATETIME_FIELDS = ("event_time", "received_time")
_TABLE_KEY = "_table"  # in the spool: which table a line belongs to (predictions if absent)
# The columns of a prediction row other than its features, as the spool of an older bikes
# (one key per feature, no ``inputs``) holds them.
_PREDICTION_KEYS = frozenset({*PREDICTION_COLUMNS, "prediction", "scores"})
_REQUIRED = {
    PREDICTIONS: ("prediction_id", "received_time", "model_name", "model_version", "latency_ms"),
    REJECTED: ("rejection_id", "received_time", "model_name", "model_version", "row", "field"),
}
_ENCODER = json.JSONEncoder(default=json_default, separators=(",", ":"))
_LOGGED_LINES = 20  # quarantined lines named one by one in the log, then a summary
_IDLE_WAIT = 0.1  # seconds the durable writer sleeps between looks at its retries
_CHECKPOINT_INTERVAL = 1.0  # seconds between the writer thread's SQLite checkpoints
_RESET_FRAMES = 16_384  # a SQLite log this long (64 MB) is finished inside the turn: see below


class CaptureRefusedError(RuntimeError):
    """Rows were not acknowledged: the caller answers 503; none of them is kept, none lost."""


class CaptureFullError(CaptureRefusedError):
    """The queue is full: the caller should shed load (HTTP 503) rather than lose rows."""


class CaptureUnavailableError(CaptureRefusedError):
    """Neither the store nor the spool could keep rows (or not in time): retry later."""


class _Request:
    """One request's rows on the queue, and how the writer answers it (durable mode)."""

    __slots__ = ("cancelled", "done", "kept", "poisoned", "rows", "table", "taken")

    def __init__(self, table: str, rows: list[Row]) -> None:
        self.table = table
        self.rows = rows
        self.done = threading.Event()
        self.kept = False
        self.taken = False  # the writer has it: too late to cancel
        self.cancelled = False  # its request gave up waiting: the writer skips it
        self.poisoned = False  # no spool line can carry its rows


class CaptureWriter:
    """A bounded queue, a writer thread that never dies, a spool and its quarantine."""

    def __init__(
        self,
        store: Store,
        spool_path: str | Path,
        batch_size: int = 500,
        flush_interval: float = 0.2,
        max_pending: int = 100_000,
        retry_interval: float = 2.0,
        on_written: T.Callable[[int], None] | None = None,
        acknowledge: Acknowledge = "durable",
        acknowledge_timeout: float = 10.0,
    ) -> None:
        self.store = store
        self.spool_path = Path(spool_path)
        self.quarantine_path = self.spool_path.with_suffix(".quarantine.jsonl")
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.retry_interval = retry_interval
        self.on_written = on_written
        self.acknowledge = acknowledge
        self.acknowledge_timeout = acknowledge_timeout
        self.max_pending = max_pending
        self._queue: queue.Queue[_Request] = queue.Queue()
        self._queued_rows = 0
        self._count_lock = threading.Lock()  # guards the counts and the requests' states
        self._stopping = threading.Event()
        self._stopped = False
        self._lock = threading.Lock()  # guards the spool file
        # The turn to write: one thread at a time keeps rows, replays or retries (the leader of
        # a durable group or the writer thread); waiting followers are woken when it ends.
        self._turn = threading.Condition(threading.Lock())
        self._writing = False
        self._thread = threading.Thread(target=self._loop, name="capture-writer", daemon=True)
        self._started = False
        # Rows acknowledged (queued mode) that neither the store nor the spool took: retried.
        self._held: list[_Request] = []
        self._held_rows = 0
        self._failing = False  # the last attempt to keep rows failed everywhere
        self._store_down = False
        self._last_retry = 0.0
        self.last_error: str | None = None
        self.failures = dict.fromkeys(STAGES, 0)
        self.quarantined = 0  # spool lines moved to the quarantine file
        self.written = 0  # predictions
        self.written_rejected = 0
        self.unkeepable = 0  # queued: acknowledged rows no spool line could carry
        self.lost = 0  # acknowledged rows kept nowhere at stop()
        self._connection: sa.Connection | None = None  # the writer's own, held between writes
        self._last_checkpoint = 0.0
        self.reset_frames = _RESET_FRAMES
        self._spooled = self._count_spooled()

    # -- the request side ---------------------------------------------------------------------
    def submit(self, rows: T.Sequence[Row]) -> None:
        """Keep prediction rows, all or none; returns once they count as acknowledged (durable:
        kept; queued: queued), else raises CaptureRefusedError and none of them is kept."""
        self._submit(PREDICTIONS, rows)

    def submit_rejected(self, rows: T.Sequence[Row]) -> None:
        """Keep rejected rows (``Store.write_rejected``'s) as ``submit`` keeps predictions."""
        self._submit(REJECTED, rows)

    def check(self) -> None:
        """Raise CaptureUnavailableError while new rows are refused: callers skip the work."""
        reason = self._refusal()
        if reason is not None:
            raise CaptureUnavailableError(reason)

    def _submit(self, table: str, rows: T.Sequence[Row]) -> None:
        request = _Request(table, list(rows))
        with self._count_lock:
            reason = self._refusal()
            if reason is not None:
                raise CaptureUnavailableError(reason)
            if self._queued_rows + len(rows) > self.max_pending:
                raise CaptureFullError(f"capture queue full ({self._queued_rows} rows pending)")
            self._queued_rows += len(rows)
        self._queue.put_nowait(request)
        if self.acknowledge == "durable":
            self._await(request)

    def _await(self, request: _Request) -> None:
        """Wait, bounded, for the word on a request's rows, writing them when it is our turn."""
        if not self._lead_until_done(request, time.monotonic() + self.acknowledge_timeout):
            with self._count_lock:
                if not request.taken:
                    request.cancelled = True  # the writer drops it: nothing kept
                    raise CaptureUnavailableError(
                        f"capture did not keep the rows within {self.acknowledge_timeout} s; "
                        "none was kept"
                    )
            # Being written right now: one more wait for the outcome.
            if not request.done.wait(self.acknowledge_timeout):
                raise CaptureUnavailableError(
                    f"capture did not confirm the rows within {2 * self.acknowledge_timeout} s "
                    "(they may still be stored)"
                )
        if not request.kept:
            raise CaptureUnavailableError(
                f"capture could keep the rows neither in the store nor in the spool "
                f"({self.last_error}); retry later"
            )

    def _lead_until_done(self, request: _Request, deadline: float) -> bool:
        """Durable group commit: while the request is not done, write everything queued
        whenever no one else is writing, else wait for the write under way. False: the
        deadline passed before the request was done."""
        while not request.done.is_set():
            with self._turn:
                while self._writing and not request.done.is_set():
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or not self._turn.wait(remaining):
                        return request.done.is_set()
                if request.done.is_set():
                    return True
                self._writing = True
            try:
                requests = self._take(wait=False)
                if requests:
                    self._handle(requests)
            except Exception as error:  # the requests of the group are answered 503
                self._failed("writer", error)
            finally:
                self._end_turn()
        return True

    def _begin_turn(self, timeout: float | None = None) -> bool:
        """Wait for the turn to write (bounded by ``timeout``), and take it."""
        with self._turn:
            if not self._turn.wait_for(lambda: not self._writing, timeout):
                return False
            self._writing = True
            return True

    def _end_turn(self) -> None:
        with self._turn:
            self._writing = False
            self._turn.notify_all()

    def _refusal(self) -> str | None:
        """Why new rows are refused right now, or None."""
        if self._stopped:
            return "the service is stopping"
        if self._started and not self._thread.is_alive():
            return "the capture writer has stopped"
        if self._failing or self._held:
            return f"capture cannot keep rows ({self.last_error}); retry later"
        return None

    # -- state ----------------------------------------------------------------------------------
    @property
    def pending(self) -> int:
        """Rows taken in but not yet in the database (queued, held in memory or spooled)."""
        return self._queued_rows + self._held_rows + self._spooled

    @property
    def spooled(self) -> int:
        """Rows waiting in the spool file for the database."""
        return self._spooled

    @property
    def degraded(self) -> bool:
        """True while rows wait in the spool for the database to come back."""
        return self._spooled > 0

    @property
    def alive(self) -> bool:
        """The writer thread runs."""
        return self._thread.is_alive()

    @property
    def status(self) -> str:
        """``failing`` (rows cannot be kept: new ones are refused), ``degraded`` (rows go to the
        spool while the store is down) or ``ok``."""
        if self._refusal() is not None and not self._stopped:
            return "failing"
        if self._spooled or self._store_down:
            return "degraded"
        return "ok"

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every queued row has been written, spooled or held."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)
        return self._queue.unfinished_tasks == 0

    # -- life cycle -----------------------------------------------------------------------------
    def start(self) -> None:
        if self._spooled:
            logger.warning("{} spooled rows from an earlier run will be replayed", self._spooled)
        self._started = True
        self._thread.start()

    def stop(self, timeout: float = 60.0) -> int:
        """Drain the queue, retry what is held, try one last replay; never raises.

        Returns (and keeps in ``lost``) how many acknowledged rows could be kept nowhere:
        rows left in the spool are kept (replayed at the next start), rows of an unanswered
        durable request were never acknowledged.
        """
        self._stopped = True
        self._stopping.set()
        deadline = time.monotonic() + timeout
        try:
            if self._started:
                self._thread.join(timeout)
            # What a dead writer left, in this thread, once a leader's write is over.
            if not self._thread.is_alive() and self._begin_turn(
                max(deadline - time.monotonic(), 0.0)
            ):
                try:
                    self._drain()
                    self._retry_held()
                    if self._spooled:
                        self._try_replay()
                finally:
                    self._disconnect()
                    self._end_turn()
        except Exception as error:  # shutdown must not fail: what is left is counted below
            self._failed("writer", error)
        unanswered = self._queued_rows if self.acknowledge == "queued" else 0
        self.lost = self._held_rows + unanswered + self.unkeepable
        if self._spooled:
            logger.warning(
                "{} rows stay in {} until the next start", self._spooled, self.spool_path
            )
        if self.lost:
            logger.error(
                "{} acknowledged rows could be kept neither in the store {} nor in the spool {}",
                self.lost,
                self.store.safe_uri,
                self.spool_path,
            )
        return self.lost

    # -- the writer thread ----------------------------------------------------------------------
    def _loop(self) -> None:
        """Queued: take batches and write them. Durable: the request threads write their own
        groups; every ``_IDLE_WAIT`` this thread writes what none took (a leader's own rows are
        always taken, so this is a safety net) and replays or retries when due."""
        durable = self.acknowledge == "durable"
        while True:
            try:
                if durable:
                    self._stopping.wait(_IDLE_WAIT)
                    requests: list[_Request] = []
                else:
                    requests = self._take(wait=True)  # waits outside the turn
                self._begin_turn()
                try:
                    if durable:
                        requests = self._take(wait=False)
                    if requests:
                        self._handle(requests)
                    elif self._stopping.is_set() and self._queue.empty():
                        return
                    self._retry_if_due()
                finally:
                    self._end_turn()
                self._checkpoint_if_due()
            except Exception as error:  # never die: log, count, go on
                self._failed("writer", error)
                time.sleep(min(self.retry_interval, 1.0))

    def _take(self, wait: bool) -> list[_Request]:
        """``wait`` (the queued writer): requests until a batch is full or the flush interval
        has passed. Else (a durable leader): the requests queued right now, up to a batch."""
        deadline = time.monotonic() + self.flush_interval
        requests: list[_Request] = []
        rows = 0
        while rows < self.batch_size:
            try:
                if self._stopping.is_set() or not wait:
                    request = self._queue.get_nowait()
                else:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    request = self._queue.get(timeout=remaining)
            except queue.Empty:
                break
            requests.append(request)
            rows += len(request.rows)
        with self._count_lock:
            live = []
            for request in requests:
                if request.cancelled:  # its request was answered 503: not ours to keep
                    self._queued_rows -= len(request.rows)
                    self._queue.task_done()
                else:
                    request.taken = True
                    live.append(request)
        return live

    def _handle(self, requests: list[_Request]) -> None:
        unkept: list[_Request] = list(requests)
        try:
            unkept = self._keep(requests)
        finally:
            failed = {id(request) for request in unkept}
            with self._count_lock:
                for request in requests:
                    request.kept = id(request) not in failed
                    if not request.kept and self.acknowledge == "queued":
                        self._hold(request)
                    self._queued_rows -= len(request.rows)
                    request.done.set()
                    self._queue.task_done()

    def _hold(self, request: _Request) -> None:
        """Queued mode: rows acknowledged already, kept nowhere: retried, never dropped (but
        rows no spool line can carry are counted lost at once)."""
        if request.poisoned:
            self.unkeepable += len(request.rows)
            logger.error("{} acknowledged rows cannot be kept: lost", len(request.rows))
        else:
            self._held.append(request)
            self._held_rows += len(request.rows)

    def _keep(self, requests: list[_Request]) -> list[_Request]:
        """Into the store, else the spool; returns the requests neither took."""
        if not self._spooled:  # keep order: behind rows already waiting in the spool
            batch: dict[str, list[Row]] = {PREDICTIONS: [], REJECTED: []}
            for request in requests:
                batch[request.table].extend(request.rows)
            try:
                self._write(batch)
            except Exception as error:
                self._failed("store", error)
                self._store_down = True
            else:
                self._store_down = False
                self._failing = False
                self._count_written(batch)
                return []
        try:
            unkept = self._spool(requests)
        except Exception as error:
            self._failed("spool", error)
            if not self._failing:
                logger.error(
                    "Capture cannot keep rows (store {}, spool {}): new requests get 503 "
                    "until a retry succeeds",
                    self.store.safe_uri,
                    self.spool_path,
                )
            self._failing = True
            self._last_retry = time.monotonic()
            return requests
        self._failing = False
        return unkept

    def _checkpoint_if_due(self) -> None:
        """SQLite: requests never checkpoint the write-ahead log (the writer's connection has
        automatic checkpoints off: the request that crossed 1,000 pages used to pay 15-30 ms
        for it), this thread does, every ``_CHECKPOINT_INTERVAL``, outside the turn, while
        requests go on writing. Frames written meanwhile stay in the log, so under steady load
        it would never start afresh: past ``reset_frames`` the few left are copied inside the
        turn (no write under way), and the next write starts the log from its beginning."""
        if self._store_down or time.monotonic() - self._last_checkpoint < _CHECKPOINT_INTERVAL:
            return
        self._last_checkpoint = time.monotonic()
        try:
            done = self.store.checkpoint()
            if done is None or done.frames < self.reset_frames:
                return
            self._begin_turn()
            try:
                self.store.checkpoint()
            finally:
                self._end_turn()
        except sa.exc.SQLAlchemyError as error:  # the next write will tell if the store is down
            logger.warning("SQLite checkpoint failed: {}", first_line(error))

    def _retry_if_due(self) -> None:
        if time.monotonic() - self._last_retry < self.retry_interval:
            return
        if not (self._held or self._failing or self._spooled):
            return
        self._last_retry = time.monotonic()
        self._retry_held()
        if self._failing and not self._held:
            self._probe()
        if self._spooled and not self._held:
            self._try_replay()

    def _retry_held(self) -> None:
        """Queued mode: rows acknowledged but kept nowhere, tried again in order."""
        while self._held:
            request = self._held[0]
            if self._keep([request]):
                return
            with self._count_lock:
                self._held.pop(0)
                self._held_rows -= len(request.rows)
            if not self._held:
                logger.success("Rows held in memory are kept again")

    def _probe(self) -> None:
        """Durable mode after a failure: admit requests again once the store answers or the
        spool can be opened; if they fail again, they are refused for another interval."""
        if self.store.reachable():
            self._failing = False
        else:
            try:
                with self._lock:
                    self.spool_path.parent.mkdir(parents=True, exist_ok=True)
                    with self.spool_path.open("ab") as spool:
                        os.fsync(spool.fileno())
            except Exception as error:
                self._failed("spool", error)
                self._last_retry = time.monotonic()
                return
            self._failing = False
        logger.info("Capture can keep rows again: requests are admitted")

    def _drain(self) -> None:
        """After the writer thread has stopped: handle what it left in the queue."""
        while not self._queue.empty():
            requests = self._take(wait=False)
            if requests:
                self._handle(requests)

    def _write(self, batch: dict[str, list[Row]]) -> None:
        """Both tables in one transaction, on the connection the writer holds (a pool checkout
        and its ping cost as much as a small insert). A held connection the database has
        dropped (a restart, an idle timeout) gets one retry on a new one before the store
        counts as down; a failure leaves nothing half-written."""
        fresh = self._connection is None
        try:
            self._write_on(self._connected(), batch)
        except Exception:
            self._disconnect()
            if fresh:
                raise
            self._write_on(self._connected(), batch)

    def _write_on(self, connection: sa.Connection, batch: dict[str, list[Row]]) -> None:
        try:
            with connection.begin():
                for start in range(0, len(batch[PREDICTIONS]), self.batch_size):
                    chunk = batch[PREDICTIONS][start : start + self.batch_size]
                    self.store.write_predictions(chunk, connection)
                for start in range(0, len(batch[REJECTED]), self.batch_size):
                    chunk = batch[REJECTED][start : start + self.batch_size]
                    self.store.write_rejected(chunk, connection)
        except Exception:
            self._disconnect()
            raise

    def _connected(self) -> sa.Connection:
        if self._connection is None:
            connection = self.store.engine.connect()
            try:
                self.store.defer_checkpoints(connection)  # this thread's loop checkpoints
            except Exception:
                connection.invalidate()
                connection.close()
                raise
            self._connection = connection
        return self._connection

    def _disconnect(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(Exception):
                connection.invalidate()  # not back to the pool: it may be broken
            with contextlib.suppress(Exception):
                connection.close()

    def _write_sifting(self, table: str, rows: list[Row], refused: list[tuple[Row, str]]) -> None:
        """Write rows; when the store refuses them for their content (a value it cannot take, a
        missing column: not an outage), halve until the rows at fault are found and left out
        (added to ``refused``), so one bad row cannot hold a whole spool back forever."""
        write = self.store.write_predictions if table == PREDICTIONS else self.store.write_rejected
        try:
            write(rows)
            return
        except (sa.exc.DataError, sa.exc.IntegrityError) as error:
            reason = describe(error)
        except sa.exc.StatementError as error:
            if isinstance(error, sa.exc.DBAPIError):
                raise  # the database's own error, an outage most likely: keep the spool
            reason = describe(error.orig if error.orig is not None else error)
        if len(rows) == 1:
            refused.append((rows[0], reason))
            return
        middle = len(rows) // 2
        self._write_sifting(table, rows[:middle], refused)
        self._write_sifting(table, rows[middle:], refused)

    def _spool(self, requests: list[_Request]) -> list[_Request]:
        """Append the rows as JSON lines and fsync; on failure, no partial line is left.

        Returns the requests whose rows no JSON line can carry (marked ``poisoned``): one
        such request must not keep the others of its group out."""
        lines: list[str] = []
        unkept: list[_Request] = []
        for request in requests:
            try:
                if request.table == REJECTED:
                    encoded = [
                        _ENCODER.encode({**row, _TABLE_KEY: REJECTED}) for row in request.rows
                    ]
                else:
                    encoded = [_ENCODER.encode(row) for row in request.rows]
            except Exception as error:
                self._failed("spool", error)
                request.poisoned = True
                unkept.append(request)
            else:
                lines.extend(encoded)
        if lines:
            with self._lock:
                _append(self.spool_path, ("\n".join(lines) + "\n").encode())
                self._spooled += len(lines)
        return unkept

    def _try_replay(self) -> None:
        try:
            self._replay()
        except Exception as error:  # still down, or the spool unreadable: it stays as it is
            self._failed("replay", error)

    def _replay(self) -> None:
        """Write the spool in order, in chunks; move unreadable lines to the quarantine file;
        remove the spool once all of it is in the store. Any failure keeps the whole spool
        (writes are idempotent: the next replay writes the same rows again, never twice)."""
        self._last_retry = time.monotonic()
        with self._lock:
            try:
                data = self.spool_path.read_bytes()
            except FileNotFoundError:
                self._spooled = 0
                return
            batch, bad, origin = _parsed_spool(data)
            refused: list[tuple[Row, str]] = []
            for table, rows in batch.items():
                for start in range(0, len(rows), self.batch_size):
                    self._write_sifting(table, rows[start : start + self.batch_size], refused)
            if refused:  # rows the store itself refuses, whatever the retry: quarantined too
                bad = sorted(bad + [(*origin[id(row)], reason) for row, reason in refused])
                gone = {id(row) for row, _ in refused}
                batch = {t: [r for r in rows if id(r) not in gone] for t, rows in batch.items()}
            if bad:
                self._quarantine(bad)
            self.spool_path.unlink()
            self._spooled = 0
        self._store_down = False
        logger.success(
            "Store is back: replayed {} spooled rows", sum(len(rows) for rows in batch.values())
        )
        self._count_written(batch)

    def _quarantine(self, bad: list[tuple[int, bytes, str]]) -> None:
        entries = [
            _ENCODER.encode(
                {
                    "spool": str(self.spool_path),
                    "line": number,
                    "error": reason,
                    "text": text.decode("utf-8", errors="backslashreplace"),
                }
            )
            + "\n"
            for number, text, reason in bad
        ]
        _append(self.quarantine_path, "".join(entries).encode())
        self.quarantined += len(bad)
        for number, _, reason in bad[:_LOGGED_LINES]:
            logger.error(
                "Spool {} line {} unreadable ({}): moved to {}",
                self.spool_path,
                number,
                reason,
                self.quarantine_path,
            )
        if len(bad) > _LOGGED_LINES:
            logger.error(
                "{} more unreadable spool lines moved to {}",
                len(bad) - _LOGGED_LINES,
                self.quarantine_path,
            )

    def _failed(self, stage: str, error: BaseException) -> None:
        self.failures[stage] += 1
        self.last_error = describe(error)
        logger.error("Capture {} failed: {}", stage, self.last_error)

    def _count_written(self, batch: dict[str, list[Row]]) -> None:
        self.written += len(batch[PREDICTIONS])
        self.written_rejected += len(batch[REJECTED])
        if self.on_written is not None and batch[PREDICTIONS]:
            self.on_written(len(batch[PREDICTIONS]))

    def _count_spooled(self) -> int:
        try:
            with self.spool_path.open("rb") as spool:
                return sum(1 for line in spool if line.strip())
        except (FileNotFoundError, NotADirectoryError):  # no spool can be there yet
            return 0
        except OSError as error:  # unreadable: replays will say so, and keep trying
            self._failed("replay", error)
            return 1


def new_ids(count: int) -> list[str]:
    """Prediction ids as 32 hex digits laid out as UUIDv7: the time in milliseconds first,
    then 74 random bits. Unique as uuid4's, and time-ordered, so the store's primary-key index
    grows at its end rather than at random pages: a third less work per insert on SQLite."""
    prefix = (time.time_ns() // 1_000_000) << 80 | 0x7 << 76
    random = os.urandom(10 * count)
    ids = []
    for start in range(0, 10 * count, 10):
        bits = int.from_bytes(random[start : start + 10], "big")
        # 12 random bits, the variant (binary 10), 62 random bits
        value = prefix | (bits >> 68) << 64 | 0x2 << 62 | bits & (1 << 62) - 1
        ids.append(f"{value:032x}")
    return ids


def describe(error: BaseException) -> str:
    """An error's class and first line, short and without credentials, for logs and /health."""
    return redact(f"{type(error).__name__}: {first_line(error)}")[:300]


def _append(path: Path, data: bytes) -> None:
    """Append whole lines and fsync them (and the directory, for a new file); a failed write
    is cut back so the file never keeps half a line of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        end = os.lseek(descriptor, 0, os.SEEK_END)
        if end and os.pread(descriptor, 1, end - 1) != b"\n":
            data = b"\n" + data  # a line cut short earlier: never glue a new one to it
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(descriptor, view) :]
            os.fsync(descriptor)
        except BaseException:
            with contextlib.suppress(OSError):
                os.ftruncate(descriptor, end)
            raise
    finally:
        os.close(descriptor)
    if not end:
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


def _parsed_spool(
    data: bytes,
) -> tuple[dict[str, list[Row]], list[tuple[int, bytes, str]], dict[int, tuple[int, bytes]]]:
    """The spool's rows by table, its unreadable lines (number, text, reason), and where each
    row came from (by ``id()`` of the row: its line number and text)."""
    batch: dict[str, list[Row]] = {PREDICTIONS: [], REJECTED: []}
    bad: list[tuple[int, bytes, str]] = []
    origin: dict[int, tuple[int, bytes]] = {}
    for number, line in enumerate(data.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            table, row = _row(line)
        except Exception as error:  # whatever is wrong with a line is the line's fault
            bad.append((number, line, f"{type(error).__name__}: {first_line(error)}"[:300]))
        else:
            batch[table].append(row)
            origin[id(row)] = (number, line)
    return batch, bad, origin


def _row(line: bytes) -> tuple[str, Row]:
    row = json.loads(line.decode("utf-8"))  # bytes alone could pass for UTF-16
    if not isinstance(row, dict):
        raise ValueError(f"a JSON {type(row).__name__}, not an object")
    table = row.pop(_TABLE_KEY, PREDICTIONS)
    if table not in _REQUIRED:
        raise ValueError(f"unknown table {table!r}")
    missing = [key for key in _REQUIRED[table] if row.get(key) is None]
    if missing:
        raise ValueError(f"no {', '.join(missing)}")
    decoded = _decode(row)
    for key in _DATETIME_FIELDS:
        value = decoded.get(key)
        if not isinstance(value, dt.datetime) and (value is not None or key == "received_time"):
            raise ValueError(f"{key} is not a date and time")
    if table == PREDICTIONS:
        if not isinstance(decoded.get("event_time"), dt.datetime):
            raise ValueError("event_time is not a date and time")
        if "prediction" not in decoded:
            raise ValueError("no prediction")
    return table, decoded


def _decode(row: Row) -> Row:
    decoded = dict(row)
    for key in _DATETIME_FIELDS:
        if isinstance(decoded.get(key), str):
            try:
                decoded[key] = dt.datetime.fromisoformat(decoded[key])
            except ValueError as error:
                raise ValueError(f"{key}: {error}") from None
    if "prediction_id" in decoded and "inputs" not in decoded:
        # Spooled by an older bikes: its features were keys of their own.
        inputs = {k: v for k, v in decoded.items() if k not in _PREDICTION_KEYS}
        decoded = {k: v for k, v in decoded.items() if k in _PREDICTION_KEYS}
        decoded["inputs"] = inputs
    return decoded
