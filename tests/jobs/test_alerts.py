"""Alert delivery against real HTTP servers: retried with backoff, kept when undelivered,
sent again on the next run, reported in the results and the exit code."""

from __future__ import annotations

import contextlib
import http.server
import json
import re
import sys
import threading
import typing as T
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from bikes import scripts
from bikes.core.errors import AlertDeliveryError
from bikes.io.monitoring import Channel, MonitoringTables
from bikes.io.store import Store
from bikes.jobs.monitoring import MonitoringJob
from tests.serving.test_app import free_port

WINDOW = {"start": "2012-12-01", "end": "2012-12-08"}  # 6 of 9 counted columns drift: fires
RULE = {"check": "dataset_drift_share", "threshold": 0.5, "severity": "critical"}


@contextlib.contextmanager
def hook(statuses: list[int]) -> T.Iterator[tuple[str, list[dict[str, T.Any]], list[int]]]:
    """A real webhook: answers the scripted ``statuses`` in turn (200 once they run out);
    yields its URL, the bodies it received and the status it gave each."""
    received: list[dict[str, T.Any]] = []
    answered: list[int] = []
    script = list(statuses)
    lock = threading.Lock()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["content-length"])))
            with lock:
                status = script.pop(0) if script else 200
                received.append(body)
                answered.append(status)
            self.send_response(status)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: T.Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/hooks/bikes", received, answered
    finally:
        server.shutdown()
        server.server_close()


def _job(
    services: dict[str, T.Any],
    tmp_path: Path,
    store: str,
    channels: list[dict[str, T.Any]],
    alerts: list[dict[str, T.Any]] = [RULE],  # noqa: B006 (never mutated)
) -> MonitoringJob:
    return MonitoringJob.model_validate(
        {
            "current": {"KIND": "StoreReader", "uri": store, **WINDOW},
            # The alert tables of the test's own: the session's store is shared.
            "metrics_store_uri": f"sqlite:///{tmp_path / 'metrics.db'}",
            "results_path": str(tmp_path / "monitoring.json"),
            "report_path": str(tmp_path / "monitoring.html"),
            "alerts": alerts,
            "channels": channels,
            **services,
        }
    )


def _table(tmp_path: Path, name: str) -> pd.DataFrame:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'metrics.db'}")
    try:
        with engine.connect() as connection:
            return pd.read_sql_table(name, connection)
    finally:
        engine.dispose()


def test_a_500_then_200_is_delivered_by_a_retry_within_the_run(
    production_store: str, services: dict[str, T.Any], tmp_path: Path
) -> None:
    with hook([500]) as (url, received, answered):
        channel = {"KIND": "webhook", "url": url, "retries": 2, "backoff": 0.05}
        with _job(services, tmp_path, production_store, [channel]) as job:
            result = job.run()
    assert answered == [500, 200]
    assert received[0] == received[1]  # the same message, sent again
    assert [a["check"] for a in received[1]["alerts"]] == ["dataset_drift_share"]
    assert result["results"]["alerts_undelivered"] == []
    assert result["results"]["alerts"][0]["delivered"] is True
    assert len(_table(tmp_path, "monitoring_alerts")) == 1  # the cooldown, once delivered
    assert _table(tmp_path, "monitoring_alerts_undelivered").empty


