"""The monitor on small tables of any contract: kinds, quality, drift, performance, statuses."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn import metrics

from bikes.core.comparison import Slicing
from bikes.core.contract import Contract, Feature
from bikes.core.errors import ConfigError
from bikes.core.monitoring import (
    STATUSES,
    Monitor,
    PerformanceSettings,
    long_rows,
    status_of,
)
from bikes.io.contracts import load_contract
from tests.conftest import BIKES_CONTRACT

NOW = dt.datetime(2026, 1, 1)


def _window(monitor: Monitor, current: pd.DataFrame, **kwargs: object) -> dict[str, object]:
    return monitor.window(current, None, None, NOW, **kwargs)  # type: ignore[arg-type]


def _classification(rows: int, seed: int, colours: list[float]) -> pd.DataFrame:
    """A binary table with a numeric and a string feature, a model's class and score."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, rows)
    colour = rng.choice(["red", "green", "blue"], rows, p=colours)
    truth = np.where(x + 0.5 * (colour == "red") + rng.normal(0, 0.7, rows) > 0, "yes", "no")
    score = 1 / (1 + np.exp(-3 * x))
    predicted = np.where(score > 0.5, "yes", "no")
    return pd.DataFrame(
        {"x": x, "colour": colour, "y": truth, "prediction": predicted, "p_yes": score}
    )


CLASSIFICATION = Contract(task="classification", target="y", score="p_yes")


def test_kinds_come_from_the_contract_and_outputs_from_the_task() -> None:
    bikes = load_contract(str(BIKES_CONTRACT))
    rng = np.random.default_rng(0)
    reference = pd.DataFrame(
        {f.name: rng.integers(0, 4, 50) for f in bikes.feature_list}
        | {"cnt": rng.poisson(100, 50).astype(float), "prediction": rng.normal(100, 5, 50)}
    )
    monitor = Monitor(reference, bikes, bikes.feature_names)
    assert monitor.kinds["weathersit"] == "categorical"  # four values
    assert monitor.kinds["holiday"] == "binary"  # two values: a proportions test
    assert monitor.kinds["hr"] == "categorical"  # a range, no values: categories still
    two = Monitor(reference.assign(hr=reference["hr"] % 2), bikes, ["hr"])
    assert two.kinds["hr"] == "binary"  # no values said: two seen in the reference
    assert monitor.kinds["temp"] == "numeric"
    assert monitor.kinds["prediction"] == monitor.kinds["cnt"] == "numeric"  # regression
    assert monitor.metric == "rmse"
    table = _classification(200, 1, [0.2, 0.3, 0.5])
    contract = CLASSIFICATION.with_columns(table)
    classifier = Monitor(table, contract, contract.feature_names)
    assert classifier.kinds == {
        "x": "numeric",
        "colour": "categorical",  # text, read from the data
        "y": "binary",
        "prediction": "binary",
        "p_yes": "numeric",
    }
    assert classifier.metric == "f1"
    assert classifier.classes == ["no", "yes"]


def test_a_window_with_a_quality_issue_is_potential_and_rows_are_long_format() -> None:
    rng = np.random.default_rng(3)
    reference = pd.DataFrame({"temp": rng.uniform(0, 1, 500), "district": rng.integers(1, 5, 500)})
    contract = Contract(
        features=[
            Feature(name="temp", min=0, max=1),
            Feature(name="district", kind="categorical"),
        ]
    )
    current = reference.sample(300, random_state=0).reset_index(drop=True)
    current.loc[:9, "temp"] = np.nan
    current.loc[10, "district"] = 9  # a category the reference never saw
    current.loc[11:13, "temp"] = 1.5  # beyond the contract's max
    monitor = Monitor(reference, contract, ["temp", "district"])
    result = _window(monitor, current)
    quality = result["data_quality"]["columns"]  # type: ignore[index]
    assert quality["temp"]["missing_share"] == 10 / 300
    assert quality["temp"]["out_of_range_share"] == 3 / 300
    assert quality["district"]["unseen_categories"] == [9]
    assert result["data_drift"]["columns"]["temp"]["method"] == "ks"  # type: ignore[index]
    assert result["performance"] is None  # no labels, no predictions
    assert status_of(result) == result["status"] == "potential"
    rows = {(r["check"], r["column"]): r for r in long_rows(result)}
    assert rows[("missing_share", "temp")]["status"] == "issue"
    assert rows[("unseen_categories", "district")]["value"] == 1
    assert rows[("status", "*")]["value"] == STATUSES.index("potential") == 1
    assert rows[("rejected_share", "*")]["value"] == 0.0


