from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pydantic
import pytest

from bikes.core import schemas
from bikes.core.contract import Contract, Feature, kind_of_values
from bikes.core.errors import ContractError, SchemaError
from bikes.io.contracts import load_contract
from tests.conftest import BIKES_CONTRACT, GIBRALTAR_CONTRACT


@pytest.fixture(scope="module")
def bikes() -> Contract:
    return load_contract(str(BIKES_CONTRACT))


def test_the_bike_contract_is_one_yaml_file(bikes: Contract) -> None:
    assert bikes.task == "regression"
    assert bikes.target == "cnt"
    assert bikes.timestamp == "timestamp"
    assert len(bikes.feature_names) == 12
    # casual + registered == cnt: columns that leak the target are never features
    assert not {"casual", "registered", "instant", "cnt"} & set(bikes.feature_names)
    assert bikes.segments == ["season", "workingday", "weathersit"]
    yr = bikes.feature("yr")
    assert yr is not None
    assert yr.binary
    assert bikes.feature("temp").kind == "numeric"  # type: ignore[union-attr]


def test_real_splits_satisfy_every_schema(bikes: Contract, train_frame: pd.DataFrame) -> None:
    bikes.check_kinds(train_frame, "train")
    schemas.validate(train_frame, bikes.inputs_schema(), "train")
    schemas.validate(train_frame, bikes.targets_schema(), "train")


def test_string_in_temp_names_the_column(bikes: Contract, train_frame: pd.DataFrame) -> None:
    frame = train_frame.head(10).copy()
    frame["temp"] = frame["temp"].astype(str)
    frame.loc[2, "temp"] = "warm"
    with pytest.raises(ContractError, match=r"column 'temp' is numeric in the contract but holds"):
        bikes.check_kinds(frame, "request.parquet")
    with pytest.raises(SchemaError) as caught:
        schemas.validate(frame, bikes.inputs_schema(), "request.parquet")
    message = str(caught.value)
    assert message.startswith("request.parquet: inputs schema violated in column(s) temp:")
    assert "temp: coerce_dtype('float64') failed on 1 row(s) (row 2: 'warm')" in message
    assert "dtype('float64') failed" not in message.replace("coerce_dtype", "")  # said once


def test_long_failure_lists_are_cut_to_a_few_rows(
    bikes: Contract, train_frame: pd.DataFrame
) -> None:
    frame = train_frame.head(10).assign(windspeed=2.0)
    with pytest.raises(SchemaError) as caught:
        schemas.validate(frame, bikes.inputs_schema(), "x")
    message = str(caught.value)
    assert "windspeed: in_range(0.0, 1.0) failed on 10 row(s) (row 0: 2.0" in message
    assert "row 4: 2.0 and 5 more)" in message


def test_every_failing_column_is_listed_at_once(bikes: Contract, train_frame: pd.DataFrame) -> None:
    frame = train_frame.head(10).drop(columns=["weathersit"]).copy()
    frame.loc[2, "season"] = 5
    frame.loc[7, "hr"] = 24
    frame.loc[3, "hum"] = np.nan
    with pytest.raises(SchemaError) as caught:
        schemas.validate(frame, bikes.inputs_schema(), "x")
    message = str(caught.value)
    assert "column(s) hr, hum, season, weathersit" in message
    assert "missing column(s): weathersit" in message
    assert "season: isin([1, 2, 3, 4]) failed on 1 row(s) (row 2: 5)" in message
    assert "hr: in_range(0.0, 23.0) failed on 1 row(s) (row 7: 24)" in message
    assert "hum: not_nullable failed on 1 row(s)" in message


def test_missing_target_names_the_column(bikes: Contract, train_frame: pd.DataFrame) -> None:
    with pytest.raises(SchemaError, match=r"missing column\(s\): cnt"):
        schemas.validate(train_frame.drop(columns=["cnt"]), bikes.targets_schema(), "x")


