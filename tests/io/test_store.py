"""The capture store on real SQLite and real PostgreSQL."""

from __future__ import annotations

import datetime as dt
import json
import math
import typing as T
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from bikes.core.errors import InputError
from bikes.io.store import MAX_RAW_ROW_CHARS, MAX_RAW_VALUE_CHARS, Store, parsed_json, raw_row
from tests.conftest import postgres_store

BIKE_INPUTS = {
    "season": 1,
    "yr": 0,
    "mnth": 1,
    "hr": 0,
    "holiday": 0,
    "weekday": 0,
    "workingday": 0,
    "weathersit": 1,
    "temp": 0.5,
    "atemp": 0.5,
    "hum": 0.5,
    "windspeed": 0.5,
}


def _row(
    event: dt.datetime,
    prediction: T.Any = 1.0,
    model_name: str = "bikes",
    scores: dict[str, float] | None = None,
    **inputs: T.Any,
) -> dict[str, T.Any]:
    """A captured prediction as the service writes it (bike inputs unless given)."""
    return {
        "prediction_id": uuid.uuid4().hex,
        "event_time": event,
        "received_time": dt.datetime(2026, 1, 1),
        "model_name": model_name,
        "model_version": "1",
        "latency_ms": 2.5,
        "inputs": {**BIKE_INPUTS, **inputs} if model_name == "bikes" else inputs,
        "prediction": prediction,
        "scores": scores,
    }


def _rejected(
    event: dt.datetime | None, model_name: str = "bikes", **raw: T.Any
) -> dict[str, T.Any]:
    return {
        "rejection_id": uuid.uuid4().hex,
        "received_time": dt.datetime(2026, 1, 1),
        "event_time": event,
        "model_name": model_name,
        "model_version": "1",
        "row": 0,
        "field": "hum",
        "reason": "Field required",
        "raw": raw_row(raw),
    }


def test_writes_are_idempotent_and_windows_read_back(store: Store) -> None:
    start = dt.datetime(2012, 7, 1)
    rows = [_row(start + dt.timedelta(hours=h), prediction=float(h), hr=h) for h in range(10)]
    store.write_predictions(rows[:6])
    store.write_predictions(rows)  # the first six again: a replay must not duplicate
    assert store.count() == 10
    window = store.read(start=start + dt.timedelta(hours=2), end=start + dt.timedelta(hours=5))
    assert list(window["hr"]) == [2, 3, 4]
    assert list(window["prediction"]) == [2.0, 3.0, 4.0]
    assert list(window.columns) == [
        "prediction_id",
        "event_time",
        "received_time",
        "model_name",
        "model_version",
        "latency_ms",
        *BIKE_INPUTS,
        "prediction",
        "target",
        "label_time",
    ]
    assert window["hr"].dtype == np.int64
    assert window["temp"].dtype == np.float64
    latest = store.read(latest=3)
    assert list(latest["hr"]) == [7, 8, 9]  # oldest first, the newest three
    assert latest["target"].isna().all()


def test_labels_join_and_the_latest_wins(store: Store) -> None:
    rows = [_row(dt.datetime(2012, 8, 1, h)) for h in range(4)]
    store.write_predictions(rows)
    when = dt.datetime(2012, 8, 2)
    store.write_labels(
        [{"prediction_id": rows[0]["prediction_id"], "label_time": when, "target": 5.0}]
    )
    store.write_labels(
        [
            {"prediction_id": rows[0]["prediction_id"], "label_time": when, "target": 7.0},
            {"prediction_id": rows[1]["prediction_id"], "label_time": when, "target": 1.0},
        ]
    )
    assert store.count("labels") == 2
    frame = store.read()
    assert list(frame["target"].fillna(-1)) == [7.0, 1.0, -1, -1]
    assert store.known_ids([rows[2]["prediction_id"], "nope"]) == {rows[2]["prediction_id"]}


