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
from bikes.core.metrics import regression_metrics
from bikes.core.monitoring import (
    STATUSES,
    Monitor,
    PerformanceSettings,
    ReferenceOrigin,
    long_rows,
    status_of,
)
from bikes.core.reference import HeldOutPerformance
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


def _numeric_table(rows: int, seed: int, names: list[str]) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({name: rng.normal(0, 1, rows) for name in names})


def test_expected_drift_is_scored_and_shown_but_leaves_the_share_and_status_alone() -> None:
    """KS on 800 reference rows; the current window is a sample of the reference rows, so an
    unshifted column cannot drift, and a shift of three standard deviations always does."""
    names = ["a", "b", "c", "d", "e", "month"]
    reference = _numeric_table(800, 11, names)
    contract = Contract(features=[Feature(name=n) for n in names], expected_drift=["month", "e"])
    monitor = Monitor(reference, contract, names)
    current = reference.sample(400, random_state=2).reset_index(drop=True)

    def moved(*columns: str) -> pd.DataFrame:
        return current.assign(**{c: current[c] + 3.0 for c in columns})

    calm = _window(monitor, current)
    assert calm["data_drift"]["drifted_columns"] == 0  # type: ignore[index]
    assert calm["status"] == "no_detection"
    # The same shift: in an expected column the status is untouched ...
    expected = _window(monitor, moved("month"))
    drift = expected["data_drift"]
    assert drift["columns"]["month"]["drift"]  # type: ignore[index]
    assert drift["columns"]["month"]["expected"]  # type: ignore[index]
    assert drift["columns"]["month"]["score"] < 0.05  # type: ignore[index]  # still scored
    assert drift["expected_drifted_columns"] == ["month"]  # type: ignore[index]
    assert drift["expected_columns"] == ["e", "month"]  # type: ignore[index]
    assert drift["drifted_columns"] == 0  # type: ignore[index]
    assert drift["drift_share"] == 0.0  # type: ignore[index]
    assert expected["status"] == "no_detection"
    rows = {(r["check"], r["column"]): r for r in long_rows(expected)}
    assert rows[("drift_score", "month")]["status"] == "expected"
    # ... in any other column it counts: one of the four counted columns drifts.
    other = _window(monitor, moved("a"))
    assert not other["data_drift"]["columns"]["a"]["expected"]  # type: ignore[index]
    assert other["data_drift"]["drifted_columns"] == 1  # type: ignore[index]
    assert other["data_drift"]["drift_share"] == 1 / 4  # type: ignore[index]
    assert other["status"] == "potential"
    assert {(r["check"], r["column"]): r for r in long_rows(other)}[("drift_score", "a")][
        "status"
    ] == "drift"


def test_the_drift_share_counts_scored_columns_whose_drift_is_not_expected() -> None:
    """Hand-worked: six features, two expected (e, month). Shift a, b, e and month:
    counted columns a, b, c, d, of which a and b drift: 2/4 = 0.5, dataset drift at 0.5.
    Without the expectation: 4 of 6. With c missing from the window (not scored): 2/3."""
    names = ["a", "b", "c", "d", "e", "month"]
    reference = _numeric_table(800, 12, names)
    features = [Feature(name=n) for n in names]
    current = reference.sample(400, random_state=3).reset_index(drop=True)
    shifted = current.assign(**{c: current[c] + 3.0 for c in ("a", "b", "e", "month")})
    expecting = Monitor(
        reference, Contract(features=features, expected_drift=["e", "month"]), names
    )
    plain = Monitor(reference, Contract(features=features), names)
    counted = _window(expecting, shifted)["data_drift"]
    assert (counted["drifted_columns"], counted["counted_columns"]) == (2, 4)  # type: ignore[index]
    assert counted["drift_share"] == 2 / 4  # type: ignore[index]
    assert counted["dataset_drift"]  # type: ignore[index]  # 0.5 >= share 0.5
    everything = _window(plain, shifted)["data_drift"]
    assert (everything["drifted_columns"], everything["counted_columns"]) == (4, 6)  # type: ignore[index]
    assert everything["drift_share"] == 4 / 6  # type: ignore[index]
    without_c = _window(expecting, shifted.drop(columns="c"))["data_drift"]
    assert (without_c["drifted_columns"], without_c["counted_columns"]) == (2, 3)  # type: ignore[index]
    assert without_c["drift_share"] == 2 / 3  # type: ignore[index]
    assert without_c["columns"]["c"]["missing_column"]  # type: ignore[index]
    # Every watched column expected: nothing to count, a share of 0, never dataset drift.
    only = Monitor(reference, Contract(features=features, expected_drift=["e", "month"]), ["e"])
    alone = _window(only, shifted)["data_drift"]
    assert (alone["drift_share"], alone["counted_columns"], alone["dataset_drift"]) == (
        0.0,
        0,
        False,
    )  # type: ignore[index]


