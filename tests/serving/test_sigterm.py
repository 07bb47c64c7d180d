"""SIGTERM under load: the serving job, a real process, drains its queue before it exits, and
exits 7 when it holds acknowledged rows it could keep nowhere."""

from __future__ import annotations

import concurrent.futures
import signal
import sqlite3
import subprocess
import threading
import time
import typing as T
from pathlib import Path

import httpx
import pandas as pd
import pytest

from bikes.io.store import Store
from tests.conftest import clean_environment, serving_command, wait_until_up
from tests.serving.test_app import _records, free_port


def test_sigterm_under_load_loses_no_acknowledged_row(
    champion: dict[str, T.Any], services: dict[str, T.Any], test_frame: pd.DataFrame, tmp_path: Path
) -> None:
    port = free_port()
    database = tmp_path / "predictions.db"
    command = serving_command(
        port,
        f"sqlite:///{database}",
        tmp_path / "spool.jsonl",
        services["mlflow_service"].tracking_uri,
        "job.flush_interval=2.0",  # slow flushes: rows are still queued at SIGTERM
        "job.batch_size=100000",
    )
    server = subprocess.Popen(
        command,
        env=clean_environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    wait_until_up(f"{base}/health", server, lambda: server.communicate()[1], timeout=120)

    acknowledged: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()
    payload = {"dataframe_records": _records(test_frame.head(8))}

    def load() -> None:
        with httpx.Client(base_url=base, timeout=60) as client:
            while not stop.is_set():
                try:
                    response = client.post("/invocations", json=payload)
                except httpx.HTTPError:
                    return  # the server has stopped accepting: those were never acknowledged
                if response.status_code == 200:
                    with lock:
                        acknowledged.extend(response.json()["prediction_ids"])

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        workers = [pool.submit(load) for _ in range(4)]
        deadline = time.monotonic() + 60
        while len(acknowledged) <= 100:  # under load, not before a fair share is in flight
            assert time.monotonic() < deadline, "the server acknowledged too little"
            time.sleep(0.05)
        invalid = [{**payload["dataframe_records"][0], "hr": 99}]
        refused = httpx.post(f"{base}/invocations", json={"dataframe_records": invalid}, timeout=60)
        assert refused.status_code == 422  # its record is queued too, and must be drained
        server.send_signal(signal.SIGTERM)
        _, stderr = server.communicate(timeout=120)
        stop.set()
        for worker in workers:
            worker.result()
    assert server.returncode == 0, stderr
    assert len(acknowledged) > 100
    store = Store(f"sqlite:///{database}")
    stored = store.read()
    assert len(stored) == len(set(stored["prediction_id"]))
    assert set(stored["prediction_id"]) == set(acknowledged)
    assert list(store.read_rejected()["hr"]) == [99]
    assert "rows written to the store (1 rejected rows recorded)" in stderr


@pytest.mark.parametrize("acknowledge", ["queued", "durable"])
def test_sigterm_with_rows_kept_nowhere_exits_7_and_says_how_many(
    acknowledge: str,
    champion: dict[str, T.Any],
    services: dict[str, T.Any],
    test_frame: pd.DataFrame,
    tmp_path: Path,
) -> None:
    """The store refuses writes (its table dropped under it) and the spool's folder is a file:
    queued mode has acknowledged rows it can keep nowhere, so SIGTERM exits 7 naming how many;
    durable mode acknowledged none of them (503), so it exits 0."""
    port = free_port()
    database = tmp_path / "predictions.db"
    blocker = tmp_path / "blocked"
    blocker.write_text("a file where the spool's folder should be")
    command = serving_command(
        port,
        f"sqlite:///{database}",
        blocker / "spool.jsonl",
        services["mlflow_service"].tracking_uri,
        f"job.acknowledge={acknowledge}",
        "job.flush_interval=0.05",
    )
    server = subprocess.Popen(
        command, env=clean_environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    base = f"http://127.0.0.1:{port}"
    wait_until_up(f"{base}/health", server, lambda: server.communicate()[1], timeout=120)
    with sqlite3.connect(database) as connection:
        connection.execute("DROP TABLE predictions")
    payload = {"dataframe_records": _records(test_frame.head(4))}
    acknowledged = 0
    with httpx.Client(base_url=base, timeout=60) as client:
        for _ in range(100):
            response = client.post("/invocations", json=payload)
            if response.status_code == 503:
                break
            assert response.status_code == 200, response.text
            acknowledged += len(response.json()["prediction_ids"])
        else:
            pytest.fail("the service never refused rows it could not keep")
        assert client.get("/health").json()["status"] == "failing"
    server.send_signal(signal.SIGTERM)
    _, stderr = server.communicate(timeout=120)
    print(f"{acknowledge}: acknowledged {acknowledged}; exit {server.returncode}; {stderr[-400:]}")
    if acknowledge == "durable":
        assert (server.returncode, acknowledged) == (0, 0), stderr
        assert "capture lost rows" not in stderr
    else:
        assert server.returncode == 7, stderr
        assert acknowledged > 0
        assert f"bikes: capture lost rows: {acknowledged} acknowledged rows were kept " in stderr
        assert "Application shutdown failed" not in stderr
