"""The monitoring job's MLflow run: every window's metrics at its step, the status tags and
both artifacts, logged in one batch beside the writes (real MLflow on SQLite, a real store),
in the job's process or by the MLflow worker process the CLI starts (``mlflow_worker``)."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
import typing as T
from pathlib import Path

import mlflow
import pytest

from bikes.core.monitoring import STATUSES, long_rows
from bikes.io.mlflow_worker import MlflowWorkerError
from bikes.io.services import MlflowService
from bikes.io.store import Store
from bikes.jobs.monitoring import MonitoringJob, _metric_name, _metrics
from tests.conftest import REPO, clean_environment, started
from tests.jobs.test_monitoring import _store_job, shop_store  # noqa: F401 (a fixture)


def _same(left: float, right: float) -> bool:
    return (math.isnan(left) and math.isnan(right)) or left == pytest.approx(right)


def test_each_window_is_a_step_of_one_finished_run_with_its_tags_and_artifacts(
    shop_store: Store,  # noqa: F811 (the fixture imported above)
    services: dict[str, T.Any],
    tmp_path: Path,
) -> None:
    """Two daily windows (1 and 2 March): the run holds each window's long rows as metrics
    at steps 0 and 1 (the values of the results JSON), the status and alerts_undelivered
    tags, the model's name, and the results and report exactly as written."""
    run_name = "logging-two-windows"
    job = _store_job(
        services, tmp_path, shop_store, start="2026-03-01", end="2026-03-03", step="1D"
    ).model_copy(update={"run_name": run_name})
    began = int(time.time() * 1000)
    with job:
        result = job.run()
    windows = result["results"]["windows"]
    assert len(windows) == 2
    expected: dict[str, dict[int, float]] = {}
    for step, window in enumerate(windows):
        for row in long_rows(window):
            expected.setdefault(_metric_name(row), {})[step] = row["value"]
    with started(services["mlflow_service"]) as service:
        client = service.client()
        run = client.get_run(result["run_id"])
        histories = {name: client.get_metric_history(run.info.run_id, name) for name in expected}
        artifacts = Path(
            mlflow.artifacts.download_artifacts(
                run_id=run.info.run_id, artifact_path="monitoring", dst_path=str(tmp_path / "dl")
            )
        )
    assert run.info.status == "FINISHED"
    assert run.info.run_name == run_name
    tags = run.data.tags
    assert tags["status"] == result["status"]
    assert tags["alerts_undelivered"] == "0"
    assert tags["model_name"] == "shop"
    assert tags["mlflow.runName"] == run_name
    assert {"mlflow.user", "mlflow.source.name", "mlflow.source.type"} <= set(tags)
    assert set(run.data.metrics) == set(expected)  # no more, no fewer names
    for name, steps in expected.items():
        logged = {metric.step: metric.value for metric in histories[name]}
        assert set(logged) == set(steps), name
        assert all(_same(logged[step], value) for step, value in steps.items()), name
        assert all(metric.timestamp >= began for metric in histories[name])
    assert sorted(p.name for p in artifacts.iterdir()) == ["monitoring.html", "monitoring.json"]
    for name in ("monitoring.html", "monitoring.json"):
        assert (artifacts / name).read_bytes() == (tmp_path / name).read_bytes()


def test_a_windows_metrics_are_one_per_name_the_last_row_winning_at_its_step() -> None:
    """Two rows whose names clean to the same metric (``a b`` and ``a_b``) give one metric,
    the later row's value, as the dict ``mlflow.log_metrics`` was given did."""
    rows = [
        {"check": "drift_score", "column": "a b", "value": 0.1},
        {"check": "drift_score", "column": "a_b", "value": 0.2},
        {"check": "status", "column": "*", "value": 1.0},
        {"check": "missing_share", "column": "x", "value": float("nan")},
    ]
    before = int(time.time() * 1000)
    metrics = _metrics(rows, 3)
    after = int(time.time() * 1000)
    assert [(m.key, m.step) for m in metrics] == [
        ("drift_score.a_b", 3),
        ("status", 3),
        ("missing_share.x", 3),
    ]
    assert metrics[0].value == 0.2
    assert math.isnan(metrics[2].value)
    assert all(before <= m.timestamp <= after for m in metrics)


