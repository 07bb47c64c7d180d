"""The regressor pipeline, built from a small pydantic config.

Count data is skewed, so the target is fitted on ``log1p`` and mapped back: predictions stay
non-negative and the model does not chase a few busy hours at the expense of the quiet ones.
"""

from __future__ import annotations

import typing as T

import numpy as np
import pydantic as pdt
from sklearn.compose import ColumnTransformer, TransformedTargetRegressor
from sklearn.ensemble import HistGradientBoostingRegressor, RandomForestRegressor
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

from bikes.core.schemas import FEATURE_NAMES

# Unordered categories: one-hot; every other feature is passed through as an ordinal number.
ONE_HOT_FEATURES = ("season", "weathersit")


class _RegressorConfig(pdt.BaseModel, strict=True, frozen=True, extra="forbid"):
    log_target: bool = True
    random_state: int = 42

    # Types of our own estimators that skops (MLflow's safe sklearn format) loads only when
    # told to trust them: they come from our own training, never from a user's upload.
    skops_trusted_types: T.ClassVar[tuple[str, ...]] = ()

    def regressor(self) -> T.Any:
        raise NotImplementedError

    def pipeline(self) -> TransformedTargetRegressor | Pipeline:
        """The full estimator: preprocessing, regressor and (optionally) the target transform."""
        passthrough = [name for name in FEATURE_NAMES if name not in ONE_HOT_FEATURES]
        preprocessing = ColumnTransformer(
            [
                ("one_hot", OneHotEncoder(handle_unknown="ignore"), list(ONE_HOT_FEATURES)),
                ("passthrough", "passthrough", passthrough),
            ],
            remainder="drop",
            verbose_feature_names_out=False,
        )
        pipeline = Pipeline([("preprocessing", preprocessing), ("regressor", self.regressor())])
        if not self.log_target:
            return pipeline
        return TransformedTargetRegressor(
            regressor=pipeline, func=np.log1p, inverse_func=np.expm1, check_inverse=False
        )


class GradientBoostingConfig(_RegressorConfig, strict=True, frozen=True, extra="forbid"):
    """``HistGradientBoostingRegressor``: fast on tens of thousands of rows, the default."""

    KIND: T.Literal["HistGradientBoostingRegressor"] = "HistGradientBoostingRegressor"
    skops_trusted_types: T.ClassVar[tuple[str, ...]] = (
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    )
    max_iter: int = pdt.Field(default=300, gt=0)
    learning_rate: float = pdt.Field(default=0.1, gt=0)
    max_leaf_nodes: int = pdt.Field(default=31, gt=1)
    min_samples_leaf: int = pdt.Field(default=20, gt=0)
    l2_regularization: float = pdt.Field(default=0.0, ge=0)

    def regressor(self) -> HistGradientBoostingRegressor:
        return HistGradientBoostingRegressor(
            max_iter=self.max_iter,
            learning_rate=self.learning_rate,
            max_leaf_nodes=self.max_leaf_nodes,
            min_samples_leaf=self.min_samples_leaf,
            l2_regularization=self.l2_regularization,
            random_state=self.random_state,
        )


class RandomForestConfig(_RegressorConfig, strict=True, frozen=True, extra="forbid"):
    """``RandomForestRegressor``: a slower, robust alternative."""

    KIND: T.Literal["RandomForestRegressor"] = "RandomForestRegressor"
    skops_trusted_types: T.ClassVar[tuple[str, ...]] = ("sklearn.tree._tree.Tree",)
    n_estimators: int = pdt.Field(default=200, gt=0)
    max_depth: int | None = pdt.Field(default=None, gt=0)
    min_samples_leaf: int = pdt.Field(default=1, gt=0)
    n_jobs: int = -1

    def regressor(self) -> RandomForestRegressor:
        return RandomForestRegressor(
            n_estimators=self.n_estimators,
            max_depth=self.max_depth,
            min_samples_leaf=self.min_samples_leaf,
            n_jobs=self.n_jobs,
            random_state=self.random_state,
        )


def _kind_or_default(value: T.Any) -> str:
    """``model: {max_iter: 100}`` means the default regressor: only the keys that matter."""
    if isinstance(value, dict):
        return str(value.get("KIND", GradientBoostingConfig.model_fields["KIND"].default))
    return str(getattr(value, "KIND", ""))


RegressorConfig = T.Annotated[
    T.Annotated[GradientBoostingConfig, pdt.Tag("HistGradientBoostingRegressor")]
    | T.Annotated[RandomForestConfig, pdt.Tag("RandomForestRegressor")],
    pdt.Discriminator(_kind_or_default),
]