def test_a_text_column_is_a_category_not_a_missing_number() -> None:
    """Chi-square on category counts (small reference) equals scipy's; a shifted mix of
    colours is flagged, the same mix is not, and text is never read as missing."""
    reference = _classification(900, 1, [0.2, 0.3, 0.5])
    contract = CLASSIFICATION.with_columns(reference)
    monitor = Monitor(reference, contract, contract.feature_names)
    same = _window(monitor, _classification(700, 2, [0.2, 0.3, 0.5]))
    shifted_frame = _classification(700, 3, [0.5, 0.3, 0.2])
    shifted = _window(monitor, shifted_frame)
    for result in (same, shifted):
        colour = result["data_quality"]["columns"]["colour"]  # type: ignore[index]
        assert colour["missing_share"] == 0.0
        assert colour["unseen_categories"] == []
    drift = shifted["data_drift"]["columns"]["colour"]  # type: ignore[index]
    assert drift["method"] == "chisquare"
    table = [
        [np.sum(frame["colour"] == c) for c in ("blue", "green", "red")]
        for frame in (reference, shifted_frame)
    ]
    assert drift["score"] == pytest.approx(stats.chi2_contingency(table, correction=False).pvalue)
    assert drift["drift"]
    assert not same["data_drift"]["columns"]["colour"]["drift"]  # type: ignore[index]
    assert not same["data_drift"]["columns"]["x"]["drift"]  # type: ignore[index]


def test_classification_performance_equals_sklearn_and_a_drop_in_f1_is_degradation() -> None:
    reference = _classification(3000, 4, [0.2, 0.3, 0.5])
    contract = CLASSIFICATION.with_columns(reference)
    monitor = Monitor(reference, contract, contract.feature_names)
    current = _classification(2000, 5, [0.2, 0.3, 0.5])
    worse = current.assign(prediction=np.where(np.arange(2000) % 3 == 0, "yes", "no"))
    worse.loc[::4, "y"] = None  # unlabelled rows are left out
    result = _window(monitor, worse)
    performance = result["performance"]
    labelled = worse.dropna(subset=["y"])
    truth, predicted = labelled["y"], labelled["prediction"]
    expected = {
        "accuracy": metrics.accuracy_score(truth, predicted),
        "precision": metrics.precision_score(truth, predicted, pos_label="yes"),
        "recall": metrics.recall_score(truth, predicted, pos_label="yes"),
        "f1": metrics.f1_score(truth, predicted, pos_label="yes"),
        "roc_auc": metrics.roc_auc_score(truth == "yes", labelled["p_yes"]),
        "log_loss": metrics.log_loss(
            truth, np.column_stack([1 - labelled["p_yes"], labelled["p_yes"]]), labels=["no", "yes"]
        ),
    }
    assert performance["current"] == pytest.approx(expected)  # type: ignore[index]
    assert performance["label_coverage"] == pytest.approx(0.75)  # type: ignore[index]
    reference_f1 = metrics.f1_score(reference["y"], reference["prediction"], pos_label="yes")
    assert performance["reference"]["f1"] == pytest.approx(reference_f1)  # type: ignore[index]
    change = expected["f1"] / reference_f1 - 1
    assert performance["metric"] == "f1"  # type: ignore[index]
    assert performance["relative_change"] == pytest.approx(change)  # type: ignore[index]
    assert performance["degradation"] == pytest.approx(-change)  # type: ignore[index]
    assert -change > 0.2
    assert performance["degraded"]  # type: ignore[index]
    assert result["status"] == "detected"
    better = _window(monitor, current.assign(prediction=current["y"]))
    assert better["performance"]["relative_change"] > 0  # type: ignore[index]
    assert not better["performance"]["degraded"]  # type: ignore[index]
    rows = {(r["check"], r["column"]): r for r in long_rows(result)}
    assert rows[("performance", "f1")]["value"] == pytest.approx(expected["f1"])
    assert rows[("performance_degradation", "f1")]["status"] == "degraded"
    assert rows[("prediction_drift_score", "p_yes")]["check"] == "prediction_drift_score"


