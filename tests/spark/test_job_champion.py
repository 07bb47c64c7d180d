"""The monitoring job with ``engine: spark`` and a ``ChampionReference``: the version's own
training rows (a pandas table from MLflow, handed to Spark) against a current window give the
pandas engine's verdict, drift flags and performance."""

from __future__ import annotations

import typing as T
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from bikes.io.contracts import load_contract
from bikes.jobs.monitoring import MonitoringJob
from tests.conftest import BIKES_CONTRACT, started

pytest.importorskip("pyspark")

# Spark reads microsecond timestamps only (pandas writes nanoseconds).
US: dict[str, T.Any] = {"coerce_timestamps": "us", "allow_truncated_timestamps": True}
SPARK = {"master": "local[2]", "conf": {"spark.sql.shuffle.partitions": "2"}}


def _run(services: dict[str, T.Any], tmp_path: Path, current: Path, **config: T.Any) -> T.Any:
    job = MonitoringJob.model_validate(
        {
            "reference": {"KIND": "ChampionReference"},
            "current": {"KIND": "ParquetReader", "path": str(current)},
            "results_path": str(tmp_path / "monitoring.json"),
            "report_path": str(tmp_path / "monitoring.html"),
            "channels": [],
            "fail_on": "never",
            **services,
            **config,
        }
    )
    with job:
        return job.run()["results"]


def test_a_champion_reference_on_spark_gets_the_pandas_verdict(
    champion: dict[str, T.Any],
    services: dict[str, T.Any],
    test_frame: pd.DataFrame,
    spark: T.Any,
    tmp_path: Path,
) -> None:
    features = load_contract(str(BIKES_CONTRACT)).feature_names
    with started(services["mlflow_service"]):
        model = mlflow.pyfunc.load_model(f"models:/bikes/{champion['model_version']}")
    # The champion's predictions on unseen rows, then a drier month and a worse model.
    current = test_frame.assign(
        prediction=np.asarray(model.predict(test_frame[features]), dtype=float)
    )
    current = current.assign(
        hum=np.clip(current["hum"] - 0.25, 0, 1), prediction=current["prediction"] * 2.5
    )
    current.to_parquet(tmp_path / "current.parquet", **US)
    pandas = _run(services, tmp_path / "pandas", tmp_path / "current.parquet")
    found = _run(
        services, tmp_path / "spark", tmp_path / "current.parquet", engine="spark", spark=SPARK
    )
    assert found["status"] == pandas["status"] == "detected"
    assert found["window"] == pandas["window"]
    assert found["data_quality"]["columns"] == pandas["data_quality"]["columns"]
    drift, spark_drift = pandas["data_drift"], found["data_drift"]
    for key in ("dataset_drift", "drift_share", "drifted_columns", "counted_columns"):
        assert spark_drift[key] == drift[key], key
    assert drift["columns"]["hum"]["drift"]
    assert not all(c["drift"] for c in drift["columns"].values())  # a verdict per column
    assert spark_drift["columns"].keys() == drift["columns"].keys()
    for column, expected in drift["columns"].items():
        mine = spark_drift["columns"][column]
        assert (mine["method"], mine["drift"]) == (expected["method"], expected["drift"]), column
        # Fine-bin scores: within core.summaries' bounds of the exact ones (0.004 apart here).
        assert mine["score"] == pytest.approx(expected["score"], rel=0.05, abs=5e-3), column
    performance, spark_performance = pandas["performance"], found["performance"]
    assert performance["degraded"]
    for key in ("label_coverage", "rows_labelled", "degraded", "metric"):
        assert spark_performance[key] == performance[key], key
    for name, value in performance["current"].items():
        assert spark_performance["current"][name] == pytest.approx(value, rel=1e-9), name
    # The reference side: the version's held-out record, on both engines.
    assert spark_performance["reference"] == pytest.approx(performance["reference"], rel=1e-9)
    assert spark_performance["reference_source"] == performance["reference_source"]
    # Per segment: the held-out rows' figures, not the training rows' (in-sample) ones.
    assert performance["reference_source"]["segments"] == "held_out"
    assert [(s["segment"], s["value"], s["rows"]) for s in found["segments"]] == [
        (s["segment"], s["value"], s["rows"]) for s in pandas["segments"]
    ]
    assert any(s["reference"] is None for s in pandas["segments"])  # a season not held out
    for mine, theirs in zip(found["segments"], pandas["segments"], strict=True):
        for key in ("current", "reference", "relative_change"):
            if theirs[key] is None:
                assert mine[key] is None, (mine, key)
            else:
                assert mine[key] == pytest.approx(theirs[key], rel=1e-9), (mine, key)
