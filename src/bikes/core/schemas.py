"""The data contract: features, their kinds and ranges, defined once.

Training, the evaluation gate, the prediction service and monitoring's quality checks all read
this module, so a range changed here changes everywhere at once.
"""

from __future__ import annotations

import dataclasses
import typing as T

import pandas as pd
import pandera.pandas as pa

from bikes.core.errors import SchemaError

FeatureKind = T.Literal["categorical", "binary", "numeric"]

TIMESTAMP = "timestamp"
TARGET = "cnt"
PREDICTION = "prediction"
MODEL_VERSION = "model_version"
# Columns that leak the target (casual + registered == cnt) or are mere row numbers.
NEVER_FEATURES = ("instant", "casual", "registered")


@dataclasses.dataclass(frozen=True)
class Feature:
    """One model input: its name, kind, dtype and the closed range of valid values."""

    name: str
    kind: FeatureKind
    dtype: type
    low: float
    high: float
    description: str


FEATURES: tuple[Feature, ...] = (
    Feature("season", "categorical", int, 1, 4, "1 winter, 2 spring, 3 summer, 4 fall"),
    Feature("yr", "binary", int, 0, 1, "0 = 2011, 1 = 2012"),
    Feature("mnth", "categorical", int, 1, 12, "month"),
    Feature("hr", "categorical", int, 0, 23, "hour of the day"),
    Feature("holiday", "binary", int, 0, 1, "public holiday"),
    Feature("weekday", "categorical", int, 0, 6, "0 = Sunday"),
    Feature("workingday", "binary", int, 0, 1, "neither weekend nor holiday"),
    Feature("weathersit", "categorical", int, 1, 4, "1 clear .. 4 heavy rain or snow"),
    Feature("temp", "numeric", float, 0.0, 1.0, "temperature in C / 41"),
    Feature("atemp", "numeric", float, 0.0, 1.0, "feels-like temperature in C / 50"),
    Feature("hum", "numeric", float, 0.0, 1.0, "humidity / 100"),
    Feature("windspeed", "numeric", float, 0.0, 1.0, "wind speed / 67"),
)
FEATURE_NAMES: tuple[str, ...] = tuple(feature.name for feature in FEATURES)
FEATURES_BY_NAME: dict[str, Feature] = {feature.name: feature for feature in FEATURES}


def _feature_column(feature: Feature) -> pa.Column:
    return pa.Column(
        feature.dtype,
        checks=pa.Check.in_range(feature.low, feature.high),
        nullable=False,
        description=feature.description,
    )


INPUTS_SCHEMA = pa.DataFrameSchema(
    {
        TIMESTAMP: pa.Column("datetime64[ns]", nullable=False, required=False),
        **{feature.name: _feature_column(feature) for feature in FEATURES},
    },
    name="inputs",
    strict=False,
)
TARGETS_SCHEMA = pa.DataFrameSchema(
    {TARGET: pa.Column(int, checks=pa.Check.ge(0), nullable=False)},
    name="targets",
    strict=False,
)
OUTPUTS_SCHEMA = pa.DataFrameSchema(
    {
        PREDICTION: pa.Column(float, nullable=False),
        MODEL_VERSION: pa.Column(str, nullable=False),
    },
    name="outputs",
    strict=False,
)

MAX_ROWS_IN_MESSAGE = 5


def validate(frame: pd.DataFrame, schema: pa.DataFrameSchema, source: str) -> pd.DataFrame:
    """Validate lazily, so one error lists every failing column, each with a few failing rows."""
    try:
        return schema.validate(frame, lazy=True)
    except pa.errors.SchemaErrors as error:
        raise SchemaError(describe_failures(error.failure_cases, schema.name, source)) from None


def describe_failures(failure_cases: pd.DataFrame, schema_name: str | None, source: str) -> str:
    """Turn pandera's failure table into a message a person can act on."""
    lines: list[str] = []
    missing = failure_cases[failure_cases["check"] == "column_in_dataframe"]
    if not missing.empty:
        names = ", ".join(sorted(str(case) for case in missing["failure_case"]))
        lines.append(f"  - missing column(s): {names}")
    present = failure_cases[failure_cases["check"] != "column_in_dataframe"]
    for (column, check), cases in present.groupby(["column", "check"], sort=True, dropna=False):
        with_rows = cases[cases["index"].notna()]
        if with_rows.empty:
            first = cases["failure_case"].iloc[0]
            if str(check).startswith("dtype("):
                lines.append(f"  - {column}: expected {check}, got {first}")
            # Otherwise a check that could not run (a range check on strings, say): it only
            # repeats the dtype problem, unless it is the column's only failure.
            elif len(present[present["column"] == column]) == len(cases):
                lines.append(f"  - {column}: {check} could not run: {first}")
            continue
        examples = ", ".join(
            f"row {row}: {value!r}"
            for row, value in zip(
                with_rows["index"].head(MAX_ROWS_IN_MESSAGE),
                with_rows["failure_case"].head(MAX_ROWS_IN_MESSAGE),
                strict=True,
            )
        )
        more = len(with_rows) - MAX_ROWS_IN_MESSAGE
        suffix = f" and {more} more" if more > 0 else ""
        lines.append(
            f"  - {column}: {check} failed on {len(with_rows)} row(s) ({examples}{suffix})"
        )
    columns = sorted(
        {str(case) for case in missing["failure_case"]} | {str(c) for c in present["column"]}
    )
    header = f"{source}: {schema_name or 'data'} schema violated in column(s) {', '.join(columns)}:"
    return "\n".join([header, *lines])


def features_of(frame: pd.DataFrame) -> pd.DataFrame:
    """The model's view of a frame: feature columns only, in the contract's order."""
    return frame.loc[:, list(FEATURE_NAMES)]
