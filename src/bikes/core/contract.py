"""The data contract: what a job knows about a model's table, said once in config.

A ``Contract`` names the task, the label, prediction, score, time and id columns, the features
with their kinds and valid values, and the segments to slice by. Training, the gate, the
prediction service, capture and monitoring all read it, so a range changed in the contract
changes everywhere at once. Features may be left out: they then come from the model's
signature (``with_signature``) or, without a model, from the data (``with_columns``).

Pure computation: loading a contract from a YAML file is ``bikes.io.contracts``' job.
"""

from __future__ import annotations

import datetime as dt
import typing as T

import pandas as pd
import pydantic as pdt

from bikes.core.errors import ContractError

if T.TYPE_CHECKING:  # pandera (about 1 s to import) only where a schema is built
    import pandera.pandas as pa

Task = T.Literal["regression", "classification"]
FeatureKind = T.Literal["numeric", "categorical"]
Value = bool | int | float | str

# The columns the capture store keeps around a prediction's inputs and scores, in the order it
# reads them back (``bikes.io.store`` builds its table from them).
CAPTURE_COLUMNS = (
    "prediction_id",
    "event_time",
    "received_time",
    "model_name",
    "model_version",
    "latency_ms",
)
# Columns the capture store and the jobs add around a model's table: never features.
SERVICE_COLUMNS = frozenset({*CAPTURE_COLUMNS, "label_time"})
# Signature types (MLflow's DataType names) and what kind of feature they hold.
NUMERIC_TYPES = frozenset({"long", "integer", "double", "float"})
CATEGORICAL_TYPES = frozenset({"string", "boolean"})


class Feature(pdt.BaseModel, strict=False, frozen=True, extra="forbid"):
    """One model input: its kind and the values it may take."""

    name: str = pdt.Field(min_length=1, description="The column's name in data and requests.")
    kind: FeatureKind = pdt.Field(
        default="numeric",
        description="numeric (drift on distributions, ranges) or categorical (drift on "
        "category shares, unseen values).",
    )
    min: float | None = pdt.Field(default=None, description="Smallest valid value (inclusive).")
    max: float | None = pdt.Field(default=None, description="Largest valid value (inclusive).")
    values: list[Value] | None = pdt.Field(
        default=None, description="The valid categories of a categorical feature."
    )
    nullable: bool = pdt.Field(default=False, description="Whether a missing value is valid input.")
    description: str = pdt.Field(default="", description="What the column means, for people.")

    @pdt.model_validator(mode="after")
    def _consistent(self) -> Feature:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"feature {self.name!r}: min {self.min:g} > max {self.max:g}")
        if self.values is not None and self.kind != "categorical":
            raise ValueError(f"feature {self.name!r}: values are for categorical features")
        if self.values is not None and not self.values:
            raise ValueError(f"feature {self.name!r}: values is empty")
        return self

    @property
    def binary(self) -> bool:
        """A categorical feature with exactly two valid values (drift uses a proportions test)."""
        return self.kind == "categorical" and self.values is not None and len(self.values) == 2

    def in_range(self, values: pd.Series) -> pd.Series:
        """True where a present value is valid (range and categories); missing values pass."""
        valid = pd.Series(True, index=values.index)
        present = values.notna()
        if self.values is not None:
            valid &= values.isin(self.values) | ~present
        if self.min is not None or self.max is not None:
            numbers = pd.to_numeric(values, errors="coerce")
            if self.min is not None:
                valid &= ~(numbers < self.min)
            if self.max is not None:
                valid &= ~(numbers > self.max)
        return valid

    def pandera_column(self) -> pa.Column:
        import pandera.pandas as pa

        checks = []
        if self.values is not None:
            checks.append(pa.Check.isin(self.values))
        if self.min is not None and self.max is not None:
            checks.append(pa.Check.in_range(self.min, self.max))
        elif self.min is not None:
            checks.append(pa.Check.ge(self.min))
        elif self.max is not None:
            checks.append(pa.Check.le(self.max))
        return pa.Column(
            float if self.kind == "numeric" else None,
            checks=checks,
            coerce=self.kind == "numeric",  # integers are numbers too; text is not
            nullable=self.nullable,
            description=self.description or None,
        )


