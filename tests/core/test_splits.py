from __future__ import annotations

import datetime as dt

import pandas as pd
import pydantic
import pytest

from bikes.core.errors import ConfigError
from bikes.core.splits import DateRange, split_by_time


def _hours(start: str, periods: int) -> pd.DataFrame:
    return pd.DataFrame({"timestamp": pd.date_range(start, periods=periods, freq="h")})


def test_ranges_are_inclusive_of_whole_days() -> None:
    frame = _hours("2011-01-01", 24 * 4)
    parts = split_by_time(
        frame,
        {
            "b": DateRange(start=dt.date(2011, 1, 3), end=dt.date(2011, 1, 4)),
            "a": DateRange(start=dt.date(2011, 1, 1), end=dt.date(2011, 1, 2)),
        },
        "timestamp",
    )
    assert list(parts) == ["a", "b"]
    assert len(parts["a"]) == len(parts["b"]) == 48
    assert parts["a"]["timestamp"].max() < parts["b"]["timestamp"].min()


def test_overlapping_ranges_name_the_split() -> None:
    with pytest.raises(ConfigError, match=r"job.splits.b: overlaps job.splits.a"):
        split_by_time(
            _hours("2011-01-01", 48),
            {
                "a": DateRange(start=dt.date(2011, 1, 1), end=dt.date(2011, 1, 2)),
                "b": DateRange(start=dt.date(2011, 1, 2), end=dt.date(2011, 1, 3)),
            },
            "timestamp",
        )


def test_empty_range_says_what_the_data_covers() -> None:
    with pytest.raises(ConfigError, match=r"job.splits.late: no rows .*\(data covers 2011-01-01"):
        split_by_time(
            _hours("2011-01-01", 24),
            {"late": DateRange(start=dt.date(2013, 1, 1), end=dt.date(2013, 2, 1))},
            "timestamp",
        )


def test_reversed_range_is_a_config_error() -> None:
    with pytest.raises(pydantic.ValidationError, match="is before start"):
        DateRange.model_validate({"start": "2012-01-02", "end": "2012-01-01"})