def test_two_models_in_one_store_read_back_apart(store: Store) -> None:
    """A regression and a classifier (text classes, a string feature, scores) side by side."""
    start = dt.datetime(2013, 1, 1)
    bikes = [_row(start + dt.timedelta(hours=h), prediction=10.0 + h, hr=h) for h in range(3)]
    churn = [
        _row(
            start + dt.timedelta(hours=h, minutes=30),
            prediction=["stay", "leave"][h % 2],
            model_name="churn",
            scores={"p_leave": 0.25 + h / 10},
            plan=["basic", "pro"][h % 2],
            tenure=float(h),
        )
        for h in range(4)
    ]
    store.write_predictions(bikes + churn)
    store.write_labels(
        [
            {"prediction_id": churn[0]["prediction_id"], "label_time": start, "target": "leave"},
            {"prediction_id": bikes[0]["prediction_id"], "label_time": start, "target": 12.0},
        ]
    )
    first = store.read(model_name="churn")
    assert list(first.columns) == [
        "prediction_id",
        "event_time",
        "received_time",
        "model_name",
        "model_version",
        "latency_ms",
        "plan",
        "tenure",
        "prediction",
        "p_leave",
        "target",
        "label_time",
    ]
    assert set(first["model_name"]) == {"churn"}
    assert list(first["prediction"]) == ["stay", "leave", "stay", "leave"]
    assert list(first["plan"]) == ["basic", "pro", "basic", "pro"]
    assert first["p_leave"].to_numpy() == pytest.approx([0.25, 0.35, 0.45, 0.55])
    assert first["target"].iloc[0] == "leave"
    assert first["target"].iloc[1:].isna().all()
    second = store.read(model_name="bikes")
    assert len(second) == 3
    assert "plan" not in second.columns
    assert "p_leave" not in second.columns
    assert list(second["prediction"]) == [10.0, 11.0, 12.0]
    assert second["target"].iloc[0] == 12.0
    assert len(store.read()) == 7
    assert store.read(model_name="nobody").empty


def test_types_are_kept_and_nan_is_stored_as_missing(store: Store) -> None:
    """Integer and boolean classes stay what they were; NaN (not JSON) becomes missing."""
    start = dt.datetime(2013, 2, 1)
    rows = [
        _row(start, prediction=1, model_name="ints", x=1.5),
        _row(start + dt.timedelta(hours=1), prediction=0, model_name="ints", x=2.5),
        _row(start, prediction=True, model_name="flags", x=1.0),
        _row(start, prediction=math.nan, model_name="odd", x=math.nan),
        _row(start, prediction=np.float64(2.5), model_name="numpy", x=np.int64(3)),
    ]
    store.write_predictions(rows)
    assert list(store.read(model_name="ints")["prediction"]) == [1, 0]
    assert store.read(model_name="ints")["prediction"].dtype == np.int64
    flags = store.read(model_name="flags")["prediction"]
    assert flags.dtype == bool
    assert bool(flags.iloc[0]) is True
    odd = store.read(model_name="odd")
    assert pd.isna(odd["prediction"].iloc[0])
    assert pd.isna(odd["x"].iloc[0])
    numpy = store.read(model_name="numpy")
    assert (numpy["prediction"].iloc[0], numpy["x"].iloc[0]) == (2.5, 3)


def test_rejected_rows_are_stored_capped_and_read_back_per_model(store: Store) -> None:
    start = dt.datetime(2012, 9, 1)
    rows = [
        _rejected(start, hr=3, hum=None, note="x" * 1000),
        _rejected(None, hr="late"),
        _rejected(start + dt.timedelta(days=1), model_name="churn", plan="gold"),
    ]
    store.write_rejected(rows)
    store.write_rejected(rows[:1])  # again: idempotent
    assert store.count("rejected_rows") == 3
    bikes = store.read_rejected(model_name="bikes")
    assert list(bikes.columns[:7]) == [
        "event_time",
        "received_time",
        "model_name",
        "model_version",
        "row",
        "field",
        "reason",
    ]
    assert set(bikes.columns[7:]) == {"hr", "hum", "note"}
    assert list(bikes["hr"]) == [3, "late"]  # values as received
    assert bikes["note"].iloc[0] == "x" * MAX_RAW_VALUE_CHARS
    assert (bikes["field"].iloc[0], bikes["reason"].iloc[0]) == ("hum", "Field required")
    window = store.read_rejected(start=start, end=start + dt.timedelta(days=2))
    assert list(window["model_name"]) == ["bikes", "churn"]
    assert list(store.read_rejected(model_name="churn")["plan"]) == ["gold"]


def test_raw_rows_are_capped_per_value_and_per_row() -> None:
    wide = {f"column_{i:03}": "v" * 300 for i in range(100)}
    text = raw_row({**wide, "hr": 99}, first=["hr"])
    assert len(text) <= MAX_RAW_ROW_CHARS
    kept = json.loads(text)
    assert next(iter(kept)) == "hr"  # the contract's columns are kept first
    assert kept["hr"] == 99
    assert all(len(v) == MAX_RAW_VALUE_CHARS for k, v in kept.items() if k != "hr")
    nested = json.loads(raw_row({"a": {"deep": list(range(1000))}, "n": math.nan}))
    assert len(nested["a"]) == MAX_RAW_VALUE_CHARS
    assert math.isnan(nested["n"])
    assert json.loads(raw_row(["not", "a", "dict"])) == {"_row": '["not", "a", "dict"]'}


