"""The prediction service as a real HTTP server on a free loopback port."""

from __future__ import annotations

import contextlib
import json
import math
import socket
import threading
import time
import typing as T
from pathlib import Path

import httpx
import pandas as pd
import pytest
import uvicorn

from bikes.core import schemas
from bikes.io.capture import CaptureWriter
from bikes.io.store import Store
from bikes.serving.app import create_app
from bikes.serving.models import ModelSlot
from tests.conftest import started


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def serving(app: T.Any) -> T.Iterator[httpx.Client]:
    """uvicorn in a thread: a real server, stopped (and its capture drained) on exit."""
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{server.config.port}", timeout=30) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(timeout=60)


@pytest.fixture
def slot(champion: dict[str, T.Any], services: dict[str, T.Any]) -> T.Iterator[ModelSlot]:
    with started(services["mlflow_service"]) as service:
        yield ModelSlot(service.client(), "models:/bikes@champion", poll_interval=0)


def _records(frame: pd.DataFrame) -> list[dict[str, T.Any]]:
    rows = frame.loc[:, [schemas.TIMESTAMP, *schemas.FEATURE_NAMES]].copy()
    rows[schemas.TIMESTAMP] = rows[schemas.TIMESTAMP].dt.strftime("%Y-%m-%dT%H:%M:%S")
    return T.cast(list[dict[str, T.Any]], rows.to_dict(orient="records"))


def test_predictions_match_the_model_and_every_row_is_captured(
    slot: ModelSlot, store: Store, test_frame: pd.DataFrame, tmp_path: Path
) -> None:
    writer = CaptureWriter(
        store, spool_path=tmp_path / "spool.jsonl", batch_size=50, flush_interval=0.05
    )
    frame = test_frame.head(120)
    acknowledged: list[str] = []
    with serving(create_app(slot, store, writer)) as client:
        for start in range(0, len(frame), 40):
            response = client.post(
                "/invocations", json={"dataframe_records": _records(frame.iloc[start : start + 40])}
            )
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["model_version"] == slot.current.ref.version
            acknowledged += body["prediction_ids"]
        split = _records(frame.head(5))
        columns = list(split[0])
        by_split = client.post(
            "/invocations",
            json={
                "dataframe_split": {
                    "columns": columns,
                    "data": [[row[c] for c in columns] for row in split],
                }
            },
        ).json()
        acknowledged += by_split["prediction_ids"]
    expected = slot.current.model.predict(schemas.features_of(frame))
    stored = store.read()
    assert len(acknowledged) == len(set(acknowledged)) == 125
    assert sorted(stored["prediction_id"]) == sorted(acknowledged)  # nothing lost, nothing extra
    assert set(stored["model_version"]) == {slot.current.ref.version}
    first = stored.set_index("prediction_id").loc[acknowledged[:120]]
    assert first["prediction"].to_numpy() == pytest.approx(expected)
    assert by_split["predictions"] == pytest.approx(list(expected[:5]))
    assert (first["event_time"].to_numpy() == frame[schemas.TIMESTAMP].to_numpy()).all()
    assert (first["hr"].to_numpy() == frame["hr"].to_numpy()).all()


def test_labels_join_unknown_ids_are_reported_and_the_latest_wins(
    slot: ModelSlot, tmp_path: Path, test_frame: pd.DataFrame
) -> None:
    store = Store(f"sqlite:///{tmp_path / 'p.db'}")
    store.create()
    writer = CaptureWriter(store, spool_path=tmp_path / "spool.jsonl", flush_interval=0.05)
    with serving(create_app(slot, store, writer)) as client:
        ids = client.post(
            "/invocations", json={"dataframe_records": _records(test_frame.head(3))}
        ).json()["prediction_ids"]
        first = client.post(
            "/labels",
            json={
                "labels": [
                    {"prediction_id": ids[0], "target": 10},
                    {"prediction_id": "ghost", "target": 1},
                ]
            },
        )
        assert first.json() == {"recorded": 1, "unknown_ids": ["ghost"]}
        again = client.post(
            "/labels",
            json={
                "labels": [
                    {"prediction_id": ids[0], "target": 12},
                    {"prediction_id": ids[1], "target": 3},
                ]
            },
        )
        assert again.json() == {"recorded": 2, "unknown_ids": []}
    joined = store.read().set_index("prediction_id")[schemas.TARGET]
    assert joined[ids[0]] == 12
    assert joined[ids[1]] == 3
    assert math.isnan(joined[ids[2]])


