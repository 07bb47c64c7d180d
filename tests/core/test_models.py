from __future__ import annotations

import numpy as np
import pandas as pd
import pydantic
import pytest

from bikes.core import schemas
from bikes.core.metrics import regression_metrics
from bikes.core.models import GradientBoostingConfig, RandomForestConfig


@pytest.mark.parametrize(
    "config",
    [GradientBoostingConfig(max_iter=50), RandomForestConfig(n_estimators=20, n_jobs=1)],
    ids=["hgb", "forest"],
)
def test_pipelines_learn_demand(
    config: GradientBoostingConfig | RandomForestConfig,
    train_frame: pd.DataFrame,
    test_frame: pd.DataFrame,
) -> None:
    model = config.pipeline().fit(schemas.features_of(train_frame), train_frame[schemas.TARGET])
    predicted = model.predict(schemas.features_of(test_frame))
    assert regression_metrics(test_frame[schemas.TARGET], predicted)["r2"] > 0.8
    assert (predicted >= 0).all()  # log1p target: counts cannot be negative


def test_leaking_columns_never_reach_the_regressor(train_frame: pd.DataFrame) -> None:
    frame = train_frame.head(500).assign(casual=0, registered=train_frame[schemas.TARGET].head(500))
    model = GradientBoostingConfig(max_iter=5, log_target=False).pipeline()
    model.fit(frame, frame[schemas.TARGET])
    used = set(model.named_steps["preprocessing"].get_feature_names_out())
    assert not used & {"casual", "registered", "instant", schemas.TARGET, schemas.TIMESTAMP}


def test_unknown_parameter_is_refused() -> None:
    with pytest.raises(pydantic.ValidationError, match="max_iterations"):
        GradientBoostingConfig.model_validate({"max_iterations": 3})
    with pytest.raises(pydantic.ValidationError, match="greater than 0"):
        GradientBoostingConfig(max_iter=0)


def test_unseen_category_is_tolerated(train_frame: pd.DataFrame) -> None:
    model = GradientBoostingConfig(max_iter=5).pipeline()
    model.fit(schemas.features_of(train_frame), train_frame[schemas.TARGET])
    row = schemas.features_of(train_frame.head(1)).assign(weathersit=4, season=4)
    assert np.isfinite(model.predict(row)).all()
