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
from fastapi.testclient import TestClient

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
TIMEOUT = 60.0  # seconds, on every HTTP call: a loaded 2-core machine is slow


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
    deadline = time.monotonic() + 60
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
    with serving(create_app(slot, store, writer, max_batch_rows=50, max_label_rows=20)) as client:
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


# -- bad input: a clear 4xx naming the field, never a 500, a 503 or the value whole -------------


@pytest.mark.parametrize("moment", ["9999-12-31T23:59:59-10:00", "0001-01-01T00:00:00+10:00"])
def test_an_event_time_that_overflows_in_utc_is_a_422_and_recorded(
    bad_input: BadInput, test_frame: pd.DataFrame, moment: str
) -> None:
    before = bad_input.store.count()
    alone = bad_input.client.post(
        "/invocations", json={"dataframe_records": _one(test_frame, timestamp=moment)}
    )
    assert alone.status_code == 422, alone.text
    problem = alone.json()["detail"][0]
    assert (problem["row"], problem["field"]) == (1, TIMESTAMP)
    assert "between years 1 and 9999 in UTC" in problem["message"]
    assert problem["input"] == moment
    # With another fault in the row: the rejected row's own event time cannot be read either.
    both = bad_input.client.post(
        "/invocations", json={"dataframe_records": _one(test_frame, timestamp=moment, hr=99)}
    )
    assert both.status_code == 422, both.text
    assert [p["field"] for p in both.json()["detail"]] == ["hr", TIMESTAMP]
    assert bad_input.writer.flush()
    assert bad_input.store.count() == before
    recorded = _latest_request(bad_input.store.read_rejected(model_name="bikes")).iloc[0]
    assert (recorded["row"], recorded["field"], recorded[TIMESTAMP]) == (1, "hr", moment)
    assert recorded["event_time"] == recorded["received_time"]


def test_a_label_batch_over_the_limit_is_a_413_naming_the_limit(
    bad_input: BadInput, test_frame: pd.DataFrame
) -> None:
    ids = bad_input.client.post(
        "/invocations", json={"dataframe_records": _records(test_frame.head(1))}
    ).json()["prediction_ids"]
    before = bad_input.store.count("labels")
    labels = [{"prediction_id": ids[0], "target": 5}] * 21
    over = bad_input.client.post("/labels", json={"labels": labels})
    assert over.status_code == 413
    assert over.json()["detail"] == [
        {"field": "labels", "message": "21 labels; at most 20 per request"}
    ]
    assert bad_input.store.count("labels") == before
    at_limit = bad_input.client.post("/labels", json={"labels": labels[:20]})
    assert at_limit.json() == {"recorded": 1, "unknown_ids": []}
    assert bad_input.store.count("labels") == before + 1


HUGE = "z" * 20_000_000  # 20 MB: what came back whole in a 422


def _huge_requests(rows: list[dict[str, T.Any]]) -> dict[str, tuple[str, dict[str, T.Any]]]:
    """A 20 MB string in every place a client controls, by where it is."""
    columns = list(rows[0])
    values = [rows[0][c] for c in columns]
    hr = columns.index("hr")
    return {
        "records value": ("/invocations", {"dataframe_records": [rows[0] | {"temp": HUGE}]}),
        "records event time": (
            "/invocations",
            {"dataframe_records": [rows[0] | {TIMESTAMP: HUGE}]},
        ),
        "records key, a row also bad": (
            "/invocations",
            {"dataframe_records": [rows[0] | {HUGE: 1, "hr": 99}]},
        ),
        "records row": ("/invocations", {"dataframe_records": [HUGE]}),
        "records itself": ("/invocations", {"dataframe_records": HUGE}),
        "request key": ("/invocations", {HUGE: 1, "dataframe_records": rows}),
        "inputs": ("/invocations", {"inputs": HUGE}),
        "split column": (  # hr named otherwise: missing
            "/invocations",
            {
                "dataframe_split": {
                    "columns": [*columns[:hr], HUGE, *columns[hr + 1 :]],
                    "data": [values],
                }
            },
        ),
        "split value": (
            "/invocations",
            {"dataframe_split": {"columns": columns, "data": [[HUGE, *values[1:]]]}},
        ),
        "split data": ("/invocations", {"dataframe_split": {"columns": columns, "data": HUGE}}),
        "label id": ("/labels", {"labels": [{"prediction_id": HUGE, "target": 1}]}),
        "label target": ("/labels", {"labels": [{"prediction_id": "a", "target": HUGE}]}),
        "labels key": ("/labels", {"labels": [{"prediction_id": "a", "target": 1}], HUGE: 1}),
        "label": ("/labels", {"labels": [HUGE]}),
    }


