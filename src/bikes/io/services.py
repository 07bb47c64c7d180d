"""Services a job starts on entry and stops on exit: the logger and the MLflow client."""

from __future__ import annotations

import concurrent.futures
import contextlib
import importlib
import logging
import math
import os
import sys
import threading
import time
import typing as T
from pathlib import Path

import pydantic as pdt
from loguru import logger

from bikes.core.errors import InputError, first_line
from bikes.core.redaction import redact, redact_url

if T.TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

    from bikes.io.mlflow_worker import LoggedMetric, MlflowWorker

# MLflow (about 3 s to import, 1 s to open a SQLite store) and httpx are imported where they
# are used, so a job that starts MLflow in the background (``start_in_background``) reads and
# scores while they load, and ``bikes --help`` never loads them.

LOG_FORMAT = (
    "<green>{time:YYYY-MM-DD HH:mm:ss.SSS}</green> | <level>{level: <8}</level> | "
    "<cyan>{name}</cyan> - <level>{message}</level>"
)


class LoggerService(pdt.BaseModel, strict=True, frozen=True, extra="forbid"):
    """Loguru on stderr, so stdout stays free for machine-readable output.

    Every line is redacted (``bikes.core.redaction``): a patcher cleans each record's message
    for any sink, and the stderr sink cleans the formatted line again, tracebacks included, so
    no URL password, DSN, token or webhook secret reaches the log whoever wrote the message.
    """

    level: T.Literal["TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR"] = pdt.Field(
        default="INFO", description="The least severe level logged."
    )
    colorize: bool | None = pdt.Field(
        default=None, description="Colours in the log (default: when stderr is a terminal)."
    )

    def start(self) -> None:
        logger.remove()
        logger.configure(patcher=_redact_record)
        colorize = self.colorize if self.colorize is not None else _is_terminal(sys.stderr)
        logger.add(_write_redacted, level=self.level, format=LOG_FORMAT, colorize=colorize)
        _redact_standard_logging()

    def stop(self) -> None:
        logger.complete()


def _redact_record(record: T.Any) -> None:
    record["message"] = redact(record["message"])


