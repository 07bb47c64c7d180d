"""Durable acknowledgement: a 200 with prediction ids means the rows are kept (store or spool),
whatever fails after; and when they cannot be kept, a 503 instead, /health and /metrics say so."""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import signal
import subprocess
import threading
import time
import typing as T
from pathlib import Path

import httpx
import pandas as pd
import pytest

from bikes.io.capture import CaptureWriter
from bikes.io.store import Store
from bikes.serving.app import create_app
from bikes.serving.models import ModelSlot
from tests.conftest import clean_environment, serving_command, started, wait_until_up
from tests.serving.test_app import TIMEOUT, _records, free_port, serving

UNREACHABLE = "postgresql+psycopg://postgres@127.0.0.1:1/none?connect_timeout=1"


@pytest.fixture
def slot(champion: dict[str, T.Any], services: dict[str, T.Any]) -> T.Iterator[ModelSlot]:
    with started(services["mlflow_service"]) as service:
        yield ModelSlot(service.client(), "models:/bikes@champion", poll_interval=0)


def _concurrently(client: httpx.Client, payload: dict[str, T.Any], check: T.Any) -> list[str]:
    """4 clients x 8 requests; ``check(ids)`` right after each 200, in the client's thread."""

    def one_client() -> list[str]:
        acknowledged: list[str] = []
        for _ in range(8):
            response = client.post("/invocations", json=payload)
            assert response.status_code == 200, response.text
            ids = response.json()["prediction_ids"]
            check(ids)
            acknowledged += ids
        return acknowledged

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        return [i for ids in pool.map(lambda _: one_client(), range(4)) for i in ids]


def test_a_durable_answer_comes_only_once_its_rows_are_in_the_store(
    slot: ModelSlot, store: Store, test_frame: pd.DataFrame, tmp_path: Path
) -> None:
    """Checked from another connection right after each 200; flush_interval is 30 s, so an
    answer that waited for a timed flush would take 30 s (and a queued one fails the check)."""
    writer = CaptureWriter(store, tmp_path / "spool.jsonl", flush_interval=30.0)
    reader = Store(store.uri, store.metadata.schema)  # a connection pool of its own

    def in_store(ids: list[str]) -> None:
        assert reader.known_ids(ids) == set(ids)

    payload = {"dataframe_records": _records(test_frame.head(5))}
    started_at = time.monotonic()
    with serving(create_app(slot, store, writer)) as client:
        acknowledged = _concurrently(client, payload, in_store)
    assert time.monotonic() - started_at < 30.0
    reader.dispose()
    stored = store.read()
    assert len(acknowledged) == len(stored) == len(set(stored["prediction_id"])) == 160
    assert set(stored["prediction_id"]) == set(acknowledged)


def test_with_the_store_down_a_durable_answer_comes_once_its_rows_are_spooled(
    slot: ModelSlot, test_frame: pd.DataFrame, tmp_path: Path
) -> None:
    spool = tmp_path / "spool.jsonl"
    writer = CaptureWriter(Store(UNREACHABLE), spool, flush_interval=30.0, retry_interval=60)

    def in_spool(ids: list[str]) -> None:
        spooled = set()
        for line in spool.read_text().splitlines():
            with contextlib.suppress(json.JSONDecodeError):  # another group being appended
                spooled.add(json.loads(line)["prediction_id"])
        assert set(ids) <= spooled

    payload = {"dataframe_records": _records(test_frame.head(5))}
    with serving(create_app(slot, Store(UNREACHABLE), writer)) as client:
        acknowledged = _concurrently(client, payload, in_spool)
        health = client.get("/health")
        assert health.status_code == 200
        assert (health.json()["status"], health.json()["rows_spooled"]) == ("degraded", 160)
    lines = [json.loads(line)["prediction_id"] for line in spool.read_text().splitlines()]
    assert sorted(lines) == sorted(acknowledged)
    assert len(acknowledged) == 160


def _metric(text: str, name: str) -> float:
    values = [line.split()[-1] for line in text.splitlines() if line.startswith(name + " ")]
    assert len(values) == 1, (name, values)
    return float(values[0])


