"""The request contract, built at run time from the served model's data contract.

MLflow's scoring protocol (``dataframe_records`` or ``dataframe_split``), so clients of
``mlflow models serve`` can switch. Each row is checked against the contract the model was
trained with (or the job's own): numeric features take finite numbers within their range,
categorical ones one of their ``values`` (or any text, integer or boolean, within ``min``/``max``
when given), nullable ones may be null or left out; the contract's timestamp column is the
optional event time. The model then gets its input frame in its signature's column order and
types (a ``long`` input gets integers).
"""

from __future__ import annotations

import datetime as dt
import math
import re
import typing as T

import numpy as np
import pandas as pd
import pydantic as pdt
from pydantic_core import PydanticCustomError
from typing_extensions import TypedDict

from bikes.core.contract import Contract, Feature, Value, as_naive_utc

# Signature types (MLflow's DataType names) and the Python values a request row must hold.
_INTEGER_TYPES = frozenset({"long", "integer"})
_FLOAT_TYPES = frozenset({"double", "float"})
# Narrower dtypes than the ones pandas infers from Python values.
_NARROW_DTYPES: dict[str, type[np.generic]] = {"integer": np.int32, "float": np.float32}
MAX_VALUES_IN_MESSAGE = 20
_typed_dict: T.Any = TypedDict  # the functional form, with the contract's column names as keys
# NUL: PostgreSQL text refuses it; a lone surrogate (JSON "\\ud800"): not UTF-8, so neither a
# response nor a database can carry it. Both are refused where a text value enters.
_UNSTORABLE = re.compile(r"[\x00\ud800-\udfff]")


def _bound(value: float | None) -> float | int | None:
    """3.0 as 3 in messages and schemas, as a person wrote it."""
    if value is not None and float(value).is_integer():
        return int(value)
    return value


def _error(kind: str, message: str, **context: T.Any) -> PydanticCustomError:
    return PydanticCustomError(kind, message, context or None)


