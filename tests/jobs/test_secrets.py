"""Planted secrets never come out: real ``bikes`` runs with a password in the tracking URI,
the store URIs and the webhook URLs; every output scanned."""

from __future__ import annotations

import contextlib
import json
import time
import typing as T
from pathlib import Path

import mlflow
import sqlalchemy as sa

from bikes import scripts
from tests.conftest import clean_environment, postgres_database, run_bikes, started
from tests.io.test_services import answering
from tests.serving.test_app import free_port

HOOK_SECRET = "hooksecret-7Qx9"
HOOK_TOKEN = "querytoken-4Lm2"
TRACKING_PASSWORD = "trackpw-8Zr1"
STORE_PASSWORD = "storepw-3Kd5"
PLANTED = (HOOK_SECRET, HOOK_TOKEN, TRACKING_PASSWORD, STORE_PASSWORD)


def _with_password(uri: str, password: str) -> str:
    return sa.make_url(uri).set(password=password).render_as_string(hide_password=False)


def _found(text: str) -> list[str]:
    return [secret for secret in PLANTED if secret in text]


def test_no_planted_secret_reaches_any_output(
    production_store: str, services: dict[str, T.Any], tmp_path: Path
) -> None:
    tracking = services["mlflow_service"].tracking_uri
    closed = free_port()
    began_ms = int(time.time() * 1000)
    with contextlib.ExitStack() as stack:
        metrics_db = _with_password(
            stack.enter_context(postgres_database("bikes_secrets")), STORE_PASSWORD
        )  # trust authentication: the password is carried, never checked
        port, _ = stack.enter_context(answering(500))
        slack = f"https://hooks.slack.com/services/T0PLANT/B0PLANT/{HOOK_SECRET}"
        webhook = f"http://127.0.0.1:{port}/hooks/{HOOK_SECRET}?token={HOOK_TOKEN}"
        config = tmp_path / "monitoring.yaml"
        config.write_text(
            "job:\n  KIND: MonitoringJob\n"
            f"  current: {{KIND: StoreReader, uri: '{production_store}', start: '2012-12-01', "
            "end: '2012-12-08'}\n"
            f"  metrics_store_uri: '{metrics_db}'\n"
            f"  results_path: {tmp_path / 'm.json'}\n"
            f"  report_path: {tmp_path / 'm.html'}\n"
            "  alerts: [{check: dataset_drift_share, threshold: 0.5, severity: critical}]\n"
            f"  channels: [{{KIND: slack, url: '{slack}', retries: 1, backoff: 0.05}}, "
            f"{{KIND: webhook, url: '{webhook}', retries: 1, backoff: 0.05}}]\n"
            "  logger_service: {level: DEBUG}\n"
            f"  mlflow_service: {{tracking_uri: '{tracking}'}}\n"
        )
        # Slack is "down": its requests go to a proxy where nothing listens (no network needed).
        env = clean_environment() | {
            "HTTPS_PROXY": f"http://127.0.0.1:{closed}",
            "NO_PROXY": "127.0.0.1,localhost",
        }
        runs = {
            "alerts undelivered": run_bikes([str(config)], tmp_path, env),
            "tracking unreachable": run_bikes(
                [
                    str(config),
                    "-e",
                    f"job.mlflow_service.tracking_uri=http://bikes:{TRACKING_PASSWORD}@127.0.0.1:{closed}",
                    "-e",
                    "job.mlflow_service.timeout=2",
                ],
                tmp_path,
                env,
            ),
            "store unreachable": run_bikes(
                [
                    str(config),
                    "-e",
                    f"job.current.uri=postgresql+psycopg://bikes:{STORE_PASSWORD}@127.0.0.1:{closed}/bikes",
                ],
                tmp_path,
                env,
            ),
        }
        engine = sa.create_engine(metrics_db, poolclass=sa.pool.NullPool)
        with engine.connect() as connection:
            kept = [
                json.dumps(
                    [list(row) for row in connection.execute(sa.text(f"SELECT * FROM {t}"))],
                    default=str,
                )
                for t in ("monitoring_alerts", "monitoring_alerts_undelivered")
            ]
        engine.dispose()

    codes = {name: run.returncode for name, run in runs.items()}
    assert codes == {
        "alerts undelivered": scripts.EXIT_UNDELIVERED,
        "tracking unreachable": scripts.EXIT_INPUT,
        "store unreachable": scripts.EXIT_INPUT,
    }, {name: run.stderr[-2000:] for name, run in runs.items()}
    outputs = {
        f"{name} {stream}": getattr(run, stream)
        for name, run in runs.items()
        for stream in ("stdout", "stderr")
    }
    outputs["results JSON"] = (tmp_path / "m.json").read_text()
    outputs["report HTML"] = (tmp_path / "m.html").read_text()
    outputs["alert tables"] = "\n".join(kept)
    with started(services["mlflow_service"]):
        found = mlflow.search_runs(
            search_all_experiments=True,
            filter_string=f"attributes.start_time >= {began_ms}",
            output_format="list",
        )
        assert len(found) == 1  # the monitoring run; the others stopped before MLflow
        for run in found:
            outputs[f"MLflow run {run.info.run_id} tags and params"] = json.dumps(
                [run.data.tags, run.data.params]
            )
            artifacts = Path(
                mlflow.artifacts.download_artifacts(
                    run_id=run.info.run_id, dst_path=str(tmp_path / "artifacts")
                )
            )
            for path in artifacts.rglob("*"):
                if path.is_file():
                    outputs[f"MLflow artifact {path.name}"] = path.read_text()
    leaks = {name: _found(text) for name, text in outputs.items() if _found(text)}
    assert leaks == {}
    # The redacted forms are there: the outputs do name what failed.
    undelivered = json.loads(outputs["results JSON"])["alerts_undelivered"]
    assert sorted(u["channel"] for u in undelivered) == [
        f"slack {slack.replace(HOOK_SECRET, '***')}",
        f"webhook http://127.0.0.1:{port}/hooks/***?token=***",
    ]
    assert (
        f"MLflow tracking at http://bikes:***@127.0.0.1:{closed}: unreachable within 2 s"
        in outputs["tracking unreachable stderr"]
    )
    assert (
        f"store postgresql+psycopg://bikes:***@127.0.0.1:{closed}/bikes: unreachable"
        in outputs["store unreachable stderr"]
    )
    assert (
        "Alert channel slack https://hooks.slack.com/services/T0PLANT/B0PLANT/*** failed"
        in (outputs["alerts undelivered stderr"])
    )
