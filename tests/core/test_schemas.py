from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bikes.core import schemas
from bikes.core.errors import SchemaError


def test_real_splits_satisfy_every_schema(train_frame: pd.DataFrame) -> None:
    schemas.validate(train_frame, schemas.INPUTS_SCHEMA, "train")
    schemas.validate(train_frame, schemas.TARGETS_SCHEMA, "train")


def test_features_exclude_leaking_columns() -> None:
    assert not set(schemas.NEVER_FEATURES) & set(schemas.FEATURE_NAMES)
    assert schemas.TARGET not in schemas.FEATURE_NAMES
    assert len(schemas.FEATURE_NAMES) == 12


def test_string_in_temp_names_the_column(train_frame: pd.DataFrame) -> None:
    frame = train_frame.head(10).copy()
    frame["temp"] = frame["temp"].astype(str)
    with pytest.raises(SchemaError, match=r"column\(s\) temp:") as caught:
        schemas.validate(frame, schemas.INPUTS_SCHEMA, "request.parquet")
    message = str(caught.value)
    assert message.startswith("request.parquet: inputs schema violated")
    assert "temp: expected dtype('float64'), got str" in message
    assert "could not run" not in message  # the range checks' noise is folded into the dtype


def test_long_failure_lists_are_cut_to_a_few_rows(train_frame: pd.DataFrame) -> None:
    frame = train_frame.head(10).assign(windspeed=2.0)
    with pytest.raises(SchemaError) as caught:
        schemas.validate(frame, schemas.INPUTS_SCHEMA, "x")
    message = str(caught.value)
    assert "windspeed: in_range(0.0, 1.0) failed on 10 row(s) (row 0: 2.0" in message
    assert "row 4: 2.0 and 5 more)" in message


def test_hour_out_of_range_names_column_and_row(train_frame: pd.DataFrame) -> None:
    frame = train_frame.head(10).copy()
    frame.loc[7, "hr"] = 24
    with pytest.raises(SchemaError) as caught:
        schemas.validate(frame, schemas.INPUTS_SCHEMA, "inputs.parquet")
    assert "hr: in_range(0, 23) failed on 1 row(s) (row 7: 24)" in str(caught.value)


def test_every_failing_column_is_listed_at_once(train_frame: pd.DataFrame) -> None:
    frame = train_frame.head(10).drop(columns=["weathersit"]).copy()
    frame.loc[2, "season"] = 5
    frame.loc[3, "hum"] = np.nan
    with pytest.raises(SchemaError) as caught:
        schemas.validate(frame, schemas.INPUTS_SCHEMA, "x")
    message = str(caught.value)
    assert "column(s) hum, season, weathersit" in message
    assert "missing column(s): weathersit" in message
    assert "season: in_range(1, 4) failed on 1 row(s) (row 2: 5)" in message
    assert "hum: not_nullable failed on 1 row(s)" in message


def test_negative_target_is_rejected(train_frame: pd.DataFrame) -> None:
    frame = train_frame.head(3).copy()
    frame.loc[1, schemas.TARGET] = -1
    with pytest.raises(SchemaError, match=r"cnt: greater_than_or_equal_to\(0\).*row 1: -1"):
        schemas.validate(frame, schemas.TARGETS_SCHEMA, "targets")


def test_features_of_keeps_only_the_contract_in_order(train_frame: pd.DataFrame) -> None:
    frame = train_frame.head(2).assign(casual=1, registered=2, instant=3)
    assert list(schemas.features_of(frame.iloc[:, ::-1]).columns) == list(schemas.FEATURE_NAMES)