@pytest.fixture(scope="module")
def bad_input_client(
    champion: dict[str, T.Any], services: dict[str, T.Any], tmp_path_factory: pytest.TempPathFactory
) -> T.Iterator[httpx.Client]:
    directory = tmp_path_factory.mktemp("bad")
    store = Store(f"sqlite:///{directory / 'p.db'}")
    store.create()
    writer = CaptureWriter(store, spool_path=directory / "spool.jsonl")
    with started(services["mlflow_service"]) as service:
        slot = ModelSlot(service.client(), "models:/bikes@champion", poll_interval=0)
    with serving(create_app(slot, store, writer, max_batch_rows=50)) as client:
        yield client


def _one(test_frame: pd.DataFrame, **changes: T.Any) -> list[dict[str, T.Any]]:
    rows = _records(test_frame.head(3))
    for key, value in changes.items():
        if value is ...:
            del rows[1][key]
        else:
            rows[1][key] = value
    return rows


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"hr": ...}, "hr", "Field required"),
        ({"temp": "warm"}, "temp", "Input should be a valid number"),
        ({"season": 2.5}, "season", "Input should be a valid integer"),
        ({"hr": 24}, "hr", "Input should be less than or equal to 23"),
        ({"hum": -0.1}, "hum", "Input should be greater than or equal to 0"),
        ({"timestamp": "yesterday-ish"}, "timestamp", "Input should be a valid datetime"),
    ],
)
def test_bad_rows_get_a_422_naming_row_and_field(
    bad_input_client: httpx.Client,
    test_frame: pd.DataFrame,
    changes: dict[str, T.Any],
    field: str,
    message: str,
) -> None:
    response = bad_input_client.post(
        "/invocations", json={"dataframe_records": _one(test_frame, **changes)}
    )
    assert response.status_code == 422
    problems = response.json()["detail"]
    assert problems[0]["row"] == 1
    assert problems[0]["field"] == field
    assert message in problems[0]["message"]


def test_nan_malformed_empty_and_oversized_requests(
    bad_input_client: httpx.Client, test_frame: pd.DataFrame
) -> None:
    rows = _records(test_frame.head(2))
    nan_body = json.dumps({"dataframe_records": [rows[0] | {"windspeed": math.nan}, rows[1]]})
    assert "NaN" in nan_body  # Python's json writes the token that strict JSON lacks
    nan = bad_input_client.post(
        "/invocations", content=nan_body, headers={"content-type": "application/json"}
    )
    assert nan.status_code == 422
    assert (nan.json()["detail"][0]["row"], nan.json()["detail"][0]["field"]) == (0, "windspeed")
    assert "finite number" in nan.json()["detail"][0]["message"]
    malformed = bad_input_client.post(
        "/invocations",
        content='{"dataframe_records": [',
        headers={"content-type": "application/json"},
    )
    assert malformed.status_code == 422
    assert "JSON" in malformed.json()["detail"][0]["message"]
    empty = bad_input_client.post("/invocations", json={"dataframe_records": []})
    assert (empty.status_code, empty.json()["detail"][0]["message"]) == (422, "the batch is empty")
    oversized = bad_input_client.post(
        "/invocations", json={"dataframe_records": _records(test_frame.head(51))}
    )
    assert oversized.status_code == 413
    both = bad_input_client.post(
        "/invocations",
        json={"dataframe_records": rows, "dataframe_split": {"columns": [], "data": []}},
    )
    assert both.status_code == 422
    assert "exactly one" in both.json()["detail"][0]["message"]
    ragged = bad_input_client.post(
        "/invocations", json={"dataframe_split": {"columns": ["hr", "temp"], "data": [[1]]}}
    )
    assert ragged.status_code == 422
    assert (
        "dataframe_split.data[0]: 1 values for 2 columns" in ragged.json()["detail"][0]["message"]
    )
    no_labels = bad_input_client.post("/labels", json={"labels": []})
    assert no_labels.status_code == 422