def test_an_alert_the_channel_refuses_is_kept_reported_and_sent_on_the_next_run(
    production_store: str, services: dict[str, T.Any], tmp_path: Path
) -> None:
    """Run 1: three 500s (the try and two retries): no cooldown, a row in the undelivered
    table, listed in the results, AlertDeliveryError (exit 6). Run 2: the channel is back:
    the kept alert goes out (once), the cooldown is written. Run 3: nothing fires again."""
    with hook([500, 500, 500]) as (url, received, answered):
        channel = {"KIND": "slack", "url": url, "retries": 2, "backoff": 0.05}
        with (
            _job(services, tmp_path, production_store, [channel]) as job,
            pytest.raises(AlertDeliveryError) as caught,
        ):
            job.run()
        assert answered == [500, 500, 500]
        document = json.loads((tmp_path / "monitoring.json").read_text())
        (undelivered,) = document["alerts_undelivered"]
        assert undelivered["rule"] == "dataset_drift_share:*>=0.5"
        assert undelivered["channel"] == "slack http://127.0.0.1:{}/hooks/***".format(
            url.split(":")[2].split("/")[0]
        )
        assert undelivered["error"] == "HTTP 500 Internal Server Error"
        assert undelivered["runs_attempted"] == 1
        assert document["alerts"][0]["delivered"] is False
        assert str(caught.value) == (
            f"1 alert(s) not delivered to {undelivered['channel']} (HTTP 500 Internal Server "
            "Error); kept in monitoring_alerts_undelivered and sent again on the next run"
        )
        assert _table(tmp_path, "monitoring_alerts").empty  # no cooldown before delivery
        kept = _table(tmp_path, "monitoring_alerts_undelivered")
        assert kept[["rule", "attempts", "last_error"]].to_dict("records") == [
            {
                "rule": "dataset_drift_share:*>=0.5:*",
                "attempts": 1,
                "last_error": "HTTP 500 Internal Server Error",
            }
        ]

        with _job(services, tmp_path, production_store, [channel]) as job:
            second = job.run()
        assert answered == [500, 500, 500, 200]
        assert received[3] == received[0]  # the kept alert, as it first fired
        assert received[3]["text"].startswith("bikes monitoring\n*[critical]* bikes: ")
        assert second["results"]["alerts"] == []  # not fired twice for the window
        assert second["results"]["alerts_undelivered"] == []
        assert len(_table(tmp_path, "monitoring_alerts")) == 1
        assert _table(tmp_path, "monitoring_alerts_undelivered").empty

        with _job(services, tmp_path, production_store, [channel]) as job:
            third = job.run()
        assert len(answered) == 4  # the cooldown holds: nothing sent
        assert third["results"]["alerts"] == []