def test_nullable_features_accept_missing_values() -> None:
    contract = Contract(
        target="y",
        features=[Feature(name="a", nullable=True), Feature(name="b", kind="categorical")],
    )
    frame = pd.DataFrame({"a": [1.0, None], "b": ["x", "y"], "y": [1, 2]})
    schemas.validate(frame, contract.inputs_schema(), "x")
    with pytest.raises(SchemaError, match="b: not_nullable"):
        schemas.validate(frame.assign(b=["x", None]), contract.inputs_schema(), "x")


def test_in_range_judges_ranges_and_categories_and_passes_missing_values() -> None:
    ranged = Feature(name="t", min=0, max=1)
    values = pd.Series([0.0, 0.5, 1.5, -1.0, None])
    assert ranged.in_range(values).tolist() == [True, True, False, False, True]
    category = Feature(name="c", kind="categorical", values=["a", "b"])
    assert category.in_range(pd.Series(["a", "z", None])).tolist() == [True, False, True]


def test_features_from_a_signature_take_kinds_from_types() -> None:
    contract = Contract(task="classification", target="churn").with_signature(
        [("age", "long"), ("plan", "string"), ("active", "boolean"), ("spend", "double")],
        "models:/churn/1",
    )
    kinds = {f.name: f.kind for f in contract.feature_list}
    assert kinds == {
        "age": "numeric",
        "plan": "categorical",
        "active": "categorical",
        "spend": "numeric",
    }


def test_a_contract_that_contradicts_the_signature_names_the_column() -> None:
    inputs = [("age", "long"), ("plan", "string")]
    lacking = Contract(target="y", features=[Feature(name="age"), Feature(name="income")])
    with pytest.raises(ContractError, match=r"features: income not an input of models:/m/1"):
        lacking.with_signature(inputs, "models:/m/1")
    unlisted = Contract(target="y", features=[Feature(name="age")])
    with pytest.raises(ContractError, match=r"models:/m/1 needs plan, which the contract"):
        unlisted.with_signature(inputs, "models:/m/1")
    wrong_kind = Contract(
        target="y", features=[Feature(name="age"), Feature(name="plan", kind="numeric")]
    )
    with pytest.raises(ContractError, match=r"'plan' is numeric in the contract but string"):
        wrong_kind.with_signature(inputs, "models:/m/1")
    with pytest.raises(ContractError, match=r"target: 'age' is an input of models:/m/1"):
        Contract(target="age").with_signature(inputs, "models:/m/1")


def test_features_from_columns_skip_every_role_and_service_column() -> None:
    frame = pd.DataFrame(
        {
            "when": pd.to_datetime(["2024-01-01", "2024-01-02"]),
            "row": [1, 2],
            "x": [0.1, 0.2],
            "colour": ["red", "blue"],
            "flag": [True, False],
            "label": ["a", "b"],
            "predicted": ["a", "a"],
            "p_a": [0.9, 0.6],
            "model_version": ["1", "1"],
            "event_time": pd.to_datetime(["2024-01-01", "2024-01-02"]),
        }
    )
    contract = Contract(
        task="classification",
        target="label",
        prediction="predicted",
        score="p_a",
        timestamp="when",
        id="row",
    ).with_columns(frame)
    assert [(f.name, f.kind) for f in contract.feature_list] == [
        ("x", "numeric"),
        ("colour", "categorical"),
        ("flag", "categorical"),
    ]


def test_kinds_of_values() -> None:
    assert kind_of_values(pd.Series([1, 2])) == "numeric"
    assert kind_of_values(pd.Series([1.5])) == "numeric"
    assert kind_of_values(pd.Series(["a"])) == "categorical"
    assert kind_of_values(pd.Series([True])) == "categorical"