def test_health_and_metrics(bad_input_client: httpx.Client, test_frame: pd.DataFrame) -> None:
    bad_input_client.post("/invocations", json={"dataframe_records": _records(test_frame.head(4))})
    health = bad_input_client.get("/health").json()
    assert health["status"] == "ok"
    assert health["store_reachable"] is True
    assert health["model_name"] == "bikes"
    for probe in ("/wp-admin", "/.env", "/admin/config.php"):
        assert bad_input_client.get(probe).status_code == 404
    metrics = bad_input_client.get("/metrics").text
    assert 'endpoint="unmatched",status="404"} 3.0' in metrics
    assert "wp-admin" not in metrics  # one series for every unknown URL, not one each
    for name in (
        "bikes_requests_total",
        "bikes_request_errors_total",
        "bikes_request_latency_seconds_bucket",
        "bikes_prediction_rows_total",
        "bikes_predictions_bucket",
        "bikes_capture_rows_written_total",
        "bikes_capture_rows_pending",
        "bikes_model_info",
    ):
        assert name in metrics
    assert f'bikes_model_info{{name="bikes",version="{health["model_version"]}"}} 1.0' in metrics


def test_a_moved_alias_is_served_without_a_restart(
    champion: dict[str, T.Any],
    services: dict[str, T.Any],
    splits_dir: Path,
    test_frame: pd.DataFrame,
) -> None:
    from bikes.jobs.training import TrainingJob

    training = TrainingJob.model_validate(
        {
            "inputs": {"path": str(splits_dir / "train.parquet"), "limit": 3000},
            "model": {"max_iter": 10},
            "validation_share": 0.0,
            "registered_model_name": "swap",
            "alias": "live",
            **services,
        }
    )
    with training as job:
        first = job.run()["model_version"]
    # The service's MLflow connection stays up while it serves, as in the serving job.
    with started(services["mlflow_service"]) as service:
        slot = ModelSlot(service.client(), "models:/swap@live", poll_interval=0.2)
        with serving(create_app(slot, None, None)) as client:
            predict = {"dataframe_records": _records(test_frame.head(2))}
            assert client.post("/invocations", json=predict).json()["model_version"] == first
            with training as job:
                second = job.run()["model_version"]
            service.start()  # the training job handed MLflow's settings back when it stopped
            deadline = time.monotonic() + 30
            while client.get("/health").json()["model_version"] != second:
                assert time.monotonic() < deadline, "the poller never swapped"
                time.sleep(0.1)
            assert client.post("/invocations", json=predict).json()["model_version"] == second
            no_capture = client.post(
                "/labels", json={"labels": [{"prediction_id": "x", "target": 1}]}
            )
            assert no_capture.status_code == 404


def test_a_down_store_degrades_health_but_predictions_go_on(
    slot: ModelSlot, test_frame: pd.DataFrame, tmp_path: Path
) -> None:
    store = Store("postgresql+psycopg://postgres@127.0.0.1:1/none?connect_timeout=1")
    writer = CaptureWriter(
        store, spool_path=tmp_path / "spool.jsonl", flush_interval=0.05, retry_interval=60
    )
    with serving(create_app(slot, store, writer)) as client:
        answer = client.post(
            "/invocations", json={"dataframe_records": _records(test_frame.head(5))}
        )
        assert answer.status_code == 200
        deadline = time.monotonic() + 30
        while not writer.degraded:
            assert time.monotonic() < deadline, "rows were never spooled"
            time.sleep(0.05)
        health = client.get("/health").json()
        assert (health["status"], health["store_reachable"], health["rows_pending"]) == (
            "degraded",
            False,
            5,
        )
        labels = client.post(
            "/labels",
            json={"labels": [{"prediction_id": answer.json()["prediction_ids"][0], "target": 1}]},
        )
        assert labels.status_code == 503
        assert "store unavailable" in labels.json()["detail"][0]["message"]
    assert len((tmp_path / "spool.jsonl").read_text().splitlines()) == 5  # kept for the next start


def test_timezone_aware_event_times_are_stored_in_utc(
    slot: ModelSlot, test_frame: pd.DataFrame, tmp_path: Path
) -> None:
    store = Store(f"sqlite:///{tmp_path / 'p.db'}")
    store.create()
    writer = CaptureWriter(store, spool_path=tmp_path / "spool.jsonl", flush_interval=0.05)
    rows = _records(test_frame.head(1))
    rows[0]["timestamp"] = "2012-07-01T08:00:00+02:00"
    with serving(create_app(slot, store, writer)) as client:
        assert client.post("/invocations", json={"dataframe_records": rows}).status_code == 200
    assert store.read()["event_time"].iloc[0] == pd.Timestamp("2012-07-01 06:00:00")