class Contract(pdt.BaseModel, strict=False, frozen=True, extra="forbid"):
    """What a model's table holds: task, label, prediction, scores, time, id, features, segments.

    ``features`` may be omitted: the model signature's inputs are the features then (numbers
    numeric; strings and booleans categorical), or, with no model, every column that has no
    other role.
    """

    task: Task = pdt.Field(
        default="regression", description="regression or classification (binary or multiclass)."
    )
    target: str | None = pdt.Field(
        default=None,
        description="The label column; needed for training, the gate and performance.",
    )
    prediction: str = pdt.Field(
        default="prediction",
        description="The prediction column in stored and parquet data (a class for classifiers).",
    )
    score: str | list[str] | dict[str, str] | None = pdt.Field(
        default=None,
        description="Classification: the positive-class probability column, or the per-class "
        "probability columns (a list in sorted class order, or a class -> column mapping).",
    )
    positive_class: Value | None = pdt.Field(
        default=None,
        description="Binary classification: the class that precision, recall, F1 and the score "
        "refer to. Default: the greater of the two classes, as scikit-learn orders them.",
    )
    timestamp: str | None = pdt.Field(default=None, description="The event-time column.")
    id: str | None = pdt.Field(default=None, description="A row identifier column.")
    features: list[Feature] | None = pdt.Field(
        default=None,
        description="The model inputs. Default: the model signature's inputs, or (no model) "
        "every column that is not target, prediction, score, timestamp or id.",
    )
    segments: list[str] = pdt.Field(
        default_factory=list,
        description="Columns whose values the gate and monitoring score separately.",
    )
    expected_drift: list[str] = pdt.Field(
        default_factory=list,
        description="Features whose drift is expected by construction (calendar and trend "
        "columns such as yr, mnth, season against a monthly window): monitoring still scores "
        "and shows them, marked expected, but leaves them out of the dataset drift share "
        "and the status.",
    )

    @pdt.model_validator(mode="after")
    def _consistent(self) -> Contract:
        if self.score is not None and self.task != "classification":
            raise ValueError("score: probability columns are for classification contracts")
        if self.features is not None:
            names = [feature.name for feature in self.features]
            duplicates = sorted({name for name in names if names.count(name) > 1})
            if duplicates:
                raise ValueError(f"features: listed twice: {', '.join(duplicates)}")
            clashing = sorted(set(names) & set(self.role_columns))
            if clashing:
                raise ValueError(
                    f"features: {', '.join(clashing)} also named as target, prediction, "
                    "score, timestamp or id"
                )
            unknown = [s for s in self.segments if s not in names]
            if unknown:
                raise ValueError(f"segments: {', '.join(unknown)} not among the features")
        self._check_expected_drift()
        return self

    def _check_expected_drift(self) -> None:
        """Each ``expected_drift`` column is a feature, named once: checked against the
        features once they are known (said, or taken from a signature or a table)."""
        listed = self.expected_drift
        twice = sorted({name for name in listed if listed.count(name) > 1})
        if twice:
            raise ValueError(f"expected_drift: listed twice: {', '.join(twice)}")
        roles = [name for name in listed if name in self.role_columns]
        if roles:
            raise ValueError(
                f"expected_drift: {', '.join(roles)} not a feature (named as target, "
                "prediction, score, timestamp or id)"
            )
        if self.features is None:
            return
        names = {feature.name for feature in self.features}
        unknown = [name for name in listed if name not in names]
        if unknown:
            raise ValueError(f"expected_drift: {', '.join(unknown)} not among the features")

    # -- names ------------------------------------------------------------------------------
    @property
    def score_columns(self) -> list[str]:
        if self.score is None:
            return []
        if isinstance(self.score, str):
            return [self.score]
        if isinstance(self.score, dict):
            return list(self.score.values())
        return list(self.score)

    @property
    def role_columns(self) -> list[str]:
        """Every column with a role other than feature."""
        roles = [self.target, self.prediction, self.timestamp, self.id, *self.score_columns]
        return [name for name in roles if name]

    @property
    def feature_list(self) -> list[Feature]:
        if self.features is None:
            raise ContractError(
                "contract: features unknown: give job.contract.features, or a model with a "
                "signature to take them from"
            )
        return list(self.features)

    @property
    def feature_names(self) -> list[str]:
        return [feature.name for feature in self.feature_list]

    def feature(self, name: str) -> Feature | None:
        return next((f for f in self.features or () if f.name == name), None)

    @property
    def is_classification(self) -> bool:
        return self.task == "classification"

    def require_target(self, what: str) -> str:
        """The label column, or an error saying that ``what`` needs one."""
        if self.target is None:
            raise ContractError(f"job.contract.target: {what} needs the label column")
        return self.target

    # -- completing the features --------------------------------------------------------------
    def with_signature(self, inputs: T.Sequence[tuple[str, str]], model: str) -> Contract:
        """Features checked against (or taken from) a model signature's ``(name, type)`` inputs.

        A feature the signature lacks, an input the features lack, the label among the inputs
        or a kind that does not fit the input's type contradicts the model: ``ContractError``.
        """
        types = dict(inputs)
        if self.target is not None and self.target in types:
            raise ContractError(
                f"job.contract.target: {self.target!r} is an input of {model}: the label must "
                "not be a feature"
            )
        if self.features is None:
            features = [
                Feature(name=name, kind=_kind_of_type(name, kind, model))
                for name, kind in inputs
                if name not in self.role_columns
            ]
            return self._completed(features, model)
        lacking = [f.name for f in self.features if f.name not in types]
        if lacking:
            raise ContractError(
                f"job.contract.features: {', '.join(lacking)} not an input of {model} "
                f"(its signature has: {', '.join(types)})"
            )
        unlisted = [name for name in types if self.feature(name) is None]
        if unlisted:
            raise ContractError(
                f"job.contract.features: {model} needs {', '.join(unlisted)}, which the "
                "contract does not list"
            )
        for feature in self.features:
            if feature.kind == "numeric" and types[feature.name] in CATEGORICAL_TYPES:
                raise ContractError(
                    f"job.contract.features: {feature.name!r} is numeric in the contract but "
                    f"{types[feature.name]} in the signature of {model}"
                )
        return self

    def with_columns(self, frame: pd.DataFrame) -> Contract:
        """Features from a table when no model says them: every column without another role,
        numbers numeric, anything else categorical. A contract with features is kept."""
        if self.features is not None:
            return self
        skip = set(self.role_columns) | SERVICE_COLUMNS
        features = [
            Feature(name=str(name), kind=kind_of_values(frame[name]))
            for name in frame.columns
            if name not in skip
        ]
        return self._completed(features, "the table")

    def _completed(self, features: list[Feature], where: str) -> Contract:
        """This contract with ``features`` taken from ``where``; an ``expected_drift`` column
        they lack is a ``ContractError`` naming it."""
        completed = self.model_copy(update={"features": features})
        unknown = [name for name in self.expected_drift if completed.feature(name) is None]
        if unknown:
            raise ContractError(
                f"job.contract.expected_drift: {', '.join(unknown)} not a feature of {where}"
            )
        return completed

    # -- schemas ---------------------------------------------------------------------------------
    def inputs_schema(self) -> pa.DataFrameSchema:
        import pandera.pandas as pa

        columns: dict[str, pa.Column] = {f.name: f.pandera_column() for f in self.feature_list}
        if self.timestamp is not None:
            columns[self.timestamp] = pa.Column(
                "datetime64[ns]", nullable=False, required=False, coerce=True
            )
        return pa.DataFrameSchema(columns, name="inputs", strict=False)

    def targets_schema(self) -> pa.DataFrameSchema:
        import pandera.pandas as pa

        target = self.require_target("this data")
        column = (
            pa.Column(None, nullable=False)
            if self.is_classification
            else pa.Column(float, nullable=False, coerce=True)
        )
        return pa.DataFrameSchema({target: column}, name="targets", strict=False)

    def score_frame(self, classes: T.Sequence[T.Any], probabilities: T.Any) -> pd.DataFrame:
        """The contract's score columns from a classifier's per-class probabilities, given in
        ``classes`` order: the positive class's column (binary), or one column per class."""
        names = [str(c) for c in classes]
        table = pd.DataFrame(probabilities, columns=names)
        if isinstance(self.score, str):
            positive = self.positive_class if self.positive_class is not None else classes[-1]
            if str(positive) not in table.columns:
                raise ContractError(
                    f"job.contract.positive_class: {positive!r} is not a class of the model "
                    f"({', '.join(names)})"
                )
            return pd.DataFrame({self.score: table[str(positive)].to_numpy()})
        mapping = (
            {str(k): v for k, v in self.score.items()}
            if isinstance(self.score, dict)
            else dict(zip(sorted(names), self.score or [], strict=False))
        )
        missing = [c for c in mapping if c not in table.columns]
        if missing:
            raise ContractError(
                f"job.contract.score: class(es) {', '.join(missing)} not among the model's "
                f"classes ({', '.join(names)})"
            )
        return pd.DataFrame({column: table[c].to_numpy() for c, column in mapping.items()})

    def check_kinds(self, frame: pd.DataFrame, source: str) -> None:
        """A numeric feature must hold numbers: text in one is a contract the data breaks."""
        for feature in self.feature_list:
            if feature.kind != "numeric" or feature.name not in frame.columns:
                continue
            values = frame[feature.name]
            if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
                example = values.dropna().head(1).tolist()
                raise ContractError(
                    f"{source}: column {feature.name!r} is numeric in the contract but holds "
                    f"{values.dtype} values" + (f" (e.g. {example[0]!r})" if example else "")
                )


def kind_of_values(values: pd.Series) -> FeatureKind:
    """Numbers are numeric; strings, booleans and anything else categorical."""
    if pd.api.types.is_bool_dtype(values) or not pd.api.types.is_numeric_dtype(values):
        return "categorical"
    return "numeric"


def _kind_of_type(name: str, kind: str, model: str) -> FeatureKind:
    if kind in NUMERIC_TYPES:
        return "numeric"
    if kind in CATEGORICAL_TYPES:
        return "categorical"
    raise ContractError(
        f"{model}: input {name!r} has type {kind}, which bikes cannot monitor; list the "
        "features in job.contract.features"
    )


def as_naive_utc(moment: dt.datetime | None) -> dt.datetime | None:
    """A time as the capture store keeps event times: UTC without a zone (a naive time is taken
    as UTC already). ``ValueError`` when the conversion leaves Python's years 1..9999
    ("9999-12-31T23:59:59-10:00")."""
    if moment is None or moment.tzinfo is None:
        return moment
    try:
        return moment.astimezone(dt.UTC).replace(tzinfo=None)
    except OverflowError:
        raise ValueError(f"{moment} is beyond years 1..9999 in UTC") from None
