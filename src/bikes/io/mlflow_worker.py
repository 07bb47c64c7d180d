"""MLflow in a process of its own: a job's tracking store opened, and its run logged, by a child.

Why a process: MLflow's import and SQL store (about 1.8 s of CPU) in a thread of the job still
contend for the job's GIL, so the second core barely helps; a child process
(``python -m bikes.io.mlflow_worker``, the job's own interpreter and environment) imports and
opens them on the other core while the job reads and scores, and the job never imports MLflow.
Only for a job whose MLflow work is one run logged at its end (``MlflowService.defer_start(
worker=True)``, which the CLI asks for the monitoring job); anything that reads MLflow in the
job (a champion reference, a retraining) keeps the in-process service.

The child starts importing MLflow at once: the CLI spawns it (``spawn``) as soon as the
config looks like such a job (``scripts``), before the job's own modules load, and hands it to
the service (``defer_start(worker=...)``), which sends the settings when the job starts.

The protocol is JSON lines, the job's messages on the child's stdin, the child's answers on
its stdout (a copy of it: the child's own fd 1 is pointed at its stderr, so whatever MLflow
prints cannot break the protocol):

1. job -> child: ``{"service": <the MlflowService config>, "main": <the job's sys.argv[0]>}``
   (on stdin, not on the command line: a tracking URI may hold a password, and command lines
   are public to ``ps``; ``main`` makes the run's source and git tags the job's own);
2. child -> job: ``{"ready": true}``, or ``{"error": <message>, "input": <bool>}`` when the
   store is unusable (``input``: the ``InputError`` ``MlflowService.start`` raises, same text);
3. job -> child: ``{"start": {"run_name", "tags"}}``, where the job would call
   ``mlflow.start_run`` itself: the child does (the same source, user and git tags; it resumes
   ``MLFLOW_RUN_ID``);
4. job -> child: ``{"log": {"metrics": [[key, value, timestamp, step]], "status_tags"}}``:
   one ``log_batch``, while the job writes its files;
5. job -> child: ``{"finish": {"artifacts": [[local path, artifact path]]}}``: the child logs
   them, ends the run FINISHED, answers ``{"run_id": ...}`` (or ``{"error": ...}``) and exits
   0 at once (``os._exit``: nothing is left to tear down, as ``scripts._exiting``).

The child ends at the end of its stdin: a job that failed after message 3 leaves the run
FAILED, as the in-process ``with mlflow.start_run()`` does; before it, nothing is logged.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import select
import subprocess
import sys
import time
import typing as T

from bikes.core.errors import BikesError, InputError

# Seconds the job waits for each answer beyond the service's own timeout: MLflow's import and
# a SQLite store's opening take 2-4 s on a loaded machine; two artifacts of a few MB, less.
ANSWER_MARGIN = 120.0


class MlflowWorkerError(BikesError):
    """The MLflow process died, hung or failed: the run could not be logged (exit 2)."""


class LoggedMetric(T.NamedTuple):
    """A metric as ``mlflow.entities.Metric`` takes it, without importing MLflow."""

    key: str
    value: float
    timestamp: int
    step: int


class MlflowWorker:
    """The job's side: the child process, its messages, and a deadline on every answer."""

    def __init__(self, tracking_uri: str | None = None) -> None:
        """Spawn the child: it imports MLflow while the job loads, then waits for ``open``.
        ``tracking_uri`` (its scheme only is passed on) lets it import the store's module
        too before the settings come: a SQL store's (1 s), for a database URI."""
        self._service_timeout = 0.0
        self._opened = False
        self._buffer = b""
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bikes.io.mlflow_worker", *store_modules(tracking_uri)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def open(self, service_json: str, timeout: float) -> None:
        """Send the service's settings: the child opens the store (``ready`` waits for it)."""
        self._service_timeout = timeout
        self._opened = True
        # The job's own main file: MLflow's source and git tags name it, not this module.
        settings = {"service": json.loads(service_json), "main": sys.argv[0] if sys.argv else ""}
        self._send(settings, "the service's settings")

    def ready(self) -> None:
        """Wait for the store: ``InputError`` with ``MlflowService.start``'s own message when
        it is unusable, ``MlflowWorkerError`` when the process died or did not answer."""
        answer = self._answer("opening the MLflow store")
        if "error" in answer:
            self.close()
            raise (InputError if answer.get("input") else MlflowWorkerError)(answer["error"])

    def start_run(self, run_name: str, tags: dict[str, str]) -> None:
        """The child starts the run; returns at once."""
        self._send({"start": {"run_name": run_name, "tags": tags}}, "the run's start")

    def log(self, metrics: T.Sequence[LoggedMetric], status_tags: dict[str, str]) -> None:
        """The child logs the batch; returns at once (the job writes its files meanwhile)."""
        message = {"metrics": [list(metric) for metric in metrics], "status_tags": status_tags}
        self._send({"log": message}, "the run's metrics")

    def finish(self, artifacts: T.Sequence[tuple[str, str]]) -> str:
        """Log the artifacts, end the run; its id once the child says it is logged."""
        self._send({"finish": {"artifacts": [list(pair) for pair in artifacts]}}, "artifacts")
        answer = self._answer("logging the run")
        if "error" in answer:
            self.close()
            raise MlflowWorkerError(f"MLflow run not logged: {answer['error']}")
        self.close()
        return str(answer["run_id"])

    def close(self, wait: float = 30.0) -> None:
        """End of the child's input: it finishes what it has (a started run ends FAILED if
        it was never finished) and exits; killed if it does not within ``wait`` seconds, or
        at once if it was never given settings (it would finish importing MLflow first)."""
        if not self._opened and self.process.returncode is None:
            self.process.kill()
        if self.process.stdin is not None and not self.process.stdin.closed:
            with contextlib.suppress(OSError):  # a dead child: nothing to tell it
                self.process.stdin.close()
        try:
            self.process.wait(wait)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()

    def _send(self, message: dict[str, T.Any], what: str) -> None:
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(json.dumps(message).encode() + b"\n")
            self.process.stdin.flush()
        except OSError:  # BrokenPipeError: the child is gone; _answer tells how
            self._fail(f"sending {what}")

    def _answer(self, doing: str) -> dict[str, T.Any]:
        """The child's next line, within the deadline; a dead or silent child is an error."""
        assert self.process.stdout is not None
        descriptor = self.process.stdout.fileno()
        timeout = self._service_timeout + ANSWER_MARGIN
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                self.process.kill()
                self._fail(f"{doing}: no answer within {timeout:g} s")
            readable, _, _ = select.select([descriptor], [], [], left)
            if not readable:
                continue
            chunk = os.read(descriptor, 65536)
            if not chunk:
                self._fail(doing)
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        answer: dict[str, T.Any] = json.loads(line)
        return answer

    def _fail(self, doing: str) -> T.NoReturn:
        self.close(wait=5.0)
        code = self.process.returncode
        how = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        raise MlflowWorkerError(
            f"the MLflow process (pid {self.process.pid}) failed while {doing} ({how}); "
            "nothing more was logged to MLflow"
        )