def test_a_closed_port_exits_6_and_a_finding_exiting_4_wins(
    production_store: str,
    services: dict[str, T.Any],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    port = free_port()  # nothing listens there
    config = tmp_path / "monitoring.yaml"
    config.write_text(
        "job:\n  KIND: MonitoringJob\n"
        f"  current: {{KIND: StoreReader, uri: '{production_store}', start: '{WINDOW['start']}', "
        f"end: '{WINDOW['end']}'}}\n"
        f"  metrics_store_uri: 'sqlite:///{tmp_path / 'metrics.db'}'\n"
        f"  results_path: {tmp_path / 'm.json'}\n"
        f"  report_path: {tmp_path / 'm.html'}\n"
        "  alerts: [{check: dataset_drift_share, threshold: 0.5, severity: critical}]\n"
        f"  channels: [{{KIND: webhook, url: 'http://127.0.0.1:{port}/hooks/s3cr3t', "
        "retries: 1, backoff: 0.05}]\n"
    )
    tracking = f"job.mlflow_service.tracking_uri={services['mlflow_service'].tracking_uri}"
    code = scripts.main([str(config), "-e", tracking])
    err = capsys.readouterr().err
    assert code == scripts.EXIT_UNDELIVERED == 6
    assert (
        f"bikes: alerts undelivered: 1 alert(s) not delivered to webhook "
        f"http://127.0.0.1:{port}/hooks/*** (ConnectError: "
    ) in err
    assert "s3cr3t" not in err
    # The same alert, still undelivered, with a finding at fail_on: the finding's 4 wins, and
    # the results still list the alert (tried on this run too).
    code = scripts.main([str(config), "-e", tracking, "-e", "job.fail_on=detected"])
    assert code == scripts.EXIT_MONITORING == 4
    document = json.loads((tmp_path / "m.json").read_text())
    assert [u["runs_attempted"] for u in document["alerts_undelivered"]] == [2]
    assert _table(tmp_path, "monitoring_alerts_undelivered")["attempts"].tolist() == [2]


def test_channels_name_no_secret_and_need_an_address(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = Channel(KIND="slack", url="https://hooks.slack.com/services/T1/B2/s3cr3t")
    assert secret.name == "slack https://hooks.slack.com/services/T1/B2/***"
    assert "s3cr3t" not in secret.key
    by_env = Channel(KIND="webhook", url_env="BIKES_TEST_HOOK")
    assert (by_env.name, by_env.key) == ("webhook $BIKES_TEST_HOOK", "webhook:env:BIKES_TEST_HOOK")
    with pytest.raises(ValueError, match="a slack channel needs url or url_env"):
        Channel(KIND="slack")


def test_an_older_alerts_table_keeps_its_cooldown(tmp_path: Path) -> None:
    """A ``monitoring_alerts`` an earlier bikes created (same layout, written before delivery
    existed) is used as it is; the undelivered table is added beside it."""
    store = Store(f"sqlite:///{tmp_path / 'old.db'}")
    with store.engine.begin() as connection:
        connection.execute(
            sa.text(
                "CREATE TABLE monitoring_alerts (model_name VARCHAR(200) NOT NULL, rule "
                "VARCHAR(200) NOT NULL, window_start DATETIME NOT NULL, window_end DATETIME "
                "NOT NULL, fired_at DATETIME NOT NULL, PRIMARY KEY (model_name, rule, "
                "window_start, window_end))"
            )
        )
        connection.execute(
            sa.text(
                "INSERT INTO monitoring_alerts VALUES ('bikes', 'status:*>=2:status', "
                "'2012-12-01 00:00:00.000000', '2012-12-08 00:00:00.000000', "
                "'2012-12-09 00:00:00.000000')"
            )
        )
    tables = MonitoringTables(store)
    tables.create()
    start, end = pd.Timestamp("2012-12-01").to_pydatetime(), pd.Timestamp("2012-12-08")
    assert tables.fired("status:*>=2:status", start, end.to_pydatetime())
    assert not tables.fired("status:*>=2:other", start, end.to_pydatetime())
    assert sa.inspect(store.engine).has_table("monitoring_alerts_undelivered")
    store.dispose()


def test_many_alerts_on_the_log_channel_are_one_warning_line_and_each_a_debug_line(
    production_store: str,
    services: dict[str, T.Any],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A drift score at or above 0 fires on every scored column: a dozen alerts for one
    window. The log says so in one warning line (counts by severity and check); each alert is
    a debug line, and each is in the results JSON."""
    from loguru import logger

    every_column = {"check": "drift_score", "threshold": 0.0, "severity": "warning"}
    debug: list[str] = []
    rules = [RULE, every_column]
    with _job(services, tmp_path, production_store, [{"KIND": "log"}], rules) as job:
        # after the job's logger service started (it replaces every sink), until it stops
        sink = logger.add(debug.append, level="DEBUG", format="{level} {message}")
        result = job.run()
    with contextlib.suppress(ValueError):  # gone if a later logger service replaced it
        logger.remove(sink)
    alerts = result["results"]["alerts"]
    drifting = [a for a in alerts if a["check"] == "drift_score"]
    assert len(drifting) >= 10
    assert len(alerts) == len(drifting) + 1
    err = capsys.readouterr().err
    assert [line for line in err.splitlines() if "ALERT" in line] == [
        line for line in err.splitlines() if "ALERTS: " in line
    ]
    (summary,) = [line for line in err.splitlines() if "ALERTS: " in line]
    assert summary.endswith(
        f"ALERTS: {len(alerts)} fired ({len(drifting)} warning, 1 critical): "
        f"drift_score x{len(drifting)}, dataset_drift_share x1; each in the results JSON, the "
        "monitoring_alerts table and the debug log"
    )
    details = [line.rstrip("\n") for line in debug if line.startswith("DEBUG ALERT [")]
    assert sorted(details) == sorted(
        f"DEBUG ALERT [{a['severity']}] {a['message']}" for a in alerts
    )


def test_alert_lines_never_share_a_line_with_a_progress_bar(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A progress bar drawn on stderr (as monitoring's windows bar is) is cleared before the
    alert lines and drawn again after: each log line starts a line of its own."""
    from tqdm import tqdm

    from bikes.io.services import LoggerService

    alerts = [
        {"severity": "warning", "check": "drift_score", "message": f"bikes: drift on c{i}"}
        for i in range(3)
    ]
    service = LoggerService(level="INFO", colorize=False)
    service.start()
    try:
        for one_or_many in (alerts[:1], alerts):
            bar = tqdm(total=10, desc="monitoring windows", file=sys.stderr, mininterval=0)
            bar.update(4)
            assert Channel(KIND="log").deliver(one_or_many) is None
            bar.update(6)
            bar.close()
    finally:
        service.stop()
    err = capsys.readouterr().err
    lines = [line.split("\r")[-1] for line in err.split("\n") if "ALERT" in line]
    assert len(lines) == 2
    assert all(re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} \| WARNING", ln) for ln in lines)
    assert "ALERT [warning] bikes: drift on c0" in lines[0]
    assert "ALERTS: 3 fired (3 warning): drift_score x3" in lines[1]