def test_regression_performance_and_segments_equal_sklearn() -> None:
    rng = np.random.default_rng(6)
    size = 3000
    reference = pd.DataFrame(
        {
            "x": rng.normal(0, 1, size),
            "shop": rng.choice(["north", "south"], size),
            "hour": rng.integers(0, 24, size),
        }
    )
    reference["sales"] = 50 + 10 * reference["x"] + rng.normal(0, 3, size)
    reference["prediction"] = 50 + 10 * reference["x"]
    contract = Contract(target="sales", segments=["shop"]).with_columns(reference)
    slicing = Slicing(columns=None, hour_column="hour").resolved(contract.segments, "rmse")
    monitor = Monitor(reference, contract, contract.feature_names, slicing=slicing)
    current = reference.sample(1000, random_state=1).assign(
        sales=lambda f: f["sales"] + rng.normal(0, 4, len(f))
    )
    result = _window(monitor, current)
    truth, predicted = current["sales"], current["prediction"]
    expected = {
        "rmse": metrics.root_mean_squared_error(truth, predicted),
        "mae": metrics.mean_absolute_error(truth, predicted),
        "r2": metrics.r2_score(truth, predicted),
        # bikes' MAPE is on counts + 1 (core.metrics): a zero count has no percentage error
        "mape": metrics.mean_absolute_percentage_error(truth + 1, predicted + 1),
    }
    performance = result["performance"]
    assert performance["current"] == pytest.approx(expected)  # type: ignore[index]
    assert performance["degradation"] == pytest.approx(  # type: ignore[index]
        expected["rmse"]
        / metrics.root_mean_squared_error(reference["sales"], reference["prediction"])
        - 1
    )
    segments = {(s["segment"], s["value"]): s for s in result["segments"]}  # type: ignore[attr-defined]
    north = current[current["shop"] == "north"]
    assert segments[("shop", "north")]["current"] == pytest.approx(
        metrics.root_mean_squared_error(north["sales"], north["prediction"])
    )
    night = current[current["hour"] <= 5]
    assert segments[("hour_band", "night")]["rows"] == len(night)
    assert segments[("hour_band", "night")]["current"] == pytest.approx(
        metrics.root_mean_squared_error(night["sales"], night["prediction"])
    )
    watched = Monitor(
        reference, contract, ["x"], performance=PerformanceSettings(metric="r2", threshold=0.1)
    )
    r2 = _window(watched, current)["performance"]
    assert r2["metric"] == "r2"  # type: ignore[index]
    assert r2["higher_is_better"]  # type: ignore[index]


def test_a_missing_feature_is_named_and_an_empty_window_is_no_data() -> None:
    reference = _classification(500, 7, [0.2, 0.3, 0.5])
    contract = CLASSIFICATION.with_columns(reference)
    monitor = Monitor(reference, contract, contract.feature_names)
    result = _window(monitor, _classification(300, 8, [0.2, 0.3, 0.5]).drop(columns="colour"))
    assert result["data_quality"]["missing_columns"] == ["colour"]  # type: ignore[index]
    assert result["data_quality"]["columns"]["colour"]["missing_column"]  # type: ignore[index]
    assert result["data_quality"]["columns"]["colour"]["missing_share"] == 1.0  # type: ignore[index]
    assert result["data_drift"]["columns"]["colour"]["missing_column"]  # type: ignore[index]
    assert result["status"] == "potential"
    assert ("missing_column", "colour") in {(r["check"], r["column"]) for r in long_rows(result)}
    empty = _window(monitor, pd.DataFrame())
    assert empty["status"] == "no_data"
    assert empty["data_quality"]["missing_columns"] == []  # type: ignore[index]
    assert empty["data_quality"]["rejected_share"] is None  # type: ignore[index]
    rows = {(r["check"], r["column"]): r for r in long_rows(empty)}
    assert rows[("status", "*")]["value"] == STATUSES.index("no_data") == 3
    assert rows[("rows", "*")]["value"] == 0