def _integer(value: T.Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise _error("int_type", "Input should be a valid integer")


def _number(value: T.Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _error("float_type", "Input should be a valid number")
    if not math.isfinite(value):
        raise _error("finite_number", "Input should be a finite number")
    return float(value)


def _storable(value: str) -> str:
    """Text a database can keep and a response can carry: no NUL, no lone surrogate."""
    found = _UNSTORABLE.search(value)
    if found is None:
        return value
    if found.group() == "\x00":
        raise _error("string_nul", "Input should not contain NUL characters (\\u0000)")
    raise _error("string_unicode", "Input should be valid Unicode text (a lone surrogate)")


def _scalar(value: T.Any) -> str | int | bool:
    if isinstance(value, str):
        return _storable(value)
    if isinstance(value, bool | int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise _error("category_type", "Input should be a category: text, an integer or a boolean")


def _key(value: Value) -> tuple[str, Value]:
    """Membership without Python's True == 1: booleans, numbers and text apart."""
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int | float):
        return ("number", value)
    return ("text", value)


def _listed(values: T.Sequence[Value]) -> str:
    shown = [repr(v) for v in values[:MAX_VALUES_IN_MESSAGE]]
    more = len(values) - len(shown)
    if not shown:
        return ""
    if more > 0:
        return f"{', '.join(shown)} or one of {more} more"
    return shown[0] if len(shown) == 1 else f"{', '.join(shown[:-1])} or {shown[-1]}"


def _category(feature: Feature, signature_type: str | None) -> T.Callable[[T.Any], T.Any]:
    """A categorical feature's check: the type its model takes, its range, its values."""
    if signature_type == "string":
        convert: T.Callable[[T.Any], T.Any] = _text
    elif signature_type == "boolean":
        convert = _boolean
    elif signature_type in _INTEGER_TYPES:
        convert = _integer
    elif signature_type in _FLOAT_TYPES:
        convert = _number
    else:
        convert = _scalar
    low, high = _bound(feature.min), _bound(feature.max)
    allowed = {_key(v): v for v in feature.values or ()}
    expected = _listed(feature.values or [])

    def check(value: T.Any) -> T.Any:
        value = convert(value)
        if low is not None or high is not None:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise _error("float_type", "Input should be a valid number")
            if low is not None and value < low:
                raise _error(
                    "greater_than_equal", "Input should be greater than or equal to {ge}", ge=low
                )
            if high is not None and value > high:
                raise _error(
                    "less_than_equal", "Input should be less than or equal to {le}", le=high
                )
        if allowed:
            try:
                return allowed[_key(value)]
            except KeyError:
                raise _error(
                    "literal_error", "Input should be {expected}", expected=expected
                ) from None
        return value

    return check


def _text(value: T.Any) -> str:
    if not isinstance(value, str):
        raise _error("string_type", "Input should be a valid string")
    return _storable(value)


def _boolean(value: T.Any) -> bool:
    if not isinstance(value, bool):
        raise _error("bool_type", "Input should be a valid boolean")
    return value


def _input_type(feature: Feature, signature_type: str | None) -> T.Any:
    """What the JSON schema tells a client the feature takes."""
    if feature.values is not None:
        return T.Literal[tuple(feature.values)]
    if signature_type == "string":
        return str
    if signature_type == "boolean":
        return bool
    if signature_type in _INTEGER_TYPES:
        return int
    if signature_type in _FLOAT_TYPES:
        return float
    return str | int | bool


def _annotation(feature: Feature, signature_type: str | None) -> T.Any:
    description = feature.description or None
    if feature.kind == "numeric":
        kind: T.Any = int if signature_type in _INTEGER_TYPES else pdt.FiniteFloat
        annotation: T.Any = T.Annotated[
            kind,
            pdt.Field(ge=_bound(feature.min), le=_bound(feature.max), description=description),
        ]
    else:
        annotation = T.Annotated[
            T.Any,
            pdt.PlainValidator(
                _category(feature, signature_type),
                json_schema_input_type=_input_type(feature, signature_type),
            ),
            pdt.Field(
                description=description,
                json_schema_extra={
                    k: v
                    for k, v in (("minimum", _bound(feature.min)), ("maximum", _bound(feature.max)))
                    if v is not None
                },
            ),
        ]
    if feature.nullable:
        return T.NotRequired[annotation | None]
    return annotation


def naive_utc(moment: dt.datetime) -> dt.datetime:
    """An event time as the store keeps it: UTC, without a zone. An aware time that leaves
    Python's years 1..9999 in the conversion ("9999-12-31T23:59:59-10:00") is a validation
    error naming the field, not an OverflowError in the request handler."""
    try:
        return T.cast(dt.datetime, as_naive_utc(moment))
    except ValueError:
        raise _error(
            "datetime_range", "Input should be a datetime between years 1 and 9999 in UTC"
        ) from None


# The contract's timestamp column: any datetime pydantic reads, stored as naive UTC.
EventTime = T.Annotated[dt.datetime, pdt.AfterValidator(naive_utc)]
EVENT_TIME: pdt.TypeAdapter[dt.datetime] = pdt.TypeAdapter(EventTime)


class RowContract:
    """Request rows checked against a contract, and the model's frame built from them.

    ``signature``: the model signature's ``(name, type)`` inputs; without one, the contract's
    features in their order, numbers as floats.
    """

    def __init__(
        self, contract: Contract, signature: T.Sequence[tuple[str, str]] | None = None
    ) -> None:
        self.contract = contract
        types = dict(signature or ())
        features = contract.feature_list
        self.columns = [name for name, _ in signature] if signature else contract.feature_names
        self.timestamp = contract.timestamp
        fields = {f.name: _annotation(f, types.get(f.name)) for f in features}
        if self.timestamp is not None:
            fields[self.timestamp] = T.NotRequired[EventTime | None]
        row: T.Any = _typed_dict("Row", fields)
        self.adapter: pdt.TypeAdapter[list[dict[str, T.Any]]] = pdt.TypeAdapter(list[row])
        self._narrow: dict[str, type[np.generic]] = {
            name: _NARROW_DTYPES[kind] for name, kind in types.items() if kind in _NARROW_DTYPES
        }

    @property
    def known_fields(self) -> list[str]:
        """The fields a row may carry: the features and the event time."""
        return self.columns + ([self.timestamp] if self.timestamp else [])

    def validate(self, records: list[dict[str, T.Any]]) -> list[dict[str, T.Any]]:
        """Every row, checked: fresh dicts of the contract's fields (others dropped), values
        as the model takes them; ``pydantic.ValidationError`` lists every failing row and field.
        """
        return self.adapter.validate_python(records)

    def frame(self, rows: list[dict[str, T.Any]]) -> pd.DataFrame:
        """The model's input: its columns in its order (a nullable one left out is missing)."""
        frame = pd.DataFrame(rows, columns=self.columns)
        for name, dtype in self._narrow.items():
            if not frame[name].isna().any():
                frame[name] = frame[name].astype(dtype)
        return frame

    def json_schema(self) -> dict[str, T.Any]:
        """The rows' JSON schema: what a client may send."""
        return self.adapter.json_schema()


class DataframeSplit(pdt.BaseModel):
    columns: list[str]
    data: list[list[T.Any]]

    def records(self) -> list[dict[str, T.Any]]:
        for number, row in enumerate(self.data):
            if len(row) != len(self.columns):
                raise ValueError(
                    f"dataframe_split.data[{number}]: "
                    f"{len(row)} values for {len(self.columns)} columns"
                )
        return [dict(zip(self.columns, row, strict=True)) for row in self.data]


class InvocationRequest(pdt.BaseModel):
    """``{"dataframe_records": [{...}]}`` or ``{"dataframe_split": {"columns", "data"}}``."""

    model_config = pdt.ConfigDict(extra="forbid")

    dataframe_records: list[dict[str, T.Any]] | None = None
    dataframe_split: DataframeSplit | None = None

    @pdt.model_validator(mode="after")
    def _exactly_one(self) -> InvocationRequest:
        if (self.dataframe_records is None) == (self.dataframe_split is None):
            raise ValueError("give exactly one of dataframe_records or dataframe_split")
        return self

    def records(self) -> list[dict[str, T.Any]]:
        if self.dataframe_records is not None:
            return self.dataframe_records
        assert self.dataframe_split is not None
        return self.dataframe_split.records()


class InvocationResponse(pdt.BaseModel):
    """One prediction per row, in order, and the ids to send its label with."""

    predictions: list[float | int | bool | str] = pdt.Field(
        description="A number per row (regression) or a class (classification)."
    )
    probabilities: list[dict[str, float]] | None = pdt.Field(
        default=None,
        description="Classification, when the model gives scores: per row, the probability of "
        "each class.",
    )
    prediction_ids: list[str] = pdt.Field(description="Send a row's label with its id.")
    model_name: str = pdt.Field(description="The registered model that answered.")
    model_version: str = pdt.Field(description="Its version.")


def _label(value: T.Any) -> Value:
    """A label: a finite number or a class (text, integer, boolean)."""
    if isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _error("finite_number", "Input should be a finite number")
        return value
    if isinstance(value, str):
        if not value or len(value) > 200:
            raise _error("string_length", "Input should be a class of 1 to 200 characters")
        return _storable(value)
    raise _error("label_type", "Input should be a number or a class (text, integer, boolean)")


class Label(pdt.BaseModel):
    prediction_id: T.Annotated[
        str, pdt.Field(min_length=1, max_length=36), pdt.AfterValidator(_storable)
    ]
    target: T.Annotated[
        Value,
        pdt.PlainValidator(_label, json_schema_input_type=float | int | bool | str),
        pdt.Field(description="The true value (regression) or class (classification)."),
    ]


class LabelsRequest(pdt.BaseModel):
    model_config = pdt.ConfigDict(extra="forbid")

    labels: list[Label] = pdt.Field(min_length=1)


class LabelsResponse(pdt.BaseModel):
    recorded: int
    unknown_ids: list[str]