def test_a_huge_value_is_never_echoed_whole(bad_input: BadInput, test_frame: pd.DataFrame) -> None:
    """The request key was named whole as the "field" of a 422 (FastAPI's validation error of
    a model that forbids extra keys): 20 MB back for 20 MB sent."""
    sizes = {}
    for name, (path, body) in _huge_requests(_records(test_frame.head(1))).items():
        response = bad_input.client.post(path, json=body)
        assert response.status_code == 422, (name, response.status_code, response.text[:300])
        sizes[name] = len(response.content)
        problems = response.json()["detail"]
        assert all(p["field"] for p in problems), (name, problems)
        assert "z" * 201 not in response.text, name
    assert max(sizes.values()) < 2000, sizes
    assert bad_input.writer.flush()
    rejected = bad_input.store.read_rejected(model_name="bikes").drop(columns="reason")
    stored = [str(v) for c in rejected.columns for v in [c, *rejected[c]] if isinstance(v, str)]
    assert max(map(len, stored)) == 200  # the rejected rows are stored capped, keys too


def test_bodies_that_are_not_utf8_json_get_a_clear_4xx(bad_input_client: httpx.Client) -> None:
    def post(body: bytes, content_type: str | None = "application/json") -> httpx.Response:
        headers = {"content-type": content_type} if content_type else {}
        return bad_input_client.post("/invocations", content=body, headers=headers)

    def only(response: httpx.Response) -> tuple[int, str, str]:
        [problem] = response.json()["detail"]
        return response.status_code, problem["field"], problem["message"]

    latin1 = post('{"dataframe_records": [{"weathersit": "é"}]}'.encode("latin-1"))
    assert only(latin1) == (
        400,
        "body",
        "the body cannot be read as JSON: it is not UTF-8 text (byte 0xe9 at position 39)",
    )
    deep = post(b'{"dataframe_records": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")
    assert only(deep) == (400, "body", "the body cannot be read as JSON: it is nested too deeply")
    truncated = post(b'{"dataframe_records": [{"hr": 1')
    assert only(truncated) == (
        422,
        "body",
        "JSON decode error at character 31: Expecting ',' delimiter",
    )
    empty = post(b"")
    assert only(empty) == (422, "body", "Field required")
    json_text = b'{"dataframe_records": [{"hr": 1}]}'
    for content_type, shown in (
        ("text/plain", "'text/plain'"),
        ("application/x-www-form-urlencoded", "'application/x-www-form-urlencoded'"),  # curl -d
        (None, "none"),
    ):
        assert only(post(json_text, content_type)) == (
            415,
            "content-type",
            f"send the body as JSON, Content-Type: application/json (got {shown})",
        )
    surrogate = post(b'{"dataframe_records": [{"weathersit": "\\ud800"}]}')
    assert surrogate.status_code == 422  # was a 500: the echo of a lone surrogate is not UTF-8
    assert any(p["field"] == "weathersit" for p in surrogate.json()["detail"])
    labels = bad_input_client.post(
        "/labels", content=b"labels", headers={"content-type": "text/csv"}
    )
    assert labels.status_code == 415


@pytest.fixture(scope="module")
def free_text_model(services: dict[str, T.Any]) -> str:
    """The churn classifier, its ``plan`` served as free text (no values listed)."""
    from tests.serving.test_classifier import register_churn

    register_churn(services, name="churn-free-text")
    return "models:/churn-free-text@champion"


def test_nul_and_lone_surrogates_are_a_422_naming_the_field_on_every_store(
    free_text_model: str, services: dict[str, T.Any], store: Store, tmp_path: Path
) -> None:
    """PostgreSQL refuses NUL in text (a label id with one was a 503 no retry could fix) and
    a lone surrogate is not UTF-8 (its echo was a 500): both are refused up front, by field."""
    from bikes.core.contract import Feature
    from tests.serving.test_classifier import CHURN_CONTRACT, churn_records, churn_table

    free = [
        f if f.name != "plan" else Feature(name="plan", kind="categorical")
        for f in CHURN_CONTRACT.feature_list
    ]
    contract = CHURN_CONTRACT.model_copy(update={"features": free})
    with started(services["mlflow_service"]) as service:
        slot = ModelSlot(service.client(), free_text_model, 0, contract)
    writer = CaptureWriter(store, spool_path=tmp_path / "spool.jsonl", flush_interval=0.05)
    rows = churn_records(churn_table(3, seed=1))
    with TestClient(create_app(slot, store, writer), raise_server_exceptions=False) as client:
        answer = client.post(
            "/invocations", json={"dataframe_records": [rows[0] | {"plan": "enterprise ünï"}]}
        )
        assert answer.status_code == 200, answer.text  # any text, without a values list
        [kept] = answer.json()["prediction_ids"]
        nul = client.post(
            "/invocations",
            json={"dataframe_records": [rows[0], rows[1] | {"plan": "pro\u0000"}]},
        )
        assert nul.status_code == 422, nul.text
        assert [(p["row"], p["field"], p["message"]) for p in nul.json()["detail"]] == [
            (1, "plan", "Input should not contain NUL characters (\\u0000)")
        ]
        surrogate = client.post(
            "/invocations",
            content=json.dumps({"dataframe_records": [rows[2] | {"plan": "\ud800"}]}),
            headers={"content-type": "application/json"},
        )
        assert surrogate.status_code == 422, surrogate.text
        [problem] = surrogate.json()["detail"]
        assert (problem["field"], problem["input"]) == ("plan", "\\ud800")
        assert "valid Unicode text" in problem["message"]
        labels = client.post(
            "/labels",
            json={
                "labels": [
                    {"prediction_id": kept, "target": "leave"},
                    {"prediction_id": "ghost\u0000", "target": "stay"},
                    {"prediction_id": kept, "target": "st\u0000ay"},
                ]
            },
        )
        assert labels.status_code == 422, labels.text
        assert [p["field"] for p in labels.json()["detail"]] == [
            "labels.1.prediction_id",
            "labels.2.target",
        ]
        assert store.count("labels") == 0
        valid = client.post(
            "/labels", json={"labels": [{"prediction_id": kept, "target": "leave"}]}
        )
        assert valid.json() == {"recorded": 1, "unknown_ids": []}
    stored = store.read(model_name="churn-free-text")
    assert (list(stored["prediction_id"]), list(stored["plan"])) == ([kept], ["enterprise ünï"])
    assert list(stored["target"]) == ["leave"]
    rejected = store.read_rejected(model_name="churn-free-text")
    assert list(rejected["field"]) == ["plan", "plan"]
    assert sorted(rejected["plan"]) == ["\\ud800", "pro\u0000"]  # as received, but UTF-8


def test_70000_labels_in_one_request_on_postgresql(slot: ModelSlot, tmp_path: Path) -> None:
    """One IN list of 70,000 ids broke PostgreSQL's 65,535 parameters: a 503 for good."""
    import datetime as dt
    import uuid

    from tests.conftest import postgres_store

    received = dt.datetime(2024, 1, 1)
    ids = [uuid.uuid4().hex for _ in range(70_000)]
    with postgres_store() as store:
        store.write_predictions(
            [
                {
                    "prediction_id": i,
                    "event_time": received,
                    "received_time": received,
                    "model_name": "bikes",
                    "model_version": "1",
                    "latency_ms": 1.0,
                    "inputs": {"hr": 1},
                    "prediction": 1.0,
                }
                for i in ids
            ]
        )
        writer = CaptureWriter(store, spool_path=tmp_path / "spool.jsonl", flush_interval=0.05)
        labels = [{"prediction_id": i, "target": n % 97} for n, i in enumerate(ids)]
        with TestClient(create_app(slot, store, writer), raise_server_exceptions=False) as client:
            one_bad = client.post(
                "/labels", json={"labels": [*labels, {"prediction_id": "gh\u0000st", "target": 1}]}
            )
            assert one_bad.status_code == 422, one_bad.text[:300]
            assert one_bad.json()["detail"][0]["field"] == "labels.70000.prediction_id"
            assert store.count("labels") == 0
            answer = client.post(
                "/labels", json={"labels": [*labels, {"prediction_id": "ghost", "target": 1}]}
            )
            assert answer.status_code == 200, answer.text[:300]
            assert answer.json() == {"recorded": 70_000, "unknown_ids": ["ghost"]}
        assert store.count("labels") == 70_000
        last = store.read(latest=1)
        assert (
            last["target"].iloc[0]
            == {i: n % 97 for n, i in enumerate(ids)}[last["prediction_id"].iloc[0]]
        )
