"""The sklearn pipeline, built from a small pydantic config and the data contract.

Numeric features pass through (the tree models split on them as they are, missing values
included), and so do categories coded as numbers (hours, months, weather codes): their order
carries meaning a tree can use (on the bike data, native categories cost 20% RMSE). Text and
boolean categories are ordinal-encoded, unseen and missing values as missing, and
``HistGradientBoosting*`` treats them as native categories. The contract's task picks a
regressor or a classifier. A count or other skewed, non-negative target can be fitted on
``log1p`` and mapped back (``log_target``): predictions stay non-negative and the model does
not chase a few busy hours at the expense of the quiet ones.
"""

from __future__ import annotations

import typing as T

import numpy as np
import pydantic as pdt
from sklearn.compose import ColumnTransformer, TransformedTargetRegressor
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OrdinalEncoder

from bikes.core.contract import Contract, Feature
from bikes.core.errors import ContractError

MAX_NATIVE_CATEGORIES = 255  # HistGradientBoosting's limit per categorical feature


class _ModelConfig(pdt.BaseModel, strict=True, frozen=True, extra="forbid"):
    log_target: bool = pdt.Field(
        default=False,
        description="Regression: fit on log1p(target) and map predictions back with expm1 "
        "(for non-negative, skewed targets such as counts).",
    )
    random_state: int = pdt.Field(default=42, description="Seed of the estimator.")

    # Types of our own estimators that skops (MLflow's safe sklearn format) loads only when
    # told to trust them: they come from our own training, never from a user's upload.
    skops_trusted_types: T.ClassVar[tuple[str, ...]] = ()

    def estimator(self, classification: bool, categorical: list[int]) -> T.Any:
        raise NotImplementedError

    def pipeline(self, contract: Contract) -> TransformedTargetRegressor | Pipeline:
        """The full estimator: preprocessing, model and (optionally) the target transform."""
        features = contract.feature_list
        categorical = [f.name for f in features if f.kind == "categorical" and not _coded(f)]
        numeric = [f.name for f in features if f.name not in categorical]
        steps = []
        if categorical:
            steps.append(
                (
                    "categorical",
                    OrdinalEncoder(
                        handle_unknown="use_encoded_value",
                        unknown_value=np.nan,
                        encoded_missing_value=np.nan,
                        max_categories=MAX_NATIVE_CATEGORIES,
                    ),
                    categorical,
                )
            )
        if numeric:
            steps.append(("numeric", "passthrough", numeric))
        preprocessing = ColumnTransformer(steps, remainder="drop", verbose_feature_names_out=False)
        estimator = self.estimator(contract.is_classification, list(range(len(categorical))))
        pipeline = Pipeline([("preprocessing", preprocessing), ("model", estimator)])
        if contract.is_classification or not self.log_target:
            if self.log_target:
                raise ContractError("job.model.log_target: only for regression contracts")
            return pipeline
        return TransformedTargetRegressor(
            regressor=pipeline, func=np.log1p, inverse_func=np.expm1, check_inverse=False
        )


def _coded(feature: Feature) -> bool:
    """A category coded as a number (its values, or a min/max range, say so)."""
    if feature.values is not None:
        return all(
            isinstance(value, int | float) and not isinstance(value, bool)
            for value in feature.values
        )
    return feature.min is not None or feature.max is not None


class GradientBoostingConfig(_ModelConfig, strict=True, frozen=True, extra="forbid"):
    """``HistGradientBoostingRegressor`` or ``...Classifier``: fast, native categories; the
    default."""

    KIND: T.Literal["HistGradientBoosting"] = "HistGradientBoosting"
    skops_trusted_types: T.ClassVar[tuple[str, ...]] = (
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
        "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
        # Native categories: the estimator checks its input with a partial of check_array.
        "functools.partial",
        "sklearn.utils.validation.check_array",
    )
    max_iter: int = pdt.Field(default=300, gt=0, description="Boosting iterations.")
    learning_rate: float = pdt.Field(default=0.1, gt=0, description="Shrinkage per iteration.")
    max_leaf_nodes: int = pdt.Field(default=31, gt=1, description="Leaves per tree at most.")
    min_samples_leaf: int = pdt.Field(default=20, gt=0, description="Rows per leaf at least.")
    l2_regularization: float = pdt.Field(default=0.0, ge=0, description="L2 penalty.")

    def estimator(self, classification: bool, categorical: list[int]) -> T.Any:
        kind = HistGradientBoostingClassifier if classification else HistGradientBoostingRegressor
        return kind(
            max_iter=self.max_iter,
            learning_rate=self.learning_rate,
            max_leaf_nodes=self.max_leaf_nodes,
            min_samples_leaf=self.min_samples_leaf,
            l2_regularization=self.l2_regularization,
            categorical_features=categorical or None,
            random_state=self.random_state,
        )


class RandomForestConfig(_ModelConfig, strict=True, frozen=True, extra="forbid"):
    """``RandomForestRegressor`` or ``...Classifier``: a slower, robust alternative."""

    KIND: T.Literal["RandomForest"] = "RandomForest"
    skops_trusted_types: T.ClassVar[tuple[str, ...]] = ("sklearn.tree._tree.Tree",)
    n_estimators: int = pdt.Field(default=200, gt=0, description="Trees in the forest.")
    max_depth: int | None = pdt.Field(default=None, gt=0, description="Depth limit per tree.")
    min_samples_leaf: int = pdt.Field(default=1, gt=0, description="Rows per leaf at least.")
    n_jobs: int = pdt.Field(default=-1, description="Cores to fit on (-1: all).")

    def estimator(self, classification: bool, categorical: list[int]) -> T.Any:
        kind = RandomForestClassifier if classification else RandomForestRegressor
        return kind(
            n_estimators=self.n_estimators,
            max_depth=self.max_depth,
            min_samples_leaf=self.min_samples_leaf,
            n_jobs=self.n_jobs,
            random_state=self.random_state,
        )


# Older configs name the regressor class: the same model for a regression contract.
_KIND_ALIASES = {
    "HistGradientBoostingRegressor": "HistGradientBoosting",
    "HistGradientBoostingClassifier": "HistGradientBoosting",
    "RandomForestRegressor": "RandomForest",
    "RandomForestClassifier": "RandomForest",
}


def _kind_or_default(value: T.Any) -> str:
    """``model: {max_iter: 100}`` means the default model: only the keys that matter."""
    if isinstance(value, dict):
        kind = str(value.get("KIND", GradientBoostingConfig.model_fields["KIND"].default))
        return _KIND_ALIASES.get(kind, kind)
    return str(getattr(value, "KIND", ""))


def _normalise_kind(value: T.Any) -> T.Any:
    if isinstance(value, dict) and value.get("KIND") in _KIND_ALIASES:
        return {**value, "KIND": _KIND_ALIASES[value["KIND"]]}
    return value


ModelConfig = T.Annotated[
    T.Annotated[GradientBoostingConfig, pdt.Tag("HistGradientBoosting")]
    | T.Annotated[RandomForestConfig, pdt.Tag("RandomForest")],
    pdt.Discriminator(_kind_or_default),
    pdt.BeforeValidator(_normalise_kind),
]