class _RedactingFilter(logging.Filter):
    """For the standard logging handlers MLflow, SQLAlchemy and alembic write through."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


def _redact_standard_logging() -> None:
    """A redacting filter on every handler configured so far (MLflow's own, at its import).
    Snapshots first (``list`` copies in one step under the GIL): MLflow may start in a thread
    while the job's thread imports modules that add loggers."""
    known = list(logging.Logger.manager.loggerDict.values())
    loggers = [logging.getLogger()] + [item for item in known if isinstance(item, logging.Logger)]
    for handler in {id(h): h for one in loggers for h in list(one.handlers)}.values():
        if not any(isinstance(f, _RedactingFilter) for f in handler.filters):
            handler.addFilter(_RedactingFilter())


class _RedactingStream:
    """A text stream that redacts what is written through it, whole writes at a time
    (print and logging write a line at once), and is the stream it wraps otherwise."""

    def __init__(self, stream: T.TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(redact(text))
        return len(text)

    def __getattr__(self, name: str) -> T.Any:
        return getattr(self._stream, name)


@contextlib.contextmanager
def redacted_output() -> T.Iterator[None]:
    """``sys.stdout`` and ``sys.stderr`` redacted while a job runs: libraries print too (MLflow
    writes its "View run" link, the tracking URI's userinfo included, on stdout)."""
    saved = sys.stdout, sys.stderr
    sys.stdout = T.cast(T.TextIO, _RedactingStream(saved[0]))
    sys.stderr = T.cast(T.TextIO, _RedactingStream(saved[1]))
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved


@contextlib.contextmanager
def quiet(name: str, level: int = logging.WARNING) -> T.Iterator[None]:
    """The standard logger ``name`` (MLflow's, a library's) is silent below ``level`` for the
    block; its warnings still show. For a library's per-step chatter ("Validating candidate
    model metrics against baseline", "Testing metrics on first row...") that would break a
    job's one line per step."""
    quieted = logging.getLogger(name)
    previous = quieted.level
    quieted.setLevel(max(level, previous))
    try:
        yield
    finally:
        quieted.setLevel(previous)


def _write_redacted(message: str) -> None:
    """The stderr sink: looked up at each line (tests swap it), redacted as a whole."""
    sys.stderr.write(redact(message))


def _is_terminal(stream: T.Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


_URI_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
# MLflow draws a progress bar for every artifact download (a model's load, a reference's
# download), even of a few local kilobytes: noise in a job's log. Off while a job runs, unless
# the environment says otherwise.
_PROGRESS_BAR = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
# Also written into the environment by MLflow (``set_experiment``), and handed back by stop():
# a later job, or a subprocess, in the same process must not inherit another store's ids.
_SAVED_VARIABLES = (*_URI_VARIABLES, "MLFLOW_EXPERIMENT_ID", _PROGRESS_BAR)
# MLflow's HTTP client settings, bounded while the service starts (see MlflowService.start).
_REQUEST_VARIABLES = ("MLFLOW_HTTP_REQUEST_TIMEOUT", "MLFLOW_HTTP_REQUEST_MAX_RETRIES")


def _is_local(uri: str) -> bool:
    return uri.startswith("sqlite:") or uri.startswith("file:") or "://" not in uri


class MlflowService(pdt.BaseModel, strict=True, frozen=True, extra="forbid"):
    """Points MLflow at its tracking and registry stores and makes sure the experiment exists.

    The standard ``MLFLOW_TRACKING_URI`` and ``MLFLOW_REGISTRY_URI`` environment variables win
    over the config, so one job file runs against the local SQLite file or a shared server.

    An http(s) server that does not answer fails the job (exit 2) within ``timeout`` seconds,
    not after MLflow's own retries (7 with backoff, 120 s each: minutes): its ``/health`` is
    polled with that deadline before MLflow touches it, and MLflow's first requests run with
    ``MLFLOW_HTTP_REQUEST_TIMEOUT`` at ``timeout`` and no retries, unless those variables are
    set. Once started, the job's requests follow MLflow's settings (a long artifact upload
    may need them). Messages name the URI with its password redacted.
    """

    tracking_uri: str = pdt.Field(
        default="sqlite:///mlflow.db",
        description="MLflow tracking store (MLFLOW_TRACKING_URI in the environment wins).",
    )
    registry_uri: str | None = pdt.Field(
        default=None,
        description="MLflow model registry (default: the tracking store; MLFLOW_REGISTRY_URI "
        "wins).",
    )
    experiment_name: str = pdt.Field(default="bikes", description="The MLflow experiment.")
    artifact_root: str = pdt.Field(
        default="mlartifacts",
        description="Where a local tracking store keeps artifacts of new experiments.",
    )
    timeout: float = pdt.Field(
        default=20.0,
        gt=0,
        description="Seconds an http(s) tracking or registry server has to answer when the "
        "job starts (polled, then MLflow's first requests); after that the job exits 2.",
    )

    @property
    def effective_tracking_uri(self) -> str:
        return os.environ.get("MLFLOW_TRACKING_URI") or self.tracking_uri

    @property
    def effective_registry_uri(self) -> str:
        return (
            os.environ.get("MLFLOW_REGISTRY_URI")
            or self.registry_uri
            or self.effective_tracking_uri
        )

    _saved_environment: dict[str, str | None] = pdt.PrivateAttr(default_factory=dict)
    _starting: threading.Thread | None = pdt.PrivateAttr(default=None)
    _start_error: BaseException | None = pdt.PrivateAttr(default=None)
    _deferred: bool = pdt.PrivateAttr(default=False)
    _warm_up: tuple[str, ...] = pdt.PrivateAttr(default=())
    _in_worker: bool = pdt.PrivateAttr(default=False)
    _spawned: MlflowWorker | None = pdt.PrivateAttr(default=None)
    _worker: MlflowWorker | None = pdt.PrivateAttr(default=None)
    _worker_ready: bool = pdt.PrivateAttr(default=False)

    def defer_start(
        self, warm_up: T.Sequence[str] = (), worker: bool | MlflowWorker = False
    ) -> None:
        """Make the next ``start()`` a ``start_in_background()``. The CLI asks it for jobs
        that call ``ready()`` before their first MLflow call (``waits_for_mlflow``); code that
        calls MLflow itself right after ``with job:`` gets the synchronous start.

        ``warm_up``: modules the job will need once MLflow is ready (training: MLflow's sklearn
        flavour and skops, whose import lists the public names of every loaded module, 1-1.5
        s), imported by the same thread right after MLflow started, so that no two threads
        import one package at once.

        ``worker``: MLflow in a child process instead (``bikes.io.mlflow_worker``), for a job
        whose only MLflow work is the one run it logs through ``run()`` at its end (the
        monitoring job without a champion reference): a thread's import contends for the
        job's GIL, a process has the other core to itself, and the job never imports MLflow.
        A ``MlflowWorker`` already spawned (by the CLI, before the job's modules loaded) is
        used, else one is spawned at ``start()``.
        """
        self._deferred = True
        self._warm_up = tuple(warm_up)
        self._in_worker = worker is not False
        if isinstance(worker, bool):
            return
        if self._spawned is not None:
            self._spawned.close()
        self._spawned = worker

    def start_in_background(self) -> None:
        """``start`` in a thread: MLflow's import and store opening (about 4 s) overlap the
        job's reading, scoring or fitting, which release the GIL. The job calls ``ready()``
        before its first MLflow call or its first write, so an unusable store still fails the
        job before anything is written, with the same error as ``start``."""
        self._deferred = False
        self._start_error = None
        # What both threads would otherwise import at once, imported here first: a package
        # whose modules import each other in a cycle, entered by two threads from two sides,
        # can hand one of them a partially initialised module. MLflow itself is entered only
        # by the thread below: the job's thread calls ``ready()`` (``client()`` does) before it.
        import pyarrow.parquet  # noqa: F401
        import scipy.stats  # noqa: F401

        warm_up, self._warm_up = self._warm_up, ()

        def start() -> None:
            try:
                self.start()
                for module in warm_up:
                    importlib.import_module(module)
            except BaseException as error:  # handed to ready(), in the job's thread
                self._start_error = error

        self._starting = threading.Thread(target=start, name="mlflow-start", daemon=True)
        self._starting.start()

    def start_in_worker(self) -> None:
        """``start`` in a child process (see ``defer_start``); ``ready()`` waits for its
        answer and raises what ``start`` would have, with the same message."""
        from bikes.io.mlflow_worker import MlflowWorker

        self._deferred = self._in_worker = False
        self._worker_ready = False
        worker = self._spawned or MlflowWorker(self.effective_tracking_uri)
        self._spawned = None
        self._worker = worker
        worker.open(self.model_dump_json(), self.timeout)

    @property
    def in_worker(self) -> bool:
        """MLflow runs in a child process: log through ``run()``, never ``client()``."""
        return self._worker is not None

    @property
    def worker_pid(self) -> int | None:
        """The MLflow worker process's id, while there is one (for operators and tests)."""
        return None if self._worker is None else self._worker.pid

    def ready(self) -> None:
        """Wait for ``start_in_background`` or ``start_in_worker`` (a no-op without one); raise
        what ``start`` raised."""
        if self._worker is not None and not self._worker_ready:
            began = time.perf_counter()
            try:
                self._worker.ready()
            except BaseException:
                self._worker = None
                raise
            self._worker_ready = True
            logger.debug(
                "MLflow started in a worker process (pid {}); waited {:.2f} s for it",
                self._worker.pid,
                time.perf_counter() - began,
            )
            return
        starting, self._starting = self._starting, None
        if starting is not None:
            began = time.perf_counter()
            starting.join()
            logger.debug(
                "MLflow started in the background; waited {:.2f} s for it",
                time.perf_counter() - began,
            )
        error, self._start_error = self._start_error, None
        if error is not None:
            raise error

    def start(self) -> None:
        if self._deferred and self._in_worker:
            self.start_in_worker()
            return
        if self._deferred:
            self.start_in_background()
            return
        import mlflow
        from mlflow.exceptions import MlflowException

        _redact_standard_logging()  # MLflow's handlers exist from its import on
        # MLflow writes the URIs it is given into the environment (for subprocesses): remember
        # the user's own values, so that stop() restores them and overrides stay overrides.
        if not self._saved_environment:
            self._saved_environment = {name: os.environ.get(name) for name in _SAVED_VARIABLES}
        os.environ.setdefault(_PROGRESS_BAR, "false")
        mlflow.set_tracking_uri(self.effective_tracking_uri)
        mlflow.set_registry_uri(self.effective_registry_uri)
        try:
            deadline = time.monotonic() + self.timeout
            self._wait_for_servers(deadline)
            with self._bounded_requests(deadline):
                if os.environ.get("MLFLOW_RUN_ID"):
                    # Inside `mlflow run`: the project run already chose its experiment and run.
                    mlflow.get_run(os.environ["MLFLOW_RUN_ID"])
                    return
                experiment = mlflow.get_experiment_by_name(self.experiment_name)
                if experiment is None:
                    location = None
                    if _is_local(self.effective_tracking_uri):
                        location = Path(self.artifact_root).resolve().as_uri()
                    mlflow.create_experiment(self.experiment_name, artifact_location=location)
                mlflow.set_experiment(self.experiment_name)
        except MlflowException as error:
            self.stop()  # hand the environment back even when the store is unusable
            raise InputError(
                f"MLflow tracking at {redact_url(self.effective_tracking_uri)}: unreachable or "
                f"unusable ({redact(first_line(error))})"
            ) from None
        except InputError:
            self.stop()
            raise

    def _wait_for_servers(self, deadline: float) -> None:
        """Poll each http(s) server's ``/health`` until it answers or ``deadline`` passes.

        Any HTTP answer counts, even a 401 or 404 (a proxy, an auth layer, another path
        prefix): the question is whether anything answers, MLflow's own requests say the rest.
        A refused connection is retried with backoff (a server restarting, a compose stack
        coming up); a server that accepts and never answers uses up the remaining time once.
        """
        servers = {"tracking": self.effective_tracking_uri, "registry": self.effective_registry_uri}
        probed: set[str] = set()
        for role, uri in servers.items():
            if not uri.lower().startswith(("http://", "https://")) or uri in probed:
                continue
            probed.add(uri)
            _wait_for_health(uri, role, deadline, self.timeout)

    @contextlib.contextmanager
    def _bounded_requests(self, deadline: float) -> T.Iterator[None]:
        """MLflow's requests while starting: one try each, within the time left (the user's
        own ``MLFLOW_HTTP_REQUEST_*`` values win, and nothing changes for local stores)."""
        remote = any(
            uri.lower().startswith(("http://", "https://"))
            for uri in (self.effective_tracking_uri, self.effective_registry_uri)
        )
        bounded = {
            "MLFLOW_HTTP_REQUEST_TIMEOUT": str(max(1, math.ceil(deadline - time.monotonic()))),
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
        }
        chosen = [name for name in _REQUEST_VARIABLES if remote and name not in os.environ]
        for name in chosen:
            os.environ[name] = bounded[name]
        try:
            yield
        finally:
            for name in chosen:
                os.environ.pop(name, None)

    def stop(self) -> None:
        for worker in (self._worker, self._spawned):
            if worker is not None:  # a job that failed mid-way: the worker ends its run FAILED
                worker.close()
        self._worker = self._spawned = None
        starting = self._starting
        if starting is not None and starting is not threading.current_thread():
            self._starting = None
            starting.join()  # a job failed before ready(): let the start finish, then undo it
            self._start_error = None
        if "mlflow" not in sys.modules:
            return  # never started: nothing to end or hand back
        import mlflow

        if mlflow.active_run() is not None:
            mlflow.end_run(status="FAILED")
        if not self._saved_environment:
            return
        # None is how MLflow forgets a URI (its annotations leave that out).
        mlflow.set_tracking_uri(self._saved_environment["MLFLOW_TRACKING_URI"])  # type: ignore[arg-type]
        mlflow.set_registry_uri(self._saved_environment["MLFLOW_REGISTRY_URI"])  # type: ignore[arg-type]
        for name, value in self._saved_environment.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._saved_environment = {}

    @contextlib.contextmanager
    def run(self, run_name: str, tags: dict[str, str]) -> T.Iterator[RunLog]:
        """One MLflow run, logged in this process (``mlflow.start_run``, ended FAILED if the
        block raises) or by the worker process (started as the block begins, ended FAILED if
        it raises: the worker sees its input end)."""
        self.ready()
        if self._worker is not None:
            worker = self._worker
            try:
                worker.start_run(run_name, tags)
                yield _WorkerRun(worker)
            except BaseException:
                self._worker = None
                worker.close()  # a run the worker started ends FAILED
                raise
            self._worker = None
            return
        import mlflow

        client = self.client()
        with mlflow.start_run(run_name=run_name, tags=tags) as started:
            log = _InProcessRun(client, started.info.run_id)
            try:
                yield log
            finally:
                log.wait()

    def client(self) -> MlflowClient:
        if self._worker is not None:
            raise RuntimeError("MLflow runs in a worker process here: log through run()")
        self.ready()  # before any MLflow import here: two threads importing MLflow at once can
        # meet a partially initialised module (seen: "partially initialized module
        # 'mlflow.tracking'" in the demo)
        from mlflow.tracking import MlflowClient

        return MlflowClient(
            tracking_uri=self.effective_tracking_uri, registry_uri=self.effective_registry_uri
        )


class RunLog:
    """A job's MLflow run, wherever MLflow runs: ``log`` the metrics and status tags (in the
    background: the job writes its files meanwhile), then ``finish`` with the artifacts;
    ``run_id`` is known after ``finish`` (before it too, in process)."""

    run_id: str | None = None

    def log(self, metrics: T.Sequence[LoggedMetric], status_tags: dict[str, str]) -> None:
        raise NotImplementedError

    def finish(self, artifacts: T.Sequence[tuple[str, str]]) -> str:
        raise NotImplementedError


class _InProcessRun(RunLog):
    """The batch in a thread (a SQL store's commits wait on the disk without the GIL)."""

    def __init__(self, client: MlflowClient, run_id: str) -> None:
        self._client = client
        self.run_id = run_id
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._logged: concurrent.futures.Future[T.Any] | None = None

    def log(self, metrics: T.Sequence[LoggedMetric], status_tags: dict[str, str]) -> None:
        from mlflow.entities import Metric, RunTag

        assert self.run_id is not None
        self._pool = concurrent.futures.ThreadPoolExecutor(1, "mlflow-log")
        self._logged = self._pool.submit(
            self._client.log_batch,
            self.run_id,
            metrics=[Metric(*metric) for metric in metrics],
            tags=[RunTag(key, value) for key, value in status_tags.items()],
        )

    def wait(self) -> None:
        logged, self._logged = self._logged, None
        pool, self._pool = self._pool, None
        try:
            if logged is not None:
                logged.result()
        finally:
            if pool is not None:
                pool.shutdown()

    def finish(self, artifacts: T.Sequence[tuple[str, str]]) -> str:
        assert self.run_id is not None
        self.wait()
        for path, artifact_path in artifacts:
            self._client.log_artifact(self.run_id, path, artifact_path)
        return self.run_id


class _WorkerRun(RunLog):
    def __init__(self, worker: MlflowWorker) -> None:
        self._worker = worker

    def log(self, metrics: T.Sequence[LoggedMetric], status_tags: dict[str, str]) -> None:
        self._worker.log(metrics, status_tags)

    def finish(self, artifacts: T.Sequence[tuple[str, str]]) -> str:
        self.run_id = self._worker.finish(artifacts)
        return self.run_id


def _wait_for_health(uri: str, role: str, deadline: float, timeout: float) -> None:
    """``InputError`` naming the (redacted) URI when nothing answers at ``uri`` by ``deadline``."""
    import httpx

    url = uri.rstrip("/") + "/health"
    delay = 0.25
    while True:
        left = deadline - time.monotonic()
        try:
            # No credentials go out, so the certificate need not be checked: only an answer is
            # asked for (MLflow checks TLS for real on its own requests).
            httpx.get(url, timeout=max(left, 0.1), verify=False)  # noqa: S501
            return
        except httpx.TransportError as error:
            failure = error
        left = deadline - time.monotonic()
        if left <= 0 or isinstance(failure, httpx.TimeoutException):
            break
        time.sleep(min(delay, left))
        delay = min(delay * 2, 4.0)
    raise InputError(
        f"MLflow {role} at {redact_url(uri)}: unreachable within {timeout:g} s "
        f"({type(failure).__name__}: {redact(first_line(failure))}); check the server, or give "
        "it longer with job.mlflow_service.timeout"
    )
