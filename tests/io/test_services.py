from __future__ import annotations

import contextlib
import http.server
import logging
import os
import signal
import socket
import sys
import threading
import time
import typing as T
from pathlib import Path

import mlflow
import pytest
from loguru import logger

from bikes.core.errors import InputError
from bikes.io import mlflow_worker
from bikes.io.mlflow_worker import LoggedMetric, MlflowWorkerError
from bikes.io.services import LoggerService, MlflowService, quiet
from tests.conftest import started
from tests.serving.test_app import free_port


def test_environment_overrides_the_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    service = MlflowService(tracking_uri="sqlite:///config.db")
    assert service.effective_tracking_uri == "sqlite:///config.db"
    assert service.effective_registry_uri == "sqlite:///config.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/env.db")
    assert service.effective_tracking_uri == f"sqlite:///{tmp_path}/env.db"
    assert service.effective_registry_uri == f"sqlite:///{tmp_path}/env.db"
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", "sqlite:///registry.db")
    assert service.effective_registry_uri == "sqlite:///registry.db"


def test_start_creates_the_experiment_with_local_artifacts(tmp_path: Path) -> None:
    service = MlflowService(
        tracking_uri=f"sqlite:///{tmp_path}/m.db",
        experiment_name="exp",
        artifact_root=str(tmp_path / "artifacts"),
    )
    service.start()
    try:
        experiment = mlflow.get_experiment_by_name("exp")
        assert experiment is not None
        assert experiment.artifact_location == (tmp_path / "artifacts").as_uri()
        service.start()  # a second start reuses the experiment
    finally:
        service.stop()
    # MLflow exports the URI it is given; stop() must hand the environment back untouched.
    assert "MLFLOW_TRACKING_URI" not in os.environ
    assert "MLFLOW_REGISTRY_URI" not in os.environ


def test_unreachable_tracking_server_is_an_input_error() -> None:
    service = MlflowService(tracking_uri="http://127.0.0.1:9", timeout=2)
    with pytest.raises(InputError, match=r"MLflow tracking at http://127.0.0.1:9: unreachable"):
        service.start()
    assert "MLFLOW_TRACKING_URI" not in os.environ


@contextlib.contextmanager
def black_hole() -> T.Iterator[int]:
    """A port that accepts connections (the kernel's backlog) and never answers a byte."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(64)
        yield int(server.getsockname()[1])


@contextlib.contextmanager
def answering(status: int) -> T.Iterator[tuple[int, list[str]]]:
    """A real HTTP server answering every request with ``status``; yields its port and the
    paths asked for."""
    paths: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self) -> None:
            paths.append(self.path)
            self.send_response(status)
            self.send_header("content-length", "0")
            self.end_headers()

        do_GET = do_POST = _answer

        def log_message(self, *args: T.Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_port, paths
    finally:
        server.shutdown()
        server.server_close()


PLANTED = "planted-Pa55word"


@pytest.mark.parametrize("kind", ["closed port", "black hole"])
def test_an_unreachable_server_fails_within_the_timeout_with_the_password_redacted(
    kind: str,
) -> None:
    """Before: MLflow's 7 retries of 120 s requests, over four minutes. Now: ``timeout``."""
    timeout = 3.0
    with contextlib.ExitStack() as stack:
        port = free_port() if kind == "closed port" else stack.enter_context(black_hole())
        uri = f"http://bikes:{PLANTED}@127.0.0.1:{port}"
        service = MlflowService(tracking_uri=uri, timeout=timeout)
        began = time.monotonic()
        with pytest.raises(InputError) as caught:
            service.start()
        elapsed = time.monotonic() - began
    message = str(caught.value)
    print(f"{kind}: InputError after {elapsed:.2f} s (timeout {timeout:g} s)")
    assert PLANTED not in message
    assert message.startswith(
        f"MLflow tracking at http://bikes:***@127.0.0.1:{port}: unreachable within 3 s ("
    )
    # It waited for the server (a restart may be on its way), but no longer than asked.
    assert timeout - 0.1 <= elapsed < timeout + 2
    assert "MLFLOW_TRACKING_URI" not in os.environ
    assert "MLFLOW_HTTP_REQUEST_TIMEOUT" not in os.environ


