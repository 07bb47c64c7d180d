"""The capture store on real SQLite and real PostgreSQL."""

from __future__ import annotations

import datetime as dt
import typing as T
import uuid

import pytest

from bikes.core import schemas
from bikes.core.errors import InputError
from bikes.io.store import Store


def _row(event: dt.datetime, prediction: float = 1.0, **features: T.Any) -> dict[str, T.Any]:
    values = {f.name: (f.low if f.dtype is int else 0.5) for f in schemas.FEATURES}
    values.update(features)
    return {
        "prediction_id": uuid.uuid4().hex,
        "event_time": event,
        "received_time": dt.datetime(2026, 1, 1),
        "model_name": "bikes",
        "model_version": "1",
        "latency_ms": 2.5,
        "prediction": prediction,
        **values,
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
    latest = store.read(latest=3)
    assert list(latest["hr"]) == [7, 8, 9]  # oldest first, the newest three
    assert latest[schemas.TARGET].isna().all()


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
    assert list(frame[schemas.TARGET].fillna(-1)) == [7.0, 1.0, -1, -1]
    assert store.known_ids([rows[2]["prediction_id"], "nope"]) == {rows[2]["prediction_id"]}


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
    store.write_predictions(rows)
    labelled = [r for r in rows[:24] if r["event_time"].hour % 2 == 0] + rows[24:30]
    when = dt.datetime(2012, 8, 3)
    store.write_labels(
        [{"prediction_id": r["prediction_id"], "label_time": when, "target": 1.0} for r in labelled]
    )
    coverage = store.label_coverage(dt.datetime(2012, 7, 31), dt.datetime(2012, 8, 3), "1D")
    assert list(coverage["rows"]) == [0, 24, 24]
    assert list(coverage["labelled"]) == [0, 12, 6]
    assert coverage["coverage"].iloc[0] != coverage["coverage"].iloc[0]  # NaN: nothing to cover
    assert list(coverage["coverage"].iloc[1:]) == [0.5, 0.25]
