from __future__ import annotations

import typing as T
from pathlib import Path

import numpy as np
import pandas as pd
import pydantic
import pytest
from sklearn import metrics

from bikes.core.contract import Contract
from bikes.core.errors import ContractError
from bikes.core.metrics import regression_metrics
from bikes.core.models import GradientBoostingConfig, RandomForestConfig
from bikes.io.contracts import load_contract
from tests.conftest import BIKES_CONTRACT, GIBRALTAR_CONTRACT


@pytest.fixture(scope="module")
def bikes() -> Contract:
    return load_contract(str(BIKES_CONTRACT))


@pytest.mark.parametrize(
    "config",
    [
        GradientBoostingConfig(max_iter=50, log_target=True),
        RandomForestConfig(n_estimators=20, n_jobs=1, log_target=True),
    ],
    ids=["hgb", "forest"],
)
def test_pipelines_learn_demand(
    config: GradientBoostingConfig | RandomForestConfig,
    bikes: Contract,
    train_frame: pd.DataFrame,
    test_frame: pd.DataFrame,
) -> None:
    features = bikes.feature_names
    model = config.pipeline(bikes).fit(train_frame[features], train_frame["cnt"])
    predicted = model.predict(test_frame[features])
    assert regression_metrics(test_frame["cnt"], predicted)["r2"] > 0.8
    assert (predicted >= 0).all()  # log1p target: counts cannot be negative


@pytest.mark.parametrize("kind", ["HistGradientBoosting", "RandomForest"])
def test_a_classification_contract_gets_a_classifier_that_reads_strings(
    kind: str, gibraltar_splits: Path
) -> None:
    train = pd.read_parquet(gibraltar_splits / "train.parquet")
    test = pd.read_parquet(gibraltar_splits / "test.parquet")
    contract = load_contract(str(GIBRALTAR_CONTRACT)).with_columns(train)
    assert contract.feature("wind_dir").kind == "categorical"  # type: ignore[union-attr]
    config: T.Any = (
        GradientBoostingConfig(max_iter=40)
        if kind == "HistGradientBoosting"
        else RandomForestConfig(n_estimators=30, n_jobs=1)
    )
    features = contract.feature_names
    model = config.pipeline(contract).fit(train[features], train["sky"])
    assert set(model.classes_) == {"fair", "cloudy", "wet"}
    predicted = model.predict(test[features])
    # better than always answering the training majority ("fair"), on later, unseen days
    majority = metrics.accuracy_score(test["sky"], np.full(len(test), "fair"))
    assert metrics.accuracy_score(test["sky"], predicted) > majority
    probabilities = model.predict_proba(test[features])
    assert probabilities.sum(axis=1) == pytest.approx(1.0)


def test_leaking_columns_never_reach_the_model(bikes: Contract, train_frame: pd.DataFrame) -> None:
    frame = train_frame.head(500).assign(casual=0, registered=train_frame["cnt"].head(500))
    model = GradientBoostingConfig(max_iter=5).pipeline(bikes)
    model.fit(frame, frame["cnt"])
    used = set(model.named_steps["preprocessing"].get_feature_names_out())
    assert used == set(bikes.feature_names)


def test_unknown_parameter_is_refused() -> None:
    with pytest.raises(pydantic.ValidationError, match="max_iterations"):
        GradientBoostingConfig.model_validate({"max_iterations": 3})
    with pytest.raises(pydantic.ValidationError, match="greater than 0"):
        GradientBoostingConfig(max_iter=0)


def test_log_target_is_for_regression_only(gibraltar_splits: Path) -> None:
    contract = load_contract(str(GIBRALTAR_CONTRACT)).with_columns(
        pd.read_parquet(gibraltar_splits / "train.parquet")
    )
    with pytest.raises(ContractError, match="log_target: only for regression"):
        GradientBoostingConfig(log_target=True).pipeline(contract)


def test_unseen_and_missing_categories_are_tolerated(
    bikes: Contract, train_frame: pd.DataFrame
) -> None:
    features = bikes.feature_names
    model = GradientBoostingConfig(max_iter=5).pipeline(bikes)
    model.fit(train_frame[features], train_frame["cnt"])
    rows = pd.concat([train_frame[features].head(1)] * 2, ignore_index=True)
    rows["weathersit"] = [9, None]
    assert np.isfinite(model.predict(rows)).all()


def test_number_coded_categories_keep_their_order_and_text_is_encoded(
    bikes: Contract, gibraltar_splits: Path
) -> None:
    def columns(contract: Contract) -> dict[str, list[str]]:
        preprocessing = GradientBoostingConfig().pipeline(contract).named_steps["preprocessing"]
        return {name: list(cols) for name, _, cols in preprocessing.transformers}

    assert columns(bikes) == {"numeric": bikes.feature_names}  # hours stay ordered numbers
    weather = load_contract(str(GIBRALTAR_CONTRACT)).with_columns(
        pd.read_parquet(gibraltar_splits / "train.parquet")
    )
    assert columns(weather)["categorical"] == ["wind_dir"]
    assert "wind_dir" not in columns(weather)["numeric"]