def test_a_server_that_answers_errors_fails_fast_and_mlflow_settings_come_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """/health answers (so the probe passes) but every API call is a 503: MLflow's first
    requests run with no retries, so the job still stops within the timeout."""
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", raising=False)
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_TIMEOUT", raising=False)
    with answering(503) as (port, paths):
        service = MlflowService(tracking_uri=f"http://127.0.0.1:{port}", timeout=5)
        began = time.monotonic()
        with pytest.raises(InputError, match=r"unreachable or unusable"):
            service.start()
        elapsed = time.monotonic() - began
    assert paths[0] == "/health"
    assert len(paths) == 2, paths  # the probe, then MLflow's one try: no retry
    assert elapsed < 5
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ
    assert "MLFLOW_HTTP_REQUEST_TIMEOUT" not in os.environ


def test_the_users_own_mlflow_request_settings_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")
    with answering(503) as (port, paths):
        service = MlflowService(tracking_uri=f"http://127.0.0.1:{port}", timeout=5)
        with pytest.raises(InputError, match=r"unreachable or unusable"):
            service.start()
    assert len(paths) == 3, paths  # the probe, MLflow's try and the one retry asked for
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "1"


def test_every_log_line_is_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    LoggerService(level="INFO", colorize=False).start()
    logger.info("store postgresql://bikes:{}@db:5432/bikes", PLANTED)
    logger.warning("webhook https://hooks.slack.com/services/T1/B2/{} refused", PLANTED)
    try:
        raise RuntimeError(
            f"cannot reach http://u:{PLANTED}@host/ (Authorization: Bearer x{PLANTED})"
        )
    except RuntimeError:
        logger.exception("failed")
    err = capsys.readouterr().err
    assert PLANTED not in err
    assert "postgresql://bikes:***@db:5432/bikes" in err
    assert "https://hooks.slack.com/services/T1/B2/***" in err
    assert "RuntimeError: cannot reach http://u:***@host/ (Authorization: Bearer ***)" in err


def test_logger_levels_are_checked() -> None:
    LoggerService(level="DEBUG").start()
    with pytest.raises(ValueError, match="level"):
        LoggerService.model_validate({"level": "LOUD"})


def test_artifact_progress_bars_are_off_while_mlflow_runs_unless_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A download of a few local kilobytes draws no bar in a job's log; the user's own
    setting wins, and stop() hands the environment back."""
    monkeypatch.delenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", raising=False)
    service = MlflowService(
        tracking_uri=f"sqlite:///{tmp_path}/m.db", artifact_root=str(tmp_path / "artifacts")
    )
    (tmp_path / "files").mkdir()
    for name in ("a.txt", "b.txt"):
        (tmp_path / "files" / name).write_text(name)
    service.start()
    try:
        assert os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] == "false"
        with mlflow.start_run() as run:
            mlflow.log_artifacts(str(tmp_path / "files"), artifact_path="files")
        capsys.readouterr()
        mlflow.artifacts.download_artifacts(
            f"runs:/{run.info.run_id}/files", dst_path=str(tmp_path / "quiet")
        )
        assert "Downloading artifacts" not in capsys.readouterr().err
    finally:
        service.stop()
    assert "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR" not in os.environ
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "true")
    service.start()
    try:
        mlflow.artifacts.download_artifacts(
            f"runs:/{run.info.run_id}/files", dst_path=str(tmp_path / "asked")
        )
        assert "Downloading artifacts" in capsys.readouterr().err  # the bar is MLflow's own
    finally:
        service.stop()
    assert os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] == "true"


def test_quiet_silences_a_logger_below_warning_for_the_block_only() -> None:
    records: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    chatty = logging.getLogger("bikes.tests.chatty")
    chatty.setLevel(logging.INFO)
    handler = Collect()
    chatty.addHandler(handler)
    try:
        with quiet("bikes.tests.chatty"):
            chatty.info("step detail")
            chatty.warning("a real warning")
        chatty.info("after the block")
    finally:
        chatty.removeHandler(handler)
    assert records == ["a real warning", "after the block"]
    assert chatty.level == logging.INFO


def test_the_background_start_warms_up_the_modules_the_job_asked_for(tmp_path: Path) -> None:
    """``defer_start(warm_up)``: the modules are imported by MLflow's thread once it started,
    and ready() waits for them; an import that fails is the start's error, raised by ready()."""
    module = tmp_path / "bikes_warm_up_probe.py"
    module.write_text("import threading\nTHREAD = threading.current_thread().name\n")
    sys.path.insert(0, str(tmp_path))
    service = MlflowService(tracking_uri=f"sqlite:///{tmp_path}/m.db")
    try:
        service.defer_start(["bikes_warm_up_probe"])
        service.start()
        service.ready()
        assert sys.modules["bikes_warm_up_probe"].THREAD == "mlflow-start"
        service.stop()
        service.defer_start(["bikes_no_such_module"])
        service.start()
        with pytest.raises(ModuleNotFoundError, match="bikes_no_such_module"):
            service.ready()
    finally:
        service.stop()
        sys.path.remove(str(tmp_path))
        sys.modules.pop("bikes_warm_up_probe", None)


