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

from bikes.io.capture import CaptureWriter
from bikes.io.contracts import load_contract
from bikes.io.store import Store
from bikes.serving.app import create_app
from bikes.serving.models import ModelSlot
from tests.conftest import BIKES_CONTRACT, started

CONTRACT = load_contract(str(BIKES_CONTRACT))
FEATURES = CONTRACT.feature_names
TIMESTAMP = str(CONTRACT.timestamp)
TARGET = str(CONTRACT.target)
TIMEOUT = 30.0  # seconds, on every HTTP call


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
        with httpx.Client(
            base_url=f"http://127.0.0.1:{server.config.port}", timeout=TIMEOUT
        ) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(timeout=60)


@pytest.fixture
def slot(champion: dict[str, T.Any], services: dict[str, T.Any]) -> T.Iterator[ModelSlot]:
    with started(services["mlflow_service"]) as service:
        yield ModelSlot(service.client(), "models:/bikes@champion", poll_interval=0)


def _records(frame: pd.DataFrame) -> list[dict[str, T.Any]]:
    rows = frame.loc[:, [TIMESTAMP, *FEATURES]].copy()
    rows[TIMESTAMP] = rows[TIMESTAMP].dt.strftime("%Y-%m-%dT%H:%M:%S")
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
    expected = slot.current.model.predict(frame.loc[:, FEATURES])
    stored = store.read(model_name="bikes")
    assert len(acknowledged) == len(set(acknowledged)) == 125
    assert sorted(stored["prediction_id"]) == sorted(acknowledged)  # nothing lost, nothing extra
    assert set(stored["model_version"]) == {slot.current.ref.version}
    assert set(stored["model_name"]) == {"bikes"}
    first = stored.set_index("prediction_id").loc[acknowledged[:120]]
    assert first["prediction"].to_numpy() == pytest.approx(expected)
    assert by_split["predictions"] == pytest.approx(list(expected[:5]))
    assert "probabilities" not in by_split  # a regression has none
    assert by_split["model_name"] == "bikes"
    assert (first["event_time"].to_numpy() == frame[TIMESTAMP].to_numpy()).all()
    assert (first["hr"].to_numpy() == frame["hr"].to_numpy()).all()
    assert first["temp"].to_numpy() == pytest.approx(frame["temp"].to_numpy())
    assert store.count("rejected_rows") == 0


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
        text = client.post(
            "/labels", json={"labels": [{"prediction_id": ids[2], "target": "many"}]}
        )
        assert text.status_code == 422  # a regression's label is a number
        assert text.json()["detail"][0]["field"] == "labels.0.target"
        nan = client.post(
            "/labels",
            content=json.dumps({"labels": [{"prediction_id": ids[2], "target": math.nan}]}),
            headers={"content-type": "application/json"},
        )
        assert nan.status_code == 422
    joined = store.read().set_index("prediction_id")["target"]
    assert joined[ids[0]] == 12
    assert joined[ids[1]] == 3
    assert math.isnan(joined[ids[2]])


class BadInput(T.NamedTuple):
    client: httpx.Client
    store: Store
    writer: CaptureWriter


@pytest.fixture(scope="module")
def bad_input(
    champion: dict[str, T.Any], services: dict[str, T.Any], tmp_path_factory: pytest.TempPathFactory
) -> T.Iterator[BadInput]:
    directory = tmp_path_factory.mktemp("bad")
    store = Store(f"sqlite:///{directory / 'p.db'}")
    store.create()
    writer = CaptureWriter(store, spool_path=directory / "spool.jsonl", flush_interval=0.05)
    with started(services["mlflow_service"]) as service:
        slot = ModelSlot(service.client(), "models:/bikes@champion", poll_interval=0)
    with serving(create_app(slot, store, writer, max_batch_rows=50)) as client:
        yield BadInput(client, store, writer)


@pytest.fixture
def bad_input_client(bad_input: BadInput) -> httpx.Client:
    return bad_input.client


def _one(test_frame: pd.DataFrame, **changes: T.Any) -> list[dict[str, T.Any]]:
    rows = _records(test_frame.head(3))
    for key, value in changes.items():
        if value is ...:
            del rows[1][key]
        else:
            rows[1][key] = value
    return rows


