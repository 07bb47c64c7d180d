"""The monitoring job on real data: the champion's reference, a real store, real MLflow."""

from __future__ import annotations

import http.server
import json
import threading
import typing as T
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from bikes import scripts
from bikes.core.errors import InputError, MonitoringFindingError
from bikes.io.monitoring import MonitoringTables
from bikes.io.store import Store
from bikes.jobs.monitoring import MonitoringJob
from tests.conftest import started


def _job(services: dict[str, T.Any], tmp_path: Path, **config: T.Any) -> MonitoringJob:
    return MonitoringJob.model_validate(
        {
            "results_path": str(tmp_path / "monitoring.json"),
            "report_path": str(tmp_path / "monitoring.html"),
            "channels": [],
            **services,
            **config,
        }
    )


def _monthly_backfill(uri: str) -> dict[str, str]:
    """The production half of 2012, one window per month."""
    return {
        "KIND": "StoreReader",
        "uri": uri,
        "start": "2012-07-01",
        "end": "2013-01-01",
        "step": "MS",
    }


def test_backfill_flags_the_2012_growth_and_fills_the_metrics_table(
    production_store: str, services: dict[str, T.Any], tmp_path: Path
) -> None:
    current = _monthly_backfill(production_store)
    with _job(services, tmp_path, current=current) as job:
        result = job.run()
    document = json.loads((tmp_path / "monitoring.json").read_text())
    windows = document["windows"]
    assert [w["window"]["start"][:7] for w in windows] == [f"2012-{m:02d}" for m in range(7, 13)]
    assert document["status"] == result["status"] == "detected"
    for window in windows:
        assert set(window) >= {
            "status",
            "data_quality",
            "data_drift",
            "prediction_drift",
            "performance",
            "segments",
            "service",
            "alerts",
            "window",
        }
        performance = window["performance"]
        assert 0.75 < performance["label_coverage"] < 0.85
        # Demand grew in 2012: errors well above the training reference's in every month.
        assert performance["rmse_relative_change"] > 0.2
        assert performance["degraded"]
        assert window["prediction_drift"]["drift"]
        assert window["data_drift"]["columns"]["yr"]["drift"]  # 2012 only: yr=1 throughout
        assert window["service"]["latency_ms"]["p50"] == pytest.approx(9.5, abs=0.6)
    tables = MonitoringTables(Store(production_store))
    first = tables.read()
    assert len(first) > 100
    assert set(first["check"]) >= {
        "drift_score",
        "rmse",
        "label_coverage",
        "status",
        "missing_share",
        "segment_rmse",
    }
    with _job(services, tmp_path, current=current) as job:  # re-run: the same rows, replaced
        rerun = job.run()
    assert len(tables.read()) == len(first)
    assert all(not w["alerts"] for w in rerun["results"]["windows"])  # cooldown: fired once
    assert any(w["alerts"] for w in windows)
    with started(services["mlflow_service"]):
        run = mlflow.get_run(result["run_id"])
        history = mlflow.MlflowClient().get_metric_history(result["run_id"], "rmse")
    assert run.data.tags["status"] == "detected"
    assert [m.step for m in history] == list(range(6))


def test_a_shift_in_one_column_flags_that_column_only(
    champion: dict[str, T.Any], services: dict[str, T.Any], tmp_path: Path
) -> None:
    with started(services["mlflow_service"]) as service:
        client = service.client()
        tag = client.get_model_version("bikes", champion["model_version"]).tags["reference_data"]
        reference = pd.read_parquet(
            mlflow.artifacts.download_artifacts(tag, dst_path=str(tmp_path))
        )
    rng = np.random.default_rng(1)
    current = reference.sample(3000, random_state=1).reset_index(drop=True)
    same = current.copy()
    shifted = current.assign(hum=np.clip(current["hum"] - 0.25, 0, 1))
    blanked = current.assign(windspeed=current["windspeed"].mask(rng.random(len(current)) < 0.1))
    results = {}
    for name, frame in {"same": same, "shifted": shifted, "blanked": blanked}.items():
        frame.to_parquet(tmp_path / f"{name}.parquet")
        with _job(
            services,
            tmp_path,
            current={"KIND": "ParquetReader", "path": str(tmp_path / f"{name}.parquet")},
        ) as job:
            results[name] = job.run()["results"]
    flagged = {
        n: sorted(c for c, r in res["data_drift"]["columns"].items() if r["drift"])
        for n, res in results.items()
    }
    assert flagged["same"] == []
    assert flagged["shifted"] == ["hum"]
    assert results["same"]["status"] == "no_detection"
    assert results["shifted"]["status"] == "potential"
    assert results["blanked"]["data_quality"]["columns"]["windspeed"][
        "missing_share"
    ] == pytest.approx(blanked["windspeed"].isna().mean())
    assert results["blanked"]["data_quality"]["columns"]["hum"]["missing_share"] == 0
    assert results["shifted"]["data_drift"]["columns"]["hum"]["method"] == "wasserstein"