def store_modules(tracking_uri: str | None) -> list[str]:
    """The modules of the store at ``tracking_uri`` worth importing before it is opened: the
    SQL store's (most of a SQLite store's opening) for a database; none otherwise."""
    if tracking_uri is None:
        return []
    scheme = tracking_uri.split(":", 1)[0].split("+", 1)[0].lower()
    if scheme in ("sqlite", "postgresql", "mysql", "mssql"):
        return ["mlflow.store.tracking.sqlalchemy_store"]
    return []


# The child's side ----------------------------------------------------------------------------


def _serve(channel: T.TextIO, modules: T.Sequence[str]) -> int:
    """Open the store, then log what the job sends; one answer per question on ``channel``."""
    import mlflow  # first, while the job loads its own modules and reads its config

    for module in modules:
        importlib.import_module(module)

    from bikes.io.services import LoggerService, MlflowService, redacted_output

    def answer(message: dict[str, T.Any]) -> None:
        channel.write(json.dumps(message) + "\n")
        channel.flush()

    first = sys.stdin.readline()
    if not first:
        return 0  # the job ended (or chose MLflow in its own process) before saying anything
    LoggerService(colorize=False).start()
    with redacted_output():
        settings = json.loads(first)
        if settings["main"]:  # the source and git tags of the run are the job's
            sys.argv[0] = settings["main"]
        service = MlflowService.model_validate(settings["service"])
        try:
            service.start()
        except InputError as error:
            answer({"error": str(error), "input": True})
            return 0
        except Exception as error:  # the job reports it; the traceback goes to stderr
            answer({"error": f"{type(error).__name__}: {error}", "input": False})
            raise
        answer({"ready": True})
        try:
            return _log_run(mlflow, service, answer)
        finally:
            service.stop()  # a run still active (the job stopped mid-way) ends FAILED


def _log_run(mlflow: T.Any, service: T.Any, answer: T.Callable[[dict[str, T.Any]], None]) -> int:
    from mlflow.entities import Metric, RunTag

    messages = iter(sys.stdin.readline, "")  # each line, until the job closes its end
    started = next(messages, None)
    if started is None:
        return 0  # the job failed before its run: nothing logged, as in process
    try:
        run = mlflow.start_run(**json.loads(started)["start"])
        client = service.client()
        for line in messages:
            message = json.loads(line)
            if "log" in message:
                client.log_batch(
                    run.info.run_id,
                    metrics=[Metric(*metric) for metric in message["log"]["metrics"]],
                    tags=[RunTag(k, v) for k, v in message["log"]["status_tags"].items()],
                )
                continue
            for path, artifact_path in message["finish"]["artifacts"]:
                client.log_artifact(run.info.run_id, path, artifact_path)
            mlflow.end_run()
            answer({"run_id": run.info.run_id})
            return 0
    except Exception as error:
        answer({"error": f"{type(error).__name__}: {error}"})
        raise
    return 0  # the job failed after its run started: stop() ends it FAILED


def main() -> T.NoReturn:
    # The protocol's own copy of stdout; fd 1 then points at stderr, so a library's print
    # (MLflow's "View run" line) lands in the job's log, not in the protocol.
    channel = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    code = _serve(channel, [m for m in sys.argv[1:] if m.startswith("mlflow.")])
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # the run is logged and ended: no teardown of MLflow's modules to wait for


if __name__ == "__main__":
    main()