def _latest_request(rejected: pd.DataFrame) -> pd.DataFrame:
    """The rows rejected from the latest request, in row order."""
    latest = rejected[rejected["received_time"] == rejected["received_time"].max()]
    return latest.sort_values("row").reset_index(drop=True)


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"hr": ...}, "hr", "Field required"),
        ({"temp": "warm"}, "temp", "Input should be a valid number"),
        ({"season": 2.5}, "season", "Input should be a valid integer"),
        ({"season": 5}, "season", "Input should be 1, 2, 3 or 4"),
        ({"holiday": True}, "holiday", "Input should be a valid integer"),
        ({"hr": 24}, "hr", "Input should be less than or equal to 23"),
        ({"hum": -0.1}, "hum", "Input should be greater than or equal to 0"),
        ({"timestamp": "yesterday-ish"}, "timestamp", "Input should be a valid datetime"),
    ],
)
def test_bad_rows_get_a_422_naming_row_and_field_and_are_recorded(
    bad_input: BadInput,
    test_frame: pd.DataFrame,
    changes: dict[str, T.Any],
    field: str,
    message: str,
) -> None:
    before = bad_input.store.count()
    rows = _one(test_frame, **changes)
    response = bad_input.client.post("/invocations", json={"dataframe_records": rows})
    assert response.status_code == 422
    problems = response.json()["detail"]
    assert problems[0]["row"] == 1
    assert problems[0]["field"] == field
    assert message in problems[0]["message"]
    assert bad_input.writer.flush()
    assert bad_input.store.count() == before  # the valid rows of the request: not predicted
    recorded = _latest_request(bad_input.store.read_rejected(model_name="bikes")).iloc[0]
    assert (recorded["row"], recorded["field"]) == (1, field)
    assert message in recorded["reason"]
    sent = rows[1]
    for key, value in sent.items():  # the values as received
        assert recorded[key] == value
    if field != TIMESTAMP:  # the row's own event time, when it reads as one
        assert recorded["event_time"] == pd.Timestamp(sent[TIMESTAMP])
    else:
        assert recorded["event_time"] == recorded["received_time"]


def test_a_batch_with_several_bad_rows_records_each_and_caps_what_it_echoes(
    bad_input: BadInput, test_frame: pd.DataFrame
) -> None:
    rows = _records(test_frame.head(6))
    rows[0]["weathersit"] = "x" * 5000
    del rows[3]["hum"]
    rows[3]["temp"] = 7.0
    rows[5]["note"] = "y" * 10_000  # an unknown field is ignored, kept in the raw row
    response = bad_input.client.post("/invocations", json={"dataframe_records": rows})
    assert response.status_code == 422
    problems = response.json()["detail"]
    assert [(p["row"], p["field"]) for p in problems] == [
        (0, "weathersit"),
        (3, "temp"),
        (3, "hum"),
    ]
    assert problems[0]["input"] == "x" * 100  # echoed, capped
    assert bad_input.writer.flush()
    recorded = _latest_request(bad_input.store.read_rejected())
    assert list(recorded["row"]) == [0, 3]
    assert list(recorded["field"]) == ["weathersit", "temp"]
    assert "also failing: hum" in recorded["reason"].iloc[1]
    assert recorded["weathersit"].iloc[0] == "x" * 200  # stored, capped
    assert pd.isna(recorded["hum"].iloc[1])  # left out, so missing
    metrics = bad_input.client.get("/metrics").text
    assert 'bikes_rows_rejected_total{field="weathersit"}' in metrics
    assert 'bikes_rows_rejected_total{field="temp"}' in metrics


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
    assert health["task"] == "regression"
    described = bad_input_client.get("/contract").json()
    assert described["contract"]["target"] == "cnt"
    row = described["row_schema"]["$defs"]["Row"]
    assert row["properties"]["season"]["enum"] == [1, 2, 3, 4]
    assert row["properties"]["hr"]["maximum"] == 23
    assert set(row["required"]) == set(FEATURES)
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
        "bikes_rows_rejected_total",
    ):
        assert name in metrics
    assert f'bikes_model_info{{name="bikes",version="{health["model_version"]}"}} 1.0' in metrics


