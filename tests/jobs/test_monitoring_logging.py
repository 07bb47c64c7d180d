"""The monitoring job's MLflow run: every window's metrics at its step, the status tags and
both artifacts, logged in one batch beside the writes (real MLflow on SQLite, a real store)."""

from __future__ import annotations

import math
import time
import typing as T
from pathlib import Path

import mlflow
import pytest

from bikes.core.monitoring import long_rows
from bikes.io.store import Store
from bikes.jobs.monitoring import _metric_name, _metrics
from tests.conftest import started
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