def _log_one_run(service: MlflowService, name: str) -> str:
    """A run of one metric and one tag, as a job logs it."""
    with service.run(name, {}) as run:
        run.log([LoggedMetric("m", 1.0, 0, 0)], {"status": "x"})
        return run.finish([])


def test_a_worker_killed_after_it_started_fails_the_run_at_once(tmp_path: Path) -> None:
    """MLflow's worker process killed (SIGKILL) once the store is open: logging the run
    raises ``MlflowWorkerError`` naming the process and the signal, without waiting out any
    timeout, and the store holds no run."""
    service = MlflowService(tracking_uri=f"sqlite:///{tmp_path}/m.db", timeout=5)
    service.defer_start(worker=True)
    service.start()
    try:
        assert service.in_worker
        service.ready()
        pid = service.worker_pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        began = time.monotonic()
        with pytest.raises(MlflowWorkerError, match=rf"\(pid {pid}\) failed .*\(signal 9\)"):
            _log_one_run(service, "killed")
        assert time.monotonic() - began < 5
    finally:
        service.stop()
    with started(service):
        assert mlflow.search_runs(search_all_experiments=True, output_format="list") == []


def test_a_worker_that_stops_answering_is_killed_at_the_deadline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker that hangs (SIGSTOP) after the store opened: the job's wait for the run's
    answer ends at the service's timeout (no margin here), the worker is killed, the error
    says so."""
    service = MlflowService(tracking_uri=f"sqlite:///{tmp_path}/m.db", timeout=2)
    service.defer_start(worker=True)
    service.start()
    try:
        service.ready()
        pid = service.worker_pid
        assert pid is not None
        monkeypatch.setattr(mlflow_worker, "ANSWER_MARGIN", 0.0)
        os.kill(pid, signal.SIGSTOP)
        began = time.monotonic()
        with pytest.raises(MlflowWorkerError, match=r"no answer within 2 s \(signal 9\)"):
            _log_one_run(service, "hung")
        assert 2 <= time.monotonic() - began < 30
    finally:
        service.stop()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_the_worker_fails_like_the_in_process_start() -> None:
    """A store whose every API call is a 503, through the worker: ``ready()`` raises the
    ``InputError`` (and message) the in-process ``start`` raises; the worker is gone."""
    with answering(503) as (port, _):
        uri = f"http://127.0.0.1:{port}"
        with pytest.raises(InputError, match="unreachable or unusable") as in_process:
            MlflowService(tracking_uri=uri, timeout=5).start()
        service = MlflowService(tracking_uri=uri, timeout=5)
        service.defer_start(worker=True)
        service.start()
        try:
            pid = service.worker_pid
            assert pid is not None
            with pytest.raises(InputError) as in_worker:
                service.ready()
            assert str(in_worker.value) == str(in_process.value)
            assert service.worker_pid is None
        finally:
            service.stop()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
