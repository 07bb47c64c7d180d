"""The compose stack's Prometheus config against the real service: a real Prometheus (Debian's
binary, unpacked by .ci/run) scrapes the service's /metrics, and every PromQL expression of the
dashboards and alert rules runs on what it scraped."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import time
import typing as T
from pathlib import Path

import httpx
import pandas as pd
import yaml

from bikes.io.capture import CaptureWriter
from bikes.io.store import Store
from bikes.serving.app import create_app
from bikes.serving.models import ModelSlot
from tests.conftest import REPO, started, wait_until_up
from tests.serving.test_app import _records, free_port, serving

DOCKER = REPO / "docker"
PROMETHEUS_CONFIG = DOCKER / "prometheus" / "prometheus.yml"
UNPACKED = Path("/opt/bikes-ci/prometheus/usr/bin")  # where .ci/run unpacks Debian's package


def _binary(name: str) -> str:
    found = shutil.which(name) or (str(UNPACKED / name) if (UNPACKED / name).is_file() else None)
    assert found, f"{name}: .ci/run unpacks Debian's prometheus package into {UNPACKED.parent}"
    return found


def promql_expressions() -> list[tuple[str, str]]:
    """(where, expression) for every Prometheus query of the dashboards and alert rules."""
    found = []
    for path in sorted((DOCKER / "grafana" / "dashboards").glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel["targets"]:
                if target["datasource"]["uid"] == "bikes-prometheus":
                    found.append((f"{path.name} / {panel['title']}", target["expr"]))
    rules = yaml.safe_load(
        (DOCKER / "grafana" / "provisioning" / "alerting" / "rules.yaml").read_text()
    )
    for rule in rules["groups"][0]["rules"]:
        for query in rule["data"]:
            if query["datasourceUid"] == "bikes-prometheus":
                found.append((f"alert {rule['title']}", query["model"]["expr"]))
    return found


def test_the_config_is_valid_and_targets_the_compose_service() -> None:
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    [job] = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"][0]["targets"] == ["service:8000"]
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    assert "service" in compose["services"]
    serving = yaml.safe_load((REPO / "confs" / "serving.yaml").read_text())
    assert serving["job"]["port"] == 8000
    done = subprocess.run(
        [_binary("promtool"), "check", "config", str(PROMETHEUS_CONFIG)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@contextlib.contextmanager
def prometheus_scraping(target: str, work: Path) -> T.Iterator[httpx.Client]:
    """Prometheus with the repo's config, its target swapped for the local service."""
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    config["global"]["scrape_interval"] = "1s"
    config["scrape_configs"][0]["static_configs"][0]["targets"] = [target]
    (work / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = (work / "prometheus.log").open("w")
    process = subprocess.Popen(
        [
            _binary("prometheus"),
            f"--config.file={work / 'prometheus.yml'}",
            f"--storage.tsdb.path={work / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={k: v for k, v in os.environ.items() if not k.startswith(("http_", "HTTP"))},
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until_up(f"{base}/-/ready", process, (work / "prometheus.log").read_text, timeout=60)
        with httpx.Client(base_url=base, timeout=60) as client:
            yield client
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def _query(prometheus: httpx.Client, expression: str) -> list[dict[str, T.Any]]:
    answer = prometheus.get("/api/v1/query", params={"query": expression}).json()
    assert answer["status"] == "success", f"{expression}: {answer}"
    return T.cast(list[dict[str, T.Any]], answer["data"]["result"])


def test_prometheus_scrapes_the_service_and_every_dashboard_query_runs(
    champion: dict[str, T.Any],
    services: dict[str, T.Any],
    test_frame: pd.DataFrame,
    tmp_path: Path,
) -> None:
    store = Store(f"sqlite:///{tmp_path / 'predictions.db'}")
    store.create()
    writer = CaptureWriter(store, spool_path=tmp_path / "spool.jsonl")
    with started(services["mlflow_service"]) as service:
        slot = ModelSlot(service.client(), "models:/bikes@champion", poll_interval=0)
    with serving(create_app(slot, store, writer)) as client:
        target = str(client.base_url).removeprefix("http://").rstrip("/")
        with prometheus_scraping(target, tmp_path) as prometheus:
            deadline = time.monotonic() + 60
            while not any(r["value"][1] == "1" for r in _query(prometheus, "up")):
                assert time.monotonic() < deadline, "the service was never scraped up"
                time.sleep(0.5)
            records = _records(test_frame.head(8))
            for _ in range(20):
                assert client.post("/invocations", json={"dataframe_records": records}).is_success
                assert (
                    client.post("/invocations", json={"dataframe_records": [{}]}).status_code == 422
                )
                time.sleep(0.2)
            expressions = promql_expressions()
            # Scraped until every query has data (a rate needs two samples): polled, since a
            # loaded machine scrapes late.
            deadline = time.monotonic() + 60
            while not all(
                _query(prometheus, e.replace("$__rate_interval", "1m")) for _, e in expressions
            ):
                assert time.monotonic() < deadline, "some dashboard query never had data"
                time.sleep(0.5)
            names = set(prometheus.get("/api/v1/label/__name__/values").json()["data"])
            assert len(expressions) >= 8
            for where, expression in expressions:
                used = set(re.findall(r"\bbikes_[a-z_]+", expression))
                assert used, where
                assert used <= names, f"{where}: {used - names} not scraped"
                result = _query(prometheus, expression.replace("$__rate_interval", "1m"))
                assert result, f"{where}: no data for {expression}"
            errors = _query(
                prometheus,
                "sum(rate(bikes_request_errors_total[1m])) / sum(rate(bikes_requests_total[1m]))",
            )
            assert 0.3 < float(errors[0]["value"][1]) < 0.7  # one bad request for each good one
