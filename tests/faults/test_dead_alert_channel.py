"""A dead alert channel: monitoring fires an alert at a webhook that answers 500.

The alert must not count as sent: the run exits 6, the cooldown is not written, and the next
run, with the webhook answering again, delivers it exactly once; a third run sends nothing
(now the cooldown holds). The webhook is a real local HTTP server counting every POST.
Counted as alerts: acknowledged (fired by the first run), stored (delivered: a 2xx answer),
lost (fired, never delivered), duplicated (delivered more than once).
"""

from __future__ import annotations

import http.server
import json
import threading
import typing as T
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.conftest import clean_environment, run_bikes
from tests.faults.harness import Counts, report

pytestmark = pytest.mark.faults

RETRIES = 2  # within one run: 1 + RETRIES attempts before the alert waits for the next run


def _cooldowns(uri: str) -> int:
    """Rows of ``monitoring_alerts``: the alerts recorded as delivered (their cooldown)."""
    engine = sa.create_engine(uri)
    try:
        if not sa.inspect(engine).has_table("monitoring_alerts"):
            return -1  # the run stopped before it made its tables
        with engine.connect() as connection:
            return int(
                connection.execute(sa.text("SELECT count(*) FROM monitoring_alerts")).scalar_one()
            )
    finally:
        engine.dispose()


class _Webhook(http.server.ThreadingHTTPServer):
    """Answers every POST with ``status`` and keeps (status, body) of each."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.status = 500
        self.posts: list[tuple[int, dict[str, T.Any]]] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hook"

    def answered(self, status: int) -> list[dict[str, T.Any]]:
        """The alerts of every POST that was answered ``status``."""
        with self.lock:
            return [a for code, body in self.posts if code == status for a in body["alerts"]]


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Webhook

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        with self.server.lock:
            status = self.server.status
            self.server.posts.append((status, body))
        self.send_response(status)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: T.Any) -> None:
        pass


def test_a_dead_alert_channel_exits_6_and_the_next_run_delivers_once(
    production_store: str, services: dict[str, T.Any], tmp_path: Path
) -> None:
    webhook = _Webhook()
    threading.Thread(target=webhook.serve_forever, daemon=True).start()
    config = tmp_path / "monitoring.yaml"
    alerts_db = f"sqlite:///{tmp_path / 'alerts.db'}"
    # The production store is shared by the session: the alert tables go to a store of ours.
    config.write_text(
        "job:\n  KIND: MonitoringJob\n"
        f"  current: {{KIND: StoreReader, uri: '{production_store}', start: '2012-12-01', end: '2012-12-08'}}\n"
        f"  metrics_store_uri: {alerts_db}\n"
        f"  results_path: {tmp_path / 'm.json'}\n"
        f"  report_path: {tmp_path / 'm.html'}\n"
        "  alerts: [{check: dataset_drift_share, threshold: 0.5, severity: critical}]\n"
        f"  channels: [{{KIND: webhook, url: '{webhook.url}', timeout: 30, retries: {RETRIES}, backoff: 0.1}}]\n"
        "  fail_on: never\n"
    )
    args = [
        str(config),
        "-e",
        f"job.mlflow_service.tracking_uri={services['mlflow_service'].tracking_uri}",
    ]
    try:
        down = run_bikes(args, cwd=tmp_path, env=clean_environment())
        attempts = len(webhook.posts)
        cooldowns_while_down = _cooldowns(alerts_db)
        fired = {(a["check"], a["column"]) for a in webhook.answered(500)}
        webhook.status = 200
        up = run_bikes(args, cwd=tmp_path, env=clean_environment())
        delivered = webhook.answered(200)
        cooldowns_when_up = _cooldowns(alerts_db)
        again = run_bikes(args, cwd=tmp_path, env=clean_environment())
    finally:
        webhook.shutdown()
        webhook.server_close()
    keys = [(a["check"], a["column"]) for a in webhook.answered(200)]
    counts = Counts(
        acknowledged=len(fired),
        stored=len(set(keys)),
        lost=len(fired - set(keys)),
        duplicated=len(keys) - len(set(keys)),
        unacknowledged=len(set(keys) - fired),
    )
    line = report(
        "dead alert channel",
        counts,
        exits=[down.returncode, up.returncode, again.returncode],
        attempts_while_down=attempts,
        cooldowns=[cooldowns_while_down, cooldowns_when_up],
        posts=len(webhook.posts),
    )
    outputs = "\n".join(
        f"--- run {n} (exit {run.returncode}) ---\n{run.stderr[-2500:]}"
        for n, run in enumerate((down, up, again), start=1)
    )
    assert down.returncode == 6, line + "\n" + outputs
    assert "bikes: alerts undelivered" in down.stderr, line + "\n" + outputs
    assert fired == {("dataset_drift_share", "*")}, line
    assert attempts == 1 + RETRIES, line  # retried within the run, then kept for the next
    assert cooldowns_while_down == 0, line  # not recorded as delivered
    assert up.returncode == 0, line + "\n" + outputs
    assert len(delivered) == 1, line  # the next run delivers it, once
    assert cooldowns_when_up == 1, line
    assert again.returncode == 0, line + "\n" + outputs
    assert len(webhook.posts) == attempts + 1, line  # the third run: the cooldown holds
    assert counts == Counts(1, 1, 0, 0, 0), line
