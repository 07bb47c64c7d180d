"""The request contract, built from the one feature table in ``bikes.core.schemas``.

MLflow's scoring protocol (``dataframe_records`` or ``dataframe_split``), so clients of
``mlflow models serve`` can switch; each row is checked against the same ranges as the jobs.
"""

from __future__ import annotations

import datetime as dt
import typing as T

import pydantic as pdt

from bikes.core import schemas


def _field(feature: schemas.Feature) -> T.Any:
    kind: type = pdt.StrictInt if feature.dtype is int else pdt.FiniteFloat
    return (
        kind,
        pdt.Field(ge=feature.low, le=feature.high, description=feature.description),
    )


FeatureRow: type[pdt.BaseModel] = pdt.create_model(
    "FeatureRow",
    __config__=pdt.ConfigDict(extra="ignore"),
    timestamp=(dt.datetime | None, pdt.Field(default=None, description="event time")),
    **{feature.name: _field(feature) for feature in schemas.FEATURES},
)
ROWS = pdt.TypeAdapter(list[FeatureRow])


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
    predictions: list[float]
    prediction_ids: list[str]
    model_version: str


class Label(pdt.BaseModel):
    prediction_id: str = pdt.Field(min_length=1, max_length=36)
    target: pdt.FiniteFloat = pdt.Field(ge=0)


class LabelsRequest(pdt.BaseModel):
    model_config = pdt.ConfigDict(extra="forbid")

    labels: list[Label] = pdt.Field(min_length=1)


class LabelsResponse(pdt.BaseModel):
    recorded: int
    unknown_ids: list[str]