def test_unreachable_database_names_itself_without_password() -> None:
    store = Store("postgresql+psycopg://bikes:s3cret@127.0.0.1:1/none?connect_timeout=2")
    with pytest.raises(
        InputError, match=r"store postgresql\+psycopg://bikes:\*\*\*@127.0.0.1:1/none"
    ) as caught:
        store.create()
    assert "s3cret" not in str(caught.value)
    assert not store.reachable()


def test_label_coverage_per_window(store: Store) -> None:
    rows = [_row(dt.datetime(2012, 8, 1) + dt.timedelta(hours=h)) for h in range(48)]
    other = [_row(dt.datetime(2012, 8, 1), model_name="churn", plan="basic") for _ in range(5)]
    store.write_predictions(rows + other)
    labelled = [r for r in rows[:24] if r["event_time"].hour % 2 == 0] + rows[24:30]
    when = dt.datetime(2012, 8, 3)
    store.write_labels(
        [{"prediction_id": r["prediction_id"], "label_time": when, "target": 1.0} for r in labelled]
    )
    coverage = store.label_coverage(
        dt.datetime(2012, 7, 31), dt.datetime(2012, 8, 3), "1D", model_name="bikes"
    )
    assert list(coverage["rows"]) == [0, 24, 24]
    assert list(coverage["labelled"]) == [0, 12, 6]
    assert math.isnan(coverage["coverage"].iloc[0])  # nothing to cover
    assert list(coverage["coverage"].iloc[1:]) == [0.5, 0.25]
    everything = store.label_coverage(dt.datetime(2012, 8, 1), dt.datetime(2012, 8, 2), "1D")
    assert list(everything["rows"]) == [29]


def _old_layout(engine: sa.Engine, schema: str | None) -> None:
    """The tables an older bikes created: one typed column per bike feature."""
    metadata = sa.MetaData(schema=schema)
    sa.Table(
        "predictions",
        metadata,
        sa.Column("prediction_id", sa.String(36), primary_key=True),
        sa.Column("event_time", sa.DateTime, nullable=False),
        sa.Column("prediction", sa.Float, nullable=False),
        sa.Column("hr", sa.Integer),
        sa.Column("temp", sa.Float),
    )
    with engine.begin() as connection:
        metadata.create_all(connection)


def test_a_store_of_an_older_bikes_is_named_not_a_traceback(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'old.db'}"
    _old_layout(sa.create_engine(uri), None)
    store = Store(uri)
    for attempt in (store.create, store.read, store.read_rejected):
        with pytest.raises(InputError, match=r"created by an older bikes .*inputs.*new database"):
            attempt()
    # create() refused before touching anything: no new table was added to the old database.
    assert sa.inspect(store.engine).get_table_names() == ["predictions"]
    with postgres_store(create=False) as fresh:
        _old_layout(fresh.engine, fresh.metadata.schema)
        old = Store(fresh.uri, schema=fresh.metadata.schema)
        with pytest.raises(InputError, match="created by an older bikes"):
            old.read(model_name="bikes")
        old.dispose()


def test_reading_a_database_without_tables_says_so(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'empty.db'}")
    with pytest.raises(InputError, match="no predictions table, nothing was captured here"):
        store.read()


def test_parsed_json_reads_a_batch_as_one_parse_per_text_would() -> None:
    """The store reader's and the export's parse: a list, a tuple (the export's rows) or a
    Series (the reader's frame), NULL as None or NaN."""
    texts = [
        '{"hr": 3, "temp": 0.25, "name": "caf\u00e9", "tags": [1, {"a": null}]}',
        None,
        "12345678901234567890",
        '"leave"',
        "1e-07",
        "true",
        "[]",
    ]
    expected = [None if t is None else json.loads(t) for t in texts]
    assert parsed_json(texts) == expected
    assert parsed_json(tuple(texts)) == expected
    series = pd.Series(texts, index=range(10, 17))  # an index that is not 0..n
    assert parsed_json(series) == expected
    assert parsed_json(pd.Series([np.nan, "2.5", None], dtype=object)) == [None, 2.5, None]
    assert parsed_json([]) == []