def test_rejected_rows_count_in_the_quality_shares() -> None:
    """Values as received: a null is missing; text in a numeric field or a number outside the
    contract's range is out of range; a category the reference lacks is unseen."""
    reference = _classification(500, 9, [0.2, 0.3, 0.5])
    contract = CLASSIFICATION.model_copy(
        update={
            "features": [
                Feature(name="x", min=-10, max=10),
                Feature(name="colour", kind="categorical"),
            ]
        }
    )
    monitor = Monitor(reference, contract, ["x", "colour"])
    current = reference.sample(96, random_state=1)  # unchanged: only the rejected rows move
    rejected = pd.DataFrame(
        {
            "row": [0, 1, 2, 3],
            "field": ["x", "x", "x", "colour"],
            "x": [None, "warm", 99.0, 0.5],
            "colour": ["red", "blue", "red", "purple"],
        }
    )
    result = _window(monitor, current, rejected=rejected)
    quality = result["data_quality"]
    assert quality["rows"] == 96  # type: ignore[index]
    assert quality["rejected_rows"] == 4  # type: ignore[index]
    assert quality["rejected_share"] == 4 / 100  # type: ignore[index]
    x, colour = quality["columns"]["x"], quality["columns"]["colour"]  # type: ignore[index]
    assert x["rows"] == colour["rows"] == 100
    assert x["missing_share"] == 1 / 100
    assert x["out_of_range_share"] == 2 / 100  # "warm" and 99
    assert colour["unseen_categories"] == ["purple"]
    assert result["status"] == "potential"
    assert result["window"]["rows"] == 96  # type: ignore[index]  # drift and performance: accepted only
    without_field = _window(monitor, current, rejected=rejected.drop(columns="colour"))
    assert without_field["data_quality"]["columns"]["colour"]["missing_share"] == 4 / 100  # type: ignore[index]


def test_the_watched_metric_must_fit_the_task() -> None:
    with pytest.raises(ConfigError, match="job.performance.metric: 'f1' is not a regression"):
        PerformanceSettings(metric="f1").watched(Contract(target="y"))
    with pytest.raises(ConfigError, match="roc_auc needs the classifier's probabilities"):
        PerformanceSettings(metric="roc_auc").watched(Contract(task="classification"))
    assert PerformanceSettings().watched(Contract(task="classification")) == "f1"
    assert PerformanceSettings().watched(Contract()) == "rmse"


def test_labels_without_predictions_give_target_drift_but_no_performance() -> None:
    """A labelled parquet file as ``current`` (no model output): nothing to score, no crash."""
    rng = np.random.default_rng(4)
    reference = pd.DataFrame(
        {
            "temp": rng.uniform(0, 1, 2000),
            "season": rng.integers(1, 5, 2000),
            "workingday": rng.integers(0, 2, 2000),
            "cnt": rng.poisson(100, 2000).astype(float),
            "prediction": rng.poisson(100, 2000).astype(float),
        }
    )
    contract = Contract(target="cnt", segments=["season"]).with_columns(reference)
    current = reference.drop(columns="prediction").assign(cnt=lambda f: f["cnt"] * 1.5)
    monitor = Monitor(reference, contract, ["temp", "season"])
    result = _window(monitor, current)
    assert result["performance"] is None
    assert result["segments"] == []
    assert result["prediction_drift"] is None
    assert result["target_drift"]["drift"]  # type: ignore[index]  # demand up by half
    assert not result["data_drift"]["dataset_drift"]  # type: ignore[index]
    assert set(monitor.latest_shares) == {"temp", "season", "cnt"}


def test_nullable_text_and_boolean_columns_are_categories_with_missing_values() -> None:
    """pandas' own nullable dtypes (pd.NA for missing) work like object columns."""
    reference = pd.DataFrame(
        {
            "shop": pd.array(["north", "south", None, "north"] * 100, dtype="string"),
            "open": pd.array([True, False, None, True] * 100, dtype="boolean"),
        }
    )
    current = pd.DataFrame(
        {
            "shop": pd.array(["north", "south", None, "east"] * 50, dtype="string"),
            "open": pd.array([True, False, None, True] * 50, dtype="boolean"),
        }
    )
    contract = Contract().with_columns(reference)
    result = _window(Monitor(reference, contract, contract.feature_names), current)
    quality = result["data_quality"]["columns"]  # type: ignore[index]
    assert quality["shop"]["missing_share"] == quality["open"]["missing_share"] == 0.25
    assert quality["shop"]["unseen_categories"] == ["east"]
    drift = result["data_drift"]["columns"]  # type: ignore[index]
    assert drift["shop"]["method"] == drift["open"]["method"] == "z"  # two values, small
    assert drift["shop"]["drift"]  # north: two thirds of the reference, a third now
    assert not drift["open"]["drift"]  # the same shares