def _in_worker(job: MonitoringJob, tmp_path: Path, name: str) -> MonitoringJob:
    """The job as the CLI runs it: MLflow in a worker process (a copy of the session's
    service, so the shared one stays synchronous), its own output files."""
    service = job.mlflow_service.model_copy()
    service.defer_start(worker=True)
    return job.model_copy(
        update={
            "mlflow_service": service,
            "results_path": str(tmp_path / f"{name}.json"),
            "report_path": str(tmp_path / f"{name}.html"),
            "run_name": name,
        }
    )


def _logged(
    service: MlflowService, run_id: str, tmp_path: Path
) -> tuple[T.Any, dict[str, list[tuple[int, float]]], dict[str, bytes]]:
    """A run as stored: the run, each metric's (step, value) history, the artifacts' bytes."""
    with started(service) as running:
        client = running.client()
        run = client.get_run(run_id)
        histories = {
            name: sorted((m.step, m.value) for m in client.get_metric_history(run_id, name))
            for name in run.data.metrics
        }
        folder = Path(
            mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path="monitoring", dst_path=str(tmp_path / run_id)
            )
        )
    return run, histories, {p.name: p.read_bytes() for p in folder.iterdir()}


def test_the_worker_process_logs_the_same_run_as_the_job_in_process(
    shop_store: Store,  # noqa: F811 (the fixture imported above)
    services: dict[str, T.Any],
    tmp_path: Path,
) -> None:
    """Two windows, logged once in process and once by the MLflow worker process: the same
    tags (MLflow's source, user and git tags included), the same metrics at the same steps,
    each run's artifacts exactly the files its job wrote; the worker is gone afterwards."""
    base = _store_job(
        services, tmp_path, shop_store, start="2026-03-01", end="2026-03-03", step="1D"
    )
    here = base.model_copy(
        update={
            "run_name": "same-run",
            "results_path": str(tmp_path / "here.json"),
            "report_path": str(tmp_path / "here.html"),
        }
    )
    with here:
        in_process = here.run()
    worker_job = _in_worker(base, tmp_path, "same-run")
    began = int(time.time() * 1000)
    with worker_job:
        pid = worker_job.mlflow_service.worker_pid
        assert pid is not None
        in_worker = worker_job.run()
        assert worker_job.mlflow_service.worker_pid is None  # finished with the run
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # exited and reaped, not left behind
    assert in_worker["run_id"] != in_process["run_id"]
    service = services["mlflow_service"]
    run_here, metrics_here, files_here = _logged(service, in_process["run_id"], tmp_path)
    run_there, metrics_there, files_there = _logged(service, in_worker["run_id"], tmp_path)
    assert run_there.info.status == "FINISHED"
    assert run_there.info.experiment_id == run_here.info.experiment_id
    assert run_there.data.tags == run_here.data.tags
    assert {"mlflow.source.name", "mlflow.user", "status", "model_name"} <= set(run_here.data.tags)
    assert metrics_there.keys() == metrics_here.keys()
    assert len(metrics_here) > 5
    for name, history in metrics_here.items():
        assert [step for step, _ in metrics_there[name]] == [0, 1] == [s for s, _ in history]
        assert all(
            _same(a, b) for (_, a), (_, b) in zip(metrics_there[name], history, strict=True)
        ), name
    with started(service) as running:
        stamps = running.client().get_metric_history(in_worker["run_id"], "status")
    assert all(metric.timestamp >= began for metric in stamps)
    assert sorted(files_here) == ["here.html", "here.json"]
    assert sorted(files_there) == ["same-run.html", "same-run.json"]
    for name, data in (files_here | files_there).items():
        assert data == (tmp_path / name).read_bytes(), name