def test_a_moved_alias_is_served_without_a_restart_and_its_contract_with_it(
    champion: dict[str, T.Any],
    services: dict[str, T.Any],
    splits_dir: Path,
    test_frame: pd.DataFrame,
    tmp_path: Path,
) -> None:
    """Version 2 drops two features: once swapped, requests follow its contract, not v1's."""
    from bikes.jobs.training import TrainingJob

    narrow = CONTRACT.model_copy(
        update={"features": [f for f in CONTRACT.feature_list if f.name not in {"atemp", "hum"}]}
    )

    def training(contract: T.Any) -> TrainingJob:
        return TrainingJob.model_validate(
            {
                "inputs": {"path": str(splits_dir / "train.parquet"), "limit": 3000},
                "contract": contract,
                "model": {"max_iter": 10},
                "validation_share": 0.0,
                "registered_model": "swap",
                "alias": "live",
                **services,
            }
        )

    with training(str(BIKES_CONTRACT)) as job:
        first = job.run()["model_version"]
    store = Store(f"sqlite:///{tmp_path / 'p.db'}")
    store.create()
    writer = CaptureWriter(store, spool_path=tmp_path / "spool.jsonl", flush_interval=0.05)
    # The service's MLflow connection stays up while it serves, as in the serving job.
    with started(services["mlflow_service"]) as service:
        slot = ModelSlot(service.client(), "models:/swap@live", poll_interval=0.2)
        with serving(create_app(slot, store, writer)) as client:
            rows = _records(test_frame.head(2))
            without = [{k: v for k, v in row.items() if k not in {"atemp", "hum"}} for row in rows]
            assert (
                client.post("/invocations", json={"dataframe_records": rows}).json()[
                    "model_version"
                ]
                == first
            )
            refused = client.post("/invocations", json={"dataframe_records": without})
            assert refused.status_code == 422
            assert {p["field"] for p in refused.json()["detail"]} == {"atemp", "hum"}
            with training(narrow.model_dump(mode="json")) as job:
                second = job.run()["model_version"]
            service.start()  # the training job handed MLflow's settings back when it stopped
            deadline = time.monotonic() + 30
            while client.get("/health").json()["model_version"] != second:
                assert time.monotonic() < deadline, "the poller never swapped"
                time.sleep(0.1)
            answer = client.post("/invocations", json={"dataframe_records": without})
            assert answer.status_code == 200, answer.text
            assert answer.json()["model_version"] == second
            assert client.post("/invocations", json={"dataframe_records": rows}).status_code == 200
    stored = store.read(model_name="swap")
    assert sorted(stored["model_version"]) == sorted([first] * 2 + [second] * 4)
    # Inputs are what the answering version took: v2 never saw atemp, even when it was sent.
    assert stored.loc[stored["model_version"] == second, "atemp"].isna().all()
    assert stored.loc[stored["model_version"] == first, "atemp"].notna().all()
    rejected = store.read_rejected(model_name="swap")
    assert list(rejected["model_version"]) == [first] * 2


def test_without_capture_labels_are_refused(slot: ModelSlot, test_frame: pd.DataFrame) -> None:
    with serving(create_app(slot, None, None)) as client:
        predict = {"dataframe_records": _records(test_frame.head(2))}
        assert client.post("/invocations", json=predict).status_code == 200
        bad = client.post("/invocations", json={"dataframe_records": [{"hr": 1}]})
        assert bad.status_code == 422  # still refused, just not recorded
        no_capture = client.post("/labels", json={"labels": [{"prediction_id": "x", "target": 1}]})
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
    rows[0][TIMESTAMP] = "2012-07-01T08:00:00+02:00"
    with serving(create_app(slot, store, writer)) as client:
        assert client.post("/invocations", json={"dataframe_records": rows}).status_code == 200
    assert store.read()["event_time"].iloc[0] == pd.Timestamp("2012-07-01 06:00:00")
