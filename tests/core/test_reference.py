from __future__ import annotations

import datetime as dt
import json
import math

import pandas as pd
import pytest

from bikes.core.errors import InputError
from bikes.core.reference import HELD_OUT_TAG, HeldOutPerformance, validation_source


def _record(**overrides: object) -> HeldOutPerformance:
    values: dict[str, object] = {
        "source": "gate test split data/splits/test.parquet (3,379 rows)",
        "rows": 3379,
        "start": dt.datetime(2012, 7, 1),
        "end": dt.datetime(2012, 12, 31, 23),
        "metrics": {"rmse": 52.4, "mae": 33.1, "r2": 0.9, "mape": math.nan},
        "predictions_uri": "runs:/abc/held_out/predictions.parquet",
    }
    values.update(overrides)
    return HeldOutPerformance(**values)  # type: ignore[arg-type]


def test_the_tag_name_is_the_shared_constant() -> None:
    assert HELD_OUT_TAG == "held_out_performance"


def test_round_trip_through_the_tag_keeps_every_field() -> None:
    record = _record()
    text = record.to_tag()
    back = HeldOutPerformance.from_tag(text)
    assert back.source == record.source
    assert back.rows == 3379
    assert back.start == dt.datetime(2012, 7, 1)
    assert back.end == dt.datetime(2012, 12, 31, 23)
    assert back.predictions_uri == record.predictions_uri
    assert back.metrics["rmse"] == 52.4
    assert back.metrics["r2"] == 0.9
    assert math.isnan(back.metrics["mape"])
    assert back.period == "2012-07-01T00:00:00..2012-12-31T23:00:00"


def test_the_tag_is_strict_json_with_null_for_undefined_metrics() -> None:
    data = json.loads(_record().to_tag())  # json.loads accepts NaN; check the text instead
    assert data["metrics"]["mape"] is None
    assert "NaN" not in _record().to_tag()


def test_a_record_without_period_or_predictions_round_trips() -> None:
    record = _record(start=None, end=None, predictions_uri=None)
    back = HeldOutPerformance.from_tag(record.to_tag())
    assert back == HeldOutPerformance(
        source=record.source, rows=3379, start=None, end=None, metrics=back.metrics
    )
    assert back.period == "unknown"


def test_timezone_aware_times_keep_their_offset() -> None:
    start = dt.datetime(2012, 7, 1, tzinfo=dt.UTC)
    back = HeldOutPerformance.from_tag(_record(start=start, end=start).to_tag())
    assert back.start == start
    assert back.start is not None
    assert back.start.tzinfo is not None


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("not json", "not JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"source": "x", "rows": 3}', r"missing keys \['metrics'\]"),
        ('{"source": "x", "rows": 3, "metrics": [1]}', "metrics: expected an object"),
        ('{"source": "x", "rows": 3, "metrics": {"rmse": "high"}}', "metrics.rmse"),
        ('{"source": "x", "rows": -1, "metrics": {}}', "rows"),
        ('{"source": "x", "rows": 2.5, "metrics": {}}', "rows"),
        ('{"source": "", "rows": 3, "metrics": {}}', "source"),
        ('{"source": "x", "rows": 3, "metrics": {}, "start": "yesterday"}', "start"),
        (
            '{"source": "x", "rows": 3, "metrics": {}, '
            '"start": "2012-02-01T00:00:00", "end": "2012-01-01T00:00:00"}',
            "after end",
        ),
    ],
)
def test_a_malformed_tag_names_what_is_wrong(text: str, match: str) -> None:
    with pytest.raises(InputError, match=match) as error:
        HeldOutPerformance.from_tag(text)
    assert HELD_OUT_TAG in str(error.value)


def test_validation_source_says_share_rows_and_period() -> None:
    text = validation_source(0.2, 2780, dt.datetime(2012, 4, 20, 5), dt.datetime(2012, 6, 30, 23))
    assert text == "validation split of training (last 20%, 2,780 rows, 2012-04-20..2012-06-30)"


def test_event_period_is_the_rows_first_and_last_event_time() -> None:
    from bikes.core.reference import event_period

    rows = pd.DataFrame(
        {"at": ["2012-07-02 05:00", "2012-07-01 03:00", "2012-07-03 23:00"], "x": [1, 2, 3]}
    )
    assert event_period(rows, "at") == (dt.datetime(2012, 7, 1, 3), dt.datetime(2012, 7, 3, 23))
    assert event_period(rows, None) == (None, None)
    assert event_period(rows, "missing") == (None, None)
