"""The serving job as a real process under real load, and the count of what survived.

``Service`` starts ``bikes confs/serving.yaml`` (a fresh process each time, on the same port,
store and spool, so a restart after ``kill -9`` finds what the last run left). ``Load`` runs
client threads that post ``/invocations`` until told to stop and keep every prediction id a
``200`` answer acknowledged. ``count`` reads the store with SQLAlchemy and says how many
acknowledged rows are stored, lost or duplicated: the promise under test is 0 lost and 0
duplicated, whatever was done to the service meanwhile.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import signal
import subprocess
import threading
import time
import typing as T
from pathlib import Path

import httpx
import sqlalchemy as sa

from tests.conftest import clean_environment, serving_command, wait_until_up

HTTP_TIMEOUT = 60.0  # seconds, every call to our servers: a loaded 2-core machine is slow
START_TIMEOUT = 180.0  # a serving process loads MLflow and the model before it listens
STOP_TIMEOUT = 120.0


@dataclasses.dataclass(frozen=True)
class Counts:
    """What was promised against what is there.

    ``acknowledged``: distinct ids the clients were given (``200`` answers); ``stored``:
    distinct ids in the store; ``lost``: acknowledged, not stored; ``duplicated``: store rows
    beyond one per id; ``unacknowledged``: stored, never acknowledged (a request in flight when
    the process died: allowed, reported apart).
    """

    acknowledged: int
    stored: int
    lost: int
    duplicated: int
    unacknowledged: int = 0

    def __str__(self) -> str:
        return (
            f"acknowledged={self.acknowledged} stored={self.stored} lost={self.lost} "
            f"duplicated={self.duplicated} stored_unacknowledged={self.unacknowledged}"
        )


def report(name: str, counts: Counts, **extra: T.Any) -> str:
    """Print the counts (``pytest -s`` shows them) and return them for assertion messages."""
    details = "".join(f" {k}={v}" for k, v in extra.items())
    line = f"[faults] {name}: {counts}{details}"
    print(f"\n{line}", flush=True)  # its own line, after pytest's progress dots
    return line


def stored_ids(uri: str, schema: str | None = None) -> list[str]:
    """Every ``prediction_id`` in the store's predictions table, one per row (not distinct)."""
    engine = sa.create_engine(uri)
    table = sa.table("predictions", sa.column("prediction_id"), schema=schema)
    try:
        with engine.connect() as connection:
            return [row[0] for row in connection.execute(sa.select(table.c.prediction_id))]
    finally:
        engine.dispose()


def count(acknowledged: T.Iterable[str], uri: str, schema: str | None = None) -> Counts:
    promised = set(acknowledged)
    rows = stored_ids(uri, schema)
    present = set(rows)
    return Counts(
        acknowledged=len(promised),
        stored=len(present),
        lost=len(promised - present),
        duplicated=len(rows) - len(present),
        unacknowledged=len(present - promised),
    )


def wait_for(condition: T.Callable[[], bool], timeout: float, what: str, poll: float = 0.1) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {timeout:g} s"
        time.sleep(poll)