def test_score_frame_maps_probabilities_to_the_contracts_columns() -> None:
    probabilities = np.array([[0.2, 0.8], [0.7, 0.3]])
    binary = Contract(task="classification", target="y", score="p_yes")
    assert binary.score_frame(["no", "yes"], probabilities)["p_yes"].tolist() == [0.8, 0.3]
    chosen = Contract(task="classification", target="y", score="p_no", positive_class="no")
    assert chosen.score_frame(["no", "yes"], probabilities)["p_no"].tolist() == [0.2, 0.7]
    per_class = Contract(task="classification", target="y", score={"yes": "py", "no": "pn"})
    table = per_class.score_frame(["no", "yes"], probabilities)
    assert table.to_dict(orient="list") == {"py": [0.8, 0.3], "pn": [0.2, 0.7]}
    wrong = Contract(task="classification", target="y", score={"maybe": "pm"})
    with pytest.raises(ContractError, match="score: class\\(es\\) maybe not among"):
        wrong.score_frame(["no", "yes"], probabilities)


def test_contradictions_inside_a_contract_are_config_errors() -> None:
    with pytest.raises(pydantic.ValidationError, match="probability columns are for classif"):
        Contract(target="y", score="p")
    with pytest.raises(pydantic.ValidationError, match="listed twice: a"):
        Contract(features=[Feature(name="a"), Feature(name="a")])
    with pytest.raises(pydantic.ValidationError, match="also named as target"):
        Contract(target="a", features=[Feature(name="a")])
    with pytest.raises(pydantic.ValidationError, match="segments: b not among the features"):
        Contract(features=[Feature(name="a")], segments=["b"])
    with pytest.raises(pydantic.ValidationError, match="min 2 > max 1"):
        Feature(name="a", min=2, max=1)
    with pytest.raises(pydantic.ValidationError, match="values are for categorical"):
        Feature(name="a", values=[1, 2])


def test_the_gibraltar_contract_says_only_what_the_data_cannot() -> None:
    contract = load_contract(str(GIBRALTAR_CONTRACT))
    assert contract.task == "classification"
    assert contract.features is None  # taken from the table, then the model's signature
    assert contract.score_columns == ["p_fair", "p_cloudy", "p_wet"]
    with pytest.raises(ContractError, match="features unknown"):
        _ = contract.feature_names


def test_expected_drift_names_features_and_the_bike_contract_expects_the_calendar(
    bikes: Contract,
) -> None:
    assert bikes.expected_drift == ["yr", "mnth", "season"]
    assert Contract().expected_drift == []  # a contract without the key expects none
    with pytest.raises(pydantic.ValidationError, match="expected_drift: b not among the features"):
        Contract(features=[Feature(name="a")], expected_drift=["a", "b"])
    with pytest.raises(pydantic.ValidationError, match="expected_drift: listed twice: a"):
        Contract(features=[Feature(name="a")], expected_drift=["a", "a"])
    with pytest.raises(pydantic.ValidationError, match="expected_drift: y not a feature"):
        Contract(target="y", expected_drift=["y"])  # a role column, even without features


def test_expected_drift_is_checked_once_features_come_from_a_signature_or_a_table() -> None:
    contract = Contract(target="y", expected_drift=["month"])
    completed = contract.with_columns(pd.DataFrame({"month": [1], "x": [0.5], "y": [1.0]}))
    assert completed.expected_drift == ["month"]
    with pytest.raises(ContractError, match=r"expected_drift: month not a feature of the table"):
        contract.with_columns(pd.DataFrame({"x": [0.5], "y": [1.0]}))
    with pytest.raises(ContractError, match=r"expected_drift: month not a feature of models:/m/1"):
        contract.with_signature([("x", "double")], "models:/m/1")
    signed = contract.with_signature([("x", "double"), ("month", "long")], "models:/m/1")
    assert signed.feature_names == ["x", "month"]


def test_as_naive_utc_converts_aware_times_and_names_an_overflow() -> None:
    from bikes.core.contract import as_naive_utc

    naive = dt.datetime(2012, 7, 1, 12, 30)
    assert as_naive_utc(naive) is naive
    assert as_naive_utc(None) is None
    paris = dt.datetime(2012, 7, 1, 14, 30, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert as_naive_utc(paris) == dt.datetime(2012, 7, 1, 12, 30)  # worked by hand
    with pytest.raises(ValueError, match="beyond years 1..9999"):
        as_naive_utc(dt.datetime(9999, 12, 31, 23, 0, tzinfo=dt.timezone(dt.timedelta(hours=-10))))
