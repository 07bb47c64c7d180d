"""The invoke tasks a new user runs first: the demo's ports and `invoke mlflow`'s stop.

Real processes throughout: the serving job and the traffic job on a port that is not the
default, `invoke` itself on the command line, and `mlflow server` with its workers."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import typing as T
from pathlib import Path

import httpx
import pandas as pd
import pytest
from invoke.config import Config
from invoke.context import Context
from tasks import jobs, processes

from tests.conftest import REPO, clean_environment, wait_until_up

INVOKE = (sys.executable, "-m", "invoke", "--search-root", str(REPO))  # the repo's tasks


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def invoke(*args: str, cwd: Path, env: dict[str, str] | None = None) -> list[str]:
    """`invoke` as a user types it (the repo's tasks), for its standard output lines."""
    done = subprocess.run(
        [*INVOKE, *args],
        cwd=cwd,
        env={**(env or clean_environment()), "INVOKE_RUN_ECHO_FORMAT": "{command}"},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout.splitlines()


def test_serve_and_traffic_take_their_port_from_the_option_then_the_environment(
    tmp_path: Path,
) -> None:
    """--dry prints the commands the tasks would run: the port reaches both jobs' configs,
    the option beats BIKES_PORT, and a user's own -e still has the last word."""
    environment = {**clean_environment(), "BIKES_PORT": "8765"}
    environment.pop("BIKES_MLFLOW_PORT", None)
    assert invoke("--dry", "serve", cwd=tmp_path, env=environment) == [
        "bikes confs/serving.yaml -e job.port=8765"
    ]
    assert invoke("--dry", "traffic", "--port", "9123", cwd=tmp_path, env=environment) == [
        "bikes confs/traffic.yaml -e job.url=http://127.0.0.1:9123"
    ]
    assert invoke(
        "--dry", "traffic", "-e", "job.url=http://other:1", cwd=tmp_path, env=environment
    ) == ["bikes confs/traffic.yaml -e job.url=http://127.0.0.1:8765 -e job.url=http://other:1"]
    del environment["BIKES_PORT"]
    assert invoke("--dry", "serve", cwd=tmp_path, env=environment) == [
        "bikes confs/serving.yaml"  # the config's own 8000
    ]


def test_every_task_option_has_help_text(tmp_path: Path) -> None:
    from tasks import ns

    for name, task in ns.tasks.items():
        assert [arg.name for arg in task.get_arguments() if not arg.help] == [], name
    lines = invoke("--help", "demo", cwd=tmp_path)
    assert any("--mlflow-port" in line for line in lines), lines
    assert any("BIKES_PORT" in line for line in lines), lines


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, services: dict[str, T.Any]) -> Path:
    """A working directory with the repo's configs, pointed at the session's MLflow store
    (its champion) through the environment, as the demo's subprocesses inherit it."""
    (tmp_path / "confs").symlink_to(REPO / "confs")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", services["mlflow_service"].tracking_uri)
    for variable in ("MLFLOW_REGISTRY_URI", "MLFLOW_RUN_ID", "BIKES_STORE_URI"):
        monkeypatch.delenv(variable, raising=False)
    return tmp_path


def test_the_demo_serves_and_replays_on_a_port_that_is_not_8000(
    workspace: Path,
    monkeypatch: pytest.MonkeyPatch,
    champion: dict[str, T.Any],
    splits_dir: Path,
) -> None:
    """The demo's own plumbing (BIKES_PORT -> the serving job -> the traffic job): the service
    answers on the chosen port with the champion, and every replayed row lands in its
    capture store, so the traffic went there and nowhere else."""
    port = free_port()
    monkeypatch.setenv("BIKES_PORT", str(port))
    rows = pd.read_parquet(splits_dir / "production.parquet").head(48)
    rows.to_parquet(workspace / "two-days.parquet", index=False)
    c = Context(Config(overrides={"run": {"hide": True, "in_stream": False}}))
    with jobs._serving(c, jobs.serving_port(), timeout=240) as url:
        assert url == f"http://127.0.0.1:{port}"
        assert jobs._served_version(url) == str(champion["model_version"])
        jobs.traffic(c, [f"job.inputs.path={workspace / 'two-days.parquet'}"])
    with contextlib.closing(sqlite3.connect(workspace / "predictions.db")) as store:
        (captured,) = store.execute("SELECT COUNT(*) FROM predictions").fetchone()
    assert captured == len(rows)


def test_the_demo_refuses_a_busy_port_at_once(workspace: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        started = time.monotonic()
        with (
            pytest.raises(SystemExit, match=f"port {port} .* in use.*--port N.*BIKES_PORT"),
            jobs._serving(Context(), port),
        ):
            pass
        assert time.monotonic() - started < 10
    assert not (workspace / "predictions.db").exists()  # no service was started


def _children(pid: int) -> list[int]:
    """Every descendant of ``pid``, from /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = (entry / "stat").read_text()
            parents[int(entry.name)] = int(stat[stat.rfind(")") + 2 :].split()[1])
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        kids = [child for child, ppid in parents.items() if ppid == parent]
        found += kids
        frontier += kids
    return found


def _alive(pid: int) -> bool:
    """Running, not a zombie waiting to be reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2 :].split()[0] != "Z"


def _group(pid: int) -> int | None:
    with contextlib.suppress(ProcessLookupError):
        return os.getpgid(pid)
    return None


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads the process tree from /proc")
def test_invoke_mlflow_stopped_with_sigterm_leaves_no_server_or_worker(tmp_path: Path) -> None:
    port = free_port()
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    task = subprocess.Popen(
        [*INVOKE, "mlflow", "--port", str(port), "--store", store, "--grace", "30"],
        cwd=tmp_path,
        # Two uvicorn workers, not MLflow's default four: still a supervisor with several
        # workers to stop, at half the imports of MLflow (seconds each on a loaded machine).
        env={**clean_environment(), "MLFLOW_WORKERS": "2"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # our own group, to clean up whatever the test leaves
    )
    groups: set[int] = set()
    try:
        wait_until_up(f"http://127.0.0.1:{port}/health", task, lambda: "", timeout=240)
        tree = _children(task.pid)
        groups = {group for group in map(_group, tree) if group is not None}
        # the server, uvicorn's supervisor and workers (2, spawning), MLflow's job runner
        assert len(tree) >= 3, tree
        task.send_signal(signal.SIGTERM)
        task.wait(timeout=90)  # grace (30 s) and then some
        deadline = time.monotonic() + 10
        while [pid for pid in tree if _alive(pid)] and time.monotonic() < deadline:
            time.sleep(0.2)
        assert [pid for pid in tree if _alive(pid)] == []
        assert [g for g in groups if processes.group_members(g)] == []
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=5)
    finally:
        for group in {task.pid, *groups}:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(group, signal.SIGKILL)
        task.wait(timeout=30)


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads the process group from /proc")
def test_a_group_that_ignores_sigterm_is_killed_after_the_grace_period() -> None:
    """Children that ignore SIGTERM (the shell passes the ignored disposition on) are still
    gone after the grace period: stop_group falls back to SIGKILL and says so."""
    shell = subprocess.Popen(
        ["sh", "-c", "trap '' TERM; sleep 120 & sleep 120 & wait"], start_new_session=True
    )
    try:
        deadline = time.monotonic() + 30
        while len(processes.group_members(shell.pid)) < 3:
            assert time.monotonic() < deadline, "the shell did not start its children"
            time.sleep(0.1)
        members = processes.group_members(shell.pid)
        started = time.monotonic()
        assert processes.stop_group(shell.pid, grace=1.0) is False
        assert time.monotonic() - started < 15
        shell.wait(timeout=30)
        deadline = time.monotonic() + 10
        while [pid for pid in members if _alive(pid)] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [pid for pid in members if _alive(pid)] == []
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(shell.pid, signal.SIGKILL)
        shell.wait(timeout=30)


def mlflow_run(project_parameters: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """`mlflow run` on the repo's MLproject, in this environment, tracking into ``tmp_path``."""
    return subprocess.run(
        [
            *(sys.executable, "-m", "mlflow", "run", str(REPO), "--env-manager", "local"),
            *(part for parameter in project_parameters for part in ("-P", parameter)),
        ],
        cwd=tmp_path,
        env={**clean_environment(), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'runs.db'}"},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_mlflow_run_takes_overrides_and_turns_every_failure_into_1(tmp_path: Path) -> None:
    """The entry point's `extras` reach bikes as its own -e arguments (quotes and all); a
    config error, bikes' exit 2, comes out of `mlflow run` as 1, as the README says."""
    # `mlflow run` runs the entry point in the project's directory: paths must be absolute.
    output = tmp_path / "my splits"
    extras = f"-e 'job.output_dir={output}' -e job.source={REPO / 'data' / 'hour.csv'}"
    done = mlflow_run([f"conf_file={REPO / 'confs' / 'data.yaml'}", f"extras={extras}"], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.name for p in output.iterdir()) == [
        "production.parquet",
        "test.parquet",
        "train.parquet",
    ]
    assert not (REPO / "job.output_dir").exists()
    # Without extras (its default, empty), as before the parameter existed.
    config = tmp_path / "data.yaml"
    config.write_text(
        f"job:\n  KIND: DataJob\n  source: {REPO / 'data' / 'hour.csv'}\n"
        f"  contract: {REPO / 'confs' / 'bikes-contract.yaml'}\n  output_dir: {tmp_path / 'b'}\n"
    )
    plain = mlflow_run([f"conf_file={config}"], tmp_path)
    assert plain.returncode == 0, plain.stderr[-3000:]
    assert (tmp_path / "b" / "train.parquet").is_file()
    failed = mlflow_run(["conf_file=confs/data.yaml", "extras=-e job.no_such_key=1"], tmp_path)
    assert "bikes: error: invalid config" in failed.stderr, failed.stderr[-3000:]
    assert failed.returncode == 1