def _sales(rows: int, seed: int, noise: float) -> pd.DataFrame:
    """Sales of two shops, and a model's predictions off by ``noise`` (standard deviation)."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"x": rng.normal(0, 1, rows), "shop": rng.choice(["n", "s"], rows)})
    frame["prediction"] = 50 + 10 * frame["x"]
    frame["sales"] = frame["prediction"] + rng.normal(0, noise, rows)
    frame["when"] = pd.date_range("2024-01-01", periods=rows, freq="h")
    return frame


def test_the_reference_performance_comes_from_the_held_out_record_not_the_fit() -> None:
    """The training rows are fitted closely (errors of sd 3); on rows it did not see the
    model's errors have sd 6, as in production. Against the fit every window looks 100%
    worse; against the held-out record it is not degraded, and a real degradation (sd 9)
    still is."""
    fit = _sales(3000, 21, noise=3.0)  # the reference table: training rows, in-sample
    unseen = _sales(2000, 22, noise=6.0)  # the validation part, predicted without it
    contract = Contract(target="sales", timestamp="when", segments=["shop"]).with_columns(fit)
    slicing = Slicing(columns=None).resolved(contract.segments, "rmse")
    record = HeldOutPerformance(
        source="validation split of training (last 20%, 2,000 rows, 2024-01-01..2024-03-24)",
        rows=len(unseen),
        start=unseen["when"].min().to_pydatetime(),
        end=unseen["when"].max().to_pydatetime(),
        metrics=regression_metrics(unseen["sales"], unseen["prediction"]),
    )
    honest = Monitor(
        fit,
        contract,
        contract.feature_names,
        slicing=slicing,
        origin=ReferenceOrigin(
            "the training rows", in_sample=True, held_out=record, held_out_rows=unseen
        ),
    )
    optimistic = Monitor(
        fit,
        contract,
        contract.feature_names,
        slicing=slicing,
        origin=ReferenceOrigin("the training rows", in_sample=True),
    )
    same = _sales(1500, 23, noise=6.0)  # production at the model's real quality
    current_rmse = metrics.root_mean_squared_error(same["sales"], same["prediction"])
    held_out_rmse = metrics.root_mean_squared_error(unseen["sales"], unseen["prediction"])
    fit_rmse = metrics.root_mean_squared_error(fit["sales"], fit["prediction"])

    performance = _window(honest, same)["performance"]
    assert performance["reference"] == pytest.approx(record.metrics)  # type: ignore[index]
    assert performance["reference"]["rmse"] == pytest.approx(held_out_rmse)  # type: ignore[index]
    assert performance["degradation"] == pytest.approx(current_rmse / held_out_rmse - 1)  # type: ignore[index]
    assert abs(performance["degradation"]) < 0.1  # type: ignore[index]
    assert not performance["degraded"]  # type: ignore[index]
    source = performance["reference_source"]  # type: ignore[index]
    assert source["kind"] == "held_out"
    assert source["source"] == record.source
    assert source["rows"] == 2000
    assert source["start"] == "2024-01-01T00:00:00"
    assert not source["optimistic"]
    assert source["segments"] == "held_out"
    assert performance["reference_in_sample"]["rmse"] == pytest.approx(fit_rmse)  # type: ignore[index]
    segments = {s["value"]: s for s in _window(honest, same)["segments"]}  # type: ignore[attr-defined]
    north = unseen[unseen["shop"] == "n"]
    assert segments["n"]["reference"] == pytest.approx(
        metrics.root_mean_squared_error(north["sales"], north["prediction"])
    )

    fallback = _window(optimistic, same)["performance"]
    assert fallback["degradation"] == pytest.approx(current_rmse / fit_rmse - 1)  # type: ignore[index]
    assert fallback["degradation"] > 0.8  # type: ignore[index]
    assert fallback["degraded"]  # type: ignore[index]
    assert fallback["reference_source"]["kind"] == "in_sample"  # type: ignore[index]
    assert fallback["reference_source"]["optimistic"]  # type: ignore[index]
    assert fallback["reference_source"]["note"].startswith("in-sample: optimistic")  # type: ignore[index]
    assert fallback["reference_source"]["rows"] == 3000  # type: ignore[index]
    assert fallback["reference_source"]["segments"] == "in_sample"  # type: ignore[index]

    worse = _window(honest, _sales(1500, 24, noise=9.0))
    assert worse["performance"]["degradation"] > 0.3  # type: ignore[index]
    assert worse["performance"]["degraded"]  # type: ignore[index]
    assert worse["status"] == "detected"


def test_a_held_out_record_without_the_watched_metric_falls_back_and_says_why() -> None:
    fit = _sales(500, 31, noise=3.0)
    contract = Contract(target="sales").with_columns(fit)
    record = HeldOutPerformance(
        source="elsewhere", rows=10, start=None, end=None, metrics={"rmse": 6.0}
    )
    monitor = Monitor(
        fit,
        contract,
        ["x"],
        performance=PerformanceSettings(metric="mae"),
        origin=ReferenceOrigin(in_sample=False, held_out=record),
    )
    performance = _window(monitor, _sales(300, 32, noise=6.0))["performance"]
    source = performance["reference_source"]  # type: ignore[index]
    assert source["kind"] == "reference_table"
    assert "held_out_performance record has no mae" in source["note"]
    assert performance["reference"]["mae"] == pytest.approx(  # type: ignore[index]
        metrics.mean_absolute_error(fit["sales"], fit["prediction"])
    )