class _Hook(http.server.BaseHTTPRequestHandler):
    received: T.ClassVar[list[dict[str, T.Any]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        _Hook.received.append(json.loads(body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: T.Any) -> None:
        pass


def test_alerts_reach_webhooks_and_fail_on_exits_4(
    production_store: str,
    services: dict[str, T.Any],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/hook"
    monkeypatch.setenv("TEST_SLACK_URL", url)
    config = tmp_path / "monitoring.yaml"
    config.write_text(
        "job:\n  KIND: MonitoringJob\n"
        f"  current: {{KIND: StoreReader, uri: '{production_store}', start: '2012-12-01', end: '2012-12-08'}}\n"
        f"  results_path: {tmp_path / 'm.json'}\n"
        f"  report_path: {tmp_path / 'm.html'}\n"
        "  alerts: [{check: rmse_relative_change, threshold: 0.2, severity: critical}]\n"
        f"  channels: [{{KIND: log}}, {{KIND: webhook, url: '{url}'}}, {{KIND: slack, url_env: TEST_SLACK_URL}}]\n"
        "  fail_on: detected\n"
    )
    tracking = services["mlflow_service"].tracking_uri
    try:
        code = scripts.main([str(config), "-e", f"job.mlflow_service.tracking_uri={tracking}"])
    finally:
        server.shutdown()
    assert code == scripts.EXIT_MONITORING == 4
    assert (
        "bikes: monitoring: monitoring status detected (job.fail_on: detected)"
        in capsys.readouterr().err
    )
    webhook, slack = _Hook.received[-2:]
    assert webhook["alerts"][0]["check"] == "rmse_relative_change"
    assert webhook["alerts"][0]["severity"] == "critical"
    assert slack["text"].startswith("bikes monitoring\n*[critical]* rmse_relative_change")


def test_bad_inputs_are_named(
    production_store: str, services: dict[str, T.Any], tmp_path: Path
) -> None:
    empty = Store(f"sqlite:///{tmp_path / 'empty.db'}")
    empty.create()
    with (
        _job(services, tmp_path, current={"KIND": "StoreReader", "uri": empty.uri}) as job,
        pytest.raises(InputError, match="no predictions captured yet"),
    ):
        job.run()
    with (
        _job(
            services,
            tmp_path,
            current={"KIND": "StoreReader", "uri": production_store, "step": "1D"},
        ) as job,
        pytest.raises(InputError, match="needs start and end"),
    ):
        job.run()
    current = {"KIND": "StoreReader", "uri": production_store}
    with (
        _job(services, tmp_path, current=current, columns=["temp", "district"]) as job,
        pytest.raises(InputError, match="job.columns: district"),
    ):
        job.run()
    with (
        _job(services, tmp_path, current=current, fail_on="potential") as job,
        pytest.raises(MonitoringFindingError),
    ):
        job.run()


def test_the_html_report_renders_in_headless_chromium(
    production_store: str, services: dict[str, T.Any], tmp_path: Path
) -> None:
    import shutil
    import subprocess

    current = _monthly_backfill(production_store)
    with _job(services, tmp_path, current=current) as job:
        result = job.run()
    report = tmp_path / "monitoring.html"
    text = report.read_text()
    assert len(text) < 2_000_000  # binned charts: small whatever the row count
    # Performance over time, then one chart per column: 12 features, prediction and cnt.
    assert text.count("<svg") == 1 + 14
    assert "aria-label='RMSE per window against the reference'" in text
    assert "<text x='160.0' y='14' text-anchor='middle' font-size='11' class='drift'>yr" in text
    with started(services["mlflow_service"]):
        names = {
            a.path for a in mlflow.MlflowClient().list_artifacts(result["run_id"], "monitoring")
        }
    assert names == {"monitoring/monitoring.html", "monitoring/monitoring.json"}
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    assert browser, "Debian's chromium is installed by .ci/run"
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'chromium'}",
        "--enable-logging=stderr",
        "--v=0",
    ]
    dom = subprocess.run(
        [browser, *flags, "--dump-dom", report.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert 'data-ready="yes"' in dom.stdout  # the page's script ran to its end
    assert "Uncaught" not in dom.stderr
    assert ">detected</span>" in dom.stdout
    shot = tmp_path / "report.png"
    subprocess.run(
        [browser, *flags, "--window-size=1200,1600", f"--screenshot={shot}", report.as_uri()],
        capture_output=True,
        timeout=120,
        check=True,
    )
    assert shot.stat().st_size > 10_000