def test_the_worker_resumes_the_run_of_mlflow_run_id(
    shop_store: Store,  # noqa: F811 (the fixture imported above)
    services: dict[str, T.Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Inside ``mlflow run`` (``MLFLOW_RUN_ID`` set, inherited by the worker), the job logs
    into that run, as in process."""
    service = services["mlflow_service"]
    with started(service):
        project_run = mlflow.start_run(run_name="project")
        run_id = project_run.info.run_id
        mlflow.end_run()
    monkeypatch.setenv("MLFLOW_RUN_ID", run_id)
    job = _in_worker(_store_job(services, tmp_path, shop_store), tmp_path, "resumed")
    with job:
        result = job.run()
    monkeypatch.delenv("MLFLOW_RUN_ID")
    assert result["run_id"] == run_id
    run, metrics, files = _logged(service, run_id, tmp_path)
    assert run.info.status == "FINISHED"
    assert run.data.tags["status"] == result["status"]
    assert "status" in metrics
    assert sorted(files) == ["resumed.html", "resumed.json"]


def test_a_killed_worker_fails_the_job_with_a_clear_error_before_any_write(
    shop_store: Store,  # noqa: F811 (the fixture imported above)
    services: dict[str, T.Any],
    tmp_path: Path,
) -> None:
    """The worker killed (SIGKILL) while it opens MLflow: the job stops at ``ready()``
    within seconds, naming the signal, and writes neither results nor report."""
    job = _in_worker(_store_job(services, tmp_path, shop_store), tmp_path, "killed")
    with job:
        pid = job.mlflow_service.worker_pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        began = time.monotonic()
        with pytest.raises(MlflowWorkerError, match=rf"MLflow process \(pid {pid}\).*signal 9"):
            job.run()
        assert time.monotonic() - began < 60
    assert not (tmp_path / "killed.json").exists()
    assert not (tmp_path / "killed.html").exists()


def _cli(config: dict[str, T.Any], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """``bikes <config>`` in a real process; it prints whether it imported MLflow itself."""
    path = tmp_path / "monitoring.yaml"
    path.write_text(json.dumps({"job": config}))
    probe = (
        "import sys\nfrom bikes import scripts\ncode = scripts.main([sys.argv[1]])\n"
        "print('mlflow imported:', 'mlflow' in sys.modules)\nsys.exit(code)"
    )
    return subprocess.run(
        [sys.executable, "-c", probe, str(path)],
        cwd=REPO,
        env=clean_environment(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _parquet_config(tmp_path: Path, tracking_uri: str, **extra: T.Any) -> dict[str, T.Any]:
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    for name, shift in (("reference", 0.0), ("current", 1.0)):
        frame = pd.DataFrame({"x": rng.normal(shift, 1, 500), "colour": rng.choice(3, 500)})
        frame.to_parquet(tmp_path / f"{name}.parquet")
    return {
        "KIND": "MonitoringJob",
        "contract": {"features": [{"name": "x"}, {"name": "colour", "kind": "categorical"}]},
        "reference": {"KIND": "ParquetReader", "path": str(tmp_path / "reference.parquet")},
        "current": {"KIND": "ParquetReader", "path": str(tmp_path / "current.parquet")},
        "results_path": str(tmp_path / "out" / "monitoring.json"),
        "report_path": str(tmp_path / "out" / "monitoring.html"),
        "channels": [],
        "mlflow_service": {
            "tracking_uri": tracking_uri,
            "artifact_root": str(tmp_path / "mlartifacts"),
            **extra,
        },
    }


def test_from_the_cli_the_job_never_imports_mlflow_and_its_run_is_logged(tmp_path: Path) -> None:
    """The command line puts MLflow in the worker process: the job's own process ends
    without MLflow in ``sys.modules``, and the run is in the store, named after the job's
    main file (not the worker's), with both artifacts."""
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    done = _cli(_parquet_config(tmp_path, tracking), tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "mlflow imported: False" in done.stdout
    document = json.loads((tmp_path / "out" / "monitoring.json").read_text())
    service = MlflowService(tracking_uri=tracking, artifact_root=str(tmp_path / "mlartifacts"))
    with started(service):
        runs = mlflow.search_runs(experiment_names=["bikes"], output_format="list")
    assert len(runs) == 1
    run, metrics, files = _logged(service, runs[0].info.run_id, tmp_path)
    assert run.info.status == "FINISHED"
    assert run.data.tags["status"] == document["status"]
    assert run.data.tags["mlflow.source.name"] == "-c"  # the job's argv[0], not the worker's
    assert metrics["status"] == [(0, float(STATUSES.index(document["status"])))]
    assert files["monitoring.json"] == (tmp_path / "out" / "monitoring.json").read_bytes()


def test_from_the_cli_an_unusable_store_fails_the_job_before_any_write(tmp_path: Path) -> None:
    """A tracking server that does not answer: exit 2 with the in-process start's message,
    and neither results nor report exist (the job computed, but wrote nothing)."""
    config = _parquet_config(tmp_path, "http://127.0.0.1:9", timeout=1)
    done = _cli(config, tmp_path)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "bikes: error: MLflow tracking at http://127.0.0.1:9: unreachable within 1 s" in (
        done.stderr
    )
    assert not (tmp_path / "out" / "monitoring.json").exists()
    assert not (tmp_path / "out" / "monitoring.html").exists()