def test_a_spool_that_cannot_be_created_with_the_store_down_turns_the_service_to_503(
    slot: ModelSlot, test_frame: pd.DataFrame, tmp_path: Path
) -> None:
    """Neither the store nor the spool (its folder is a file: FileExistsError, which killed the
    writer thread and left the service answering 200 for rows it dropped) can keep rows: every
    /invocations is 503, /health is 503 ``failing``, /metrics counts; fixed, it recovers."""
    blocker = tmp_path / "blocked"
    blocker.write_text("a file where the spool's folder should be")
    spool = blocker / "spool.jsonl"
    down = Store(UNREACHABLE)
    writer = CaptureWriter(down, spool, retry_interval=0.5)
    payload = {"dataframe_records": _records(test_frame.head(5))}
    with serving(create_app(slot, down, writer)) as client:
        first = client.post("/invocations", json=payload)  # tries store and spool: both fail
        assert first.status_code == 503, first.text
        assert "neither in the store nor in the spool" in first.json()["detail"][0]["message"]
        second = client.post("/invocations", json=payload)  # refused before predicting
        assert second.status_code == 503
        assert "cannot keep rows" in second.json()["detail"][0]["message"]
        health = client.get("/health")
        assert health.status_code == 503
        body = health.json()
        assert (body["status"], body["writer_alive"], body["rows_pending"]) == ("failing", True, 0)
        assert body["last_error"].startswith("FileExistsError")
        metrics = client.get("/metrics").text
        assert _metric(metrics, "bikes_capture_rows_refused_total") == 10.0
        assert _metric(metrics, 'bikes_capture_failures_total{stage="store"}') == 1.0
        assert _metric(metrics, 'bikes_capture_failures_total{stage="spool"}') >= 1.0  # + retries
        assert _metric(metrics, "bikes_capture_quarantined_lines_total") == 0.0

        blocker.unlink()  # the operator fixes the path: the next retry finds it writable
        deadline = time.monotonic() + 60
        while client.get("/health").status_code != 200:
            assert time.monotonic() < deadline, "never recovered"
            time.sleep(0.1)
        third = client.post("/invocations", json=payload)
        assert third.status_code == 200, third.text
        assert client.get("/health").json()["status"] == "degraded"  # spooled, store down
    spooled = [json.loads(line)["prediction_id"] for line in spool.read_text().splitlines()]
    assert spooled == third.json()["prediction_ids"]


def test_kill_9_under_load_loses_no_acknowledged_row(
    champion: dict[str, T.Any], services: dict[str, T.Any], test_frame: pd.DataFrame, tmp_path: Path
) -> None:
    """One round of kill -9 of a real serving process under load (the fault suite repeats it):
    every id answered 200 is in the store (SQLite: a committed transaction survives the
    process), none twice."""
    port = free_port()
    database = tmp_path / "predictions.db"
    spool = tmp_path / "spool.jsonl"
    command = serving_command(
        port,
        f"sqlite:///{database}",
        spool,
        services["mlflow_service"].tracking_uri,
        "job.flush_interval=5.0",  # queued mode would hold up to 5 s of rows in memory
    )
    server = subprocess.Popen(
        command, env=clean_environment(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    base = f"http://127.0.0.1:{port}"
    wait_until_up(f"{base}/health", server, lambda: server.communicate()[1].decode(), timeout=120)
    acknowledged: list[str] = []
    lock = threading.Lock()
    payload = {"dataframe_records": _records(test_frame.head(8))}

    def load() -> None:
        with httpx.Client(base_url=base, timeout=TIMEOUT) as client:
            while True:
                try:
                    response = client.post("/invocations", json=payload)
                except httpx.HTTPError:
                    return  # killed: an answer never received acknowledged nothing
                assert response.status_code == 200, response.text
                with lock:
                    acknowledged.extend(response.json()["prediction_ids"])

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        workers = [pool.submit(load) for _ in range(4)]
        deadline = time.monotonic() + 120
        while len(acknowledged) < 400:
            assert time.monotonic() < deadline, "the server acknowledged too little"
            assert not any(worker.done() for worker in workers), workers[0].result()
            time.sleep(0.02)
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=60)
        for worker in workers:
            worker.result()
    stored = list(Store(f"sqlite:///{database}").read()["prediction_id"])
    lost = set(acknowledged) - set(stored)
    duplicated = len(stored) - len(set(stored))
    print(f"acknowledged {len(acknowledged)}, stored {len(stored)}, lost {len(lost)}, ", end="")
    print(f"duplicated {duplicated}")
    assert server.returncode == -signal.SIGKILL
    assert (len(lost), duplicated) == (0, 0)
    assert not spool.exists()  # the store was up: nothing went to the spool
