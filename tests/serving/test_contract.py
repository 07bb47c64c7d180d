"""Request rows checked against a contract, and the model's frame built from them."""

from __future__ import annotations

import datetime as dt
import typing as T

import numpy as np
import pydantic as pdt
import pytest

from bikes.core.contract import Contract, Feature
from bikes.serving.contract import Label, RowContract

CONTRACT = Contract(
    task="classification",
    target="sky",
    timestamp="observed_at",
    features=[
        Feature(name="wind dir", kind="categorical", values=["N", "E", "S", "W"]),
        Feature(name="code", kind="categorical", min=0, max=9),
        Feature(name="tag", kind="categorical"),
        Feature(name="flag", kind="categorical", values=[True, False]),
        Feature(name="gust", kind="numeric", min=0, nullable=True),
        Feature(name="count", kind="numeric", max=100),
        Feature(name="level", kind="numeric"),
    ],
)
SIGNATURE = [
    ("level", "float"),
    ("count", "integer"),
    ("gust", "double"),
    ("flag", "boolean"),
    ("tag", "string"),
    ("code", "long"),
    ("wind dir", "string"),
]
VALID = {
    "wind dir": "N",
    "code": 3,
    "tag": "a",
    "flag": True,
    "gust": 1.5,
    "count": 7,
    "level": 0.25,
    "observed_at": "2024-05-01T10:00:00",
}


def _errors(rows: RowContract, **changes: T.Any) -> list[tuple[str, str]]:
    row = {k: v for k, v in (VALID | changes).items() if v is not ...}
    with pytest.raises(pdt.ValidationError) as caught:
        rows.validate([VALID, row])
    return [(".".join(map(str, e["loc"][1:])), e["msg"]) for e in caught.value.errors()]


def test_valid_rows_become_the_models_frame_in_signature_order_and_types() -> None:
    rows = RowContract(CONTRACT, SIGNATURE)
    checked = rows.validate(
        [VALID | {"extra": 1}, VALID | {"gust": None, "code": 4.0}, dict(VALID, flag=False)]
    )
    assert "extra" not in checked[0]
    assert checked[0]["observed_at"] == dt.datetime(2024, 5, 1, 10)
    assert checked[1]["code"] == 4
    assert type(checked[1]["code"]) is int
    frame = rows.frame(checked)
    assert list(frame.columns) == [name for name, _ in SIGNATURE]
    assert frame["count"].dtype == np.int32  # an `integer` input
    assert frame["level"].dtype == np.float32  # a `float` input
    assert frame["code"].dtype == np.int64  # a `long` input
    assert frame["flag"].dtype == bool
    assert frame["gust"].isna().tolist() == [False, True, False]
    assert rows.known_fields[-1] == "observed_at"


def test_a_nullable_feature_may_be_null_or_left_out() -> None:
    rows = RowContract(CONTRACT, SIGNATURE)
    without = {k: v for k, v in VALID.items() if k != "gust"}
    checked = rows.validate([without])
    assert "gust" not in checked[0]
    assert np.isnan(rows.frame(checked)["gust"].iloc[0])
    assert ("count", "Field required") in _errors(rows, count=...)
    assert _errors(rows, count=None)[0][0] == "count"  # not nullable: null is refused


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"wind dir": "NE"}, "wind dir", "Input should be 'N', 'E', 'S' or 'W'"),
        ({"wind dir": 1}, "wind dir", "Input should be a valid string"),
        ({"code": 10}, "code", "Input should be less than or equal to 9"),
        ({"code": 2.5}, "code", "Input should be a valid integer"),
        ({"code": True}, "code", "Input should be a valid integer"),
        ({"tag": 3}, "tag", "Input should be a valid string"),
        ({"flag": 1}, "flag", "Input should be a valid boolean"),
        ({"gust": -1}, "gust", "Input should be greater than or equal to 0"),
        ({"count": 7.5}, "count", "Input should be a valid integer"),
        ({"count": 101}, "count", "Input should be less than or equal to 100"),
        ({"level": float("inf")}, "level", "Input should be a finite number"),
        ({"level": ...}, "level", "Field required"),
        ({"observed_at": "soon"}, "observed_at", "Input should be a valid datetime"),
    ],
)
def test_invalid_values_name_their_field(
    changes: dict[str, T.Any], field: str, message: str
) -> None:
    errors = _errors(RowContract(CONTRACT, SIGNATURE), **changes)
    assert errors[0][0] == field
    assert message in errors[0][1]


def test_without_a_signature_categories_are_any_scalar_and_booleans_are_not_numbers() -> None:
    rows = RowContract(CONTRACT.model_copy(update={"timestamp": None}))
    checked = rows.validate([VALID | {"tag": 5, "code": 2}, VALID | {"tag": False}])
    assert [r["tag"] for r in checked] == [5, False]
    assert "observed_at" not in checked[0]  # no timestamp in this contract: just ignored
    assert list(rows.frame(checked).columns) == CONTRACT.feature_names
    assert _errors(rows, tag=2.5)[0] == (
        "tag",
        "Input should be a category: text, an integer or a boolean",
    )
    assert _errors(rows, tag=["a"])[0][0] == "tag"
    assert _errors(rows, code="3")[0] == ("code", "Input should be a valid number")
    flags = RowContract(Contract(features=[Feature(name="on", kind="categorical", values=[0, 1])]))
    assert flags.validate([{"on": 1.0}]) == [{"on": 1}]
    with pytest.raises(pdt.ValidationError, match="Input should be 0 or 1"):
        flags.validate([{"on": True}])  # True is not the category 1


def test_labels_take_numbers_and_classes_but_not_nan_or_objects() -> None:
    for target in (3, 2.5, "cloudy", True):
        assert Label(prediction_id="x", target=target).target == target
    for bad in (float("nan"), "", "x" * 201, [1], None):
        with pytest.raises(pdt.ValidationError):
            Label(prediction_id="x", target=bad)
