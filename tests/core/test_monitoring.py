from __future__ import annotations

import numpy as np
import pandas as pd

from bikes.core.comparison import Slicing
from bikes.core.monitoring import DriftSettings, Monitor, column_kind, long_rows, status_of


def test_column_kinds_come_from_the_contract_then_the_data() -> None:
    assert column_kind("weathersit", pd.Series([1, 2])) == "categorical"
    assert column_kind("holiday", pd.Series([0, 1])) == "binary"
    assert column_kind("temp", pd.Series([0.1])) == "numeric"
    assert column_kind("prediction", pd.Series([1, 2, 3])) == "numeric"
    assert column_kind("district", pd.Series([1, 2, 3, 1])) == "categorical"
    assert column_kind("flag", pd.Series([0, 1, 1])) == "binary"
    assert column_kind("visits", pd.Series(np.arange(100))) == "numeric"
    assert column_kind("name", pd.Series([0.5, 1.5])) == "numeric"


def test_a_window_with_a_quality_issue_is_potential_and_rows_are_long_format() -> None:
    rng = np.random.default_rng(3)
    reference = pd.DataFrame({"temp": rng.uniform(0, 1, 500), "district": rng.integers(1, 5, 500)})
    current = reference.sample(300, random_state=0).reset_index(drop=True)
    current.loc[:9, "temp"] = np.nan
    current.loc[10, "district"] = 9  # a category the reference never saw
    monitor = Monitor(
        reference, ["temp", "district"], DriftSettings(), Slicing(columns=[], hour_bands={}), 0.2
    )
    result = monitor.window(current, None, None, pd.Timestamp("2026-01-01").to_pydatetime())
    quality = result["data_quality"]["columns"]
    assert quality["temp"]["missing_share"] == 10 / 300
    assert quality["district"]["unseen_categories"] == [9]
    assert result["data_drift"]["columns"]["temp"]["method"] == "ks"  # small reference
    assert result["performance"] is None  # no labels, no predictions
    assert status_of(result) == result["status"] == "potential"
    rows = {(r["check"], r["column"]): r for r in long_rows(result)}
    assert rows[("missing_share", "temp")]["status"] == "issue"
    assert rows[("unseen_categories", "district")]["value"] == 1
    assert rows[("status", "*")]["value"] == 1


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
    current = reference.drop(columns="prediction").assign(cnt=lambda f: f["cnt"] * 1.5)
    monitor = Monitor(reference, ["temp", "season"], DriftSettings(), Slicing(), 0.2)
    result = monitor.window(current, None, None, pd.Timestamp("2026-01-01").to_pydatetime())
    assert result["performance"] is None
    assert result["segments"] == []
    assert result["prediction_drift"] is None
    assert result["target_drift"]["drift"]  # demand up by half
    assert not result["data_drift"]["dataset_drift"]
    assert set(monitor.latest_shares) == {"temp", "season", "cnt"}