class Service:
    """``bikes confs/serving.yaml`` as a process of its own, its log in a file (a pipe nobody
    reads while it runs could fill and block the server)."""

    def __init__(
        self,
        directory: Path,
        tracking_uri: str,
        port: int,
        store_uri: str,
        spool_path: Path,
        extras: T.Sequence[str] = (),
        prefix: T.Sequence[str] = (),
    ) -> None:
        self.directory = directory
        self.port = port
        self.store_uri = store_uri
        self.spool_path = spool_path
        self.command = [
            *prefix,
            *serving_command(
                port, store_uri, spool_path, tracking_uri, "job.poll_interval=0", *extras
            ),
        ]
        self.process: subprocess.Popen[bytes] | None = None
        self.runs = 0
        self.log_path = directory / "service-0.log"

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.runs += 1
        self.log_path = self.directory / f"service-{self.runs}.log"
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                self.command,
                cwd=self.directory,
                env=clean_environment(),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_until_up(f"{self.base}/health", self.process, self.log, timeout=START_TIMEOUT)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def logs(self) -> str:
        """Every run's log, oldest first."""
        return "".join(
            (self.directory / f"service-{run}.log").read_text(errors="replace")
            for run in range(1, self.runs + 1)
            if (self.directory / f"service-{run}.log").exists()
        )

    def kill(self) -> None:
        """``kill -9``: no shutdown handler runs, whatever sits in memory is gone."""
        assert self.process is not None
        self.process.kill()
        code = self.process.wait(timeout=STOP_TIMEOUT)
        assert code == -signal.SIGKILL, f"exit {code}, not killed:\n{self.log()[-3000:]}"

    def terminate(self) -> int:
        """SIGTERM, as an orchestrator stops a container; the process's exit code."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=STOP_TIMEOUT)

    def health(self) -> tuple[int, dict[str, T.Any]]:
        """``/health``'s status code and body ({} when it did not answer)."""
        try:
            response = httpx.get(f"{self.base}/health", timeout=HTTP_TIMEOUT)
        except httpx.HTTPError:
            return 0, {}
        try:
            return response.status_code, response.json()
        except ValueError:
            return response.status_code, {}

    def close(self) -> None:
        """Teardown: a process still running is killed (it is ours, by its handle)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=STOP_TIMEOUT)


class Load:
    """``clients`` threads posting the same batch to ``/invocations`` until ``stop()``.

    Every id of a ``200`` answer is kept (acknowledged); any other answer is counted by status
    and a connection failure (the server down, killed, restarting) as ``0``. The threads keep
    going through restarts: a client retries, as a real one does.
    """

    def __init__(self, base: str, payload: dict[str, T.Any], clients: int = 4) -> None:
        self.base = base
        self.payload = payload
        self.clients = clients
        self.acknowledged: list[str] = []
        self.statuses: collections.Counter[int] = collections.Counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._failures: list[BaseException] = []

    def __enter__(self) -> Load:
        for number in range(self.clients):
            thread = threading.Thread(target=self._client, name=f"load-{number}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=HTTP_TIMEOUT + 30)
        assert not any(t.is_alive() for t in self._threads), "a load thread did not stop"
        assert not self._failures, f"a load thread failed: {self._failures[0]!r}"

    def _client(self) -> None:
        try:
            with httpx.Client(base_url=self.base, timeout=HTTP_TIMEOUT) as client:
                while not self._stop.is_set():
                    try:
                        response = client.post("/invocations", json=self.payload)
                    except httpx.HTTPError:
                        with self._lock:
                            self.statuses[0] += 1
                        self._stop.wait(0.05)  # the server is away: retry at a gentle pace
                        continue
                    with self._lock:
                        self.statuses[response.status_code] += 1
                        if response.status_code == 200:
                            self.acknowledged.extend(response.json()["prediction_ids"])
                    if response.status_code != 200:
                        self._stop.wait(0.02)
        except BaseException as error:  # reported by stop(), not lost in a thread
            self._failures.append(error)

    def snapshot(self) -> tuple[int, dict[int, int]]:
        with self._lock:
            return len(self.acknowledged), dict(self.statuses)

    def acknowledged_now(self) -> list[str]:
        with self._lock:
            return list(self.acknowledged)

    def wait_acknowledged(self, more: int, timeout: float = 90.0) -> None:
        """Until ``more`` ids beyond those acknowledged so far have been acknowledged."""
        target = len(self.acknowledged_now()) + more
        wait_for(
            lambda: len(self.acknowledged_now()) >= target,
            timeout,
            f"{more} more acknowledged rows (statuses so far {self.snapshot()[1]})",
        )

    def wait_status(self, status: int, more: int = 1, timeout: float = 90.0) -> None:
        """Until ``more`` answers with ``status`` beyond those seen so far."""
        target = self.snapshot()[1].get(status, 0) + more
        wait_for(
            lambda: self.snapshot()[1].get(status, 0) >= target,
            timeout,
            f"{more} more answers {status} (statuses so far {self.snapshot()[1]})",
        )
