"""The spark engine against the pandas engine on the same data: equal verdicts, scores within
the bounds of ``core.summaries``, and the monitoring job end to end with ``engine: spark``."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import typing as T
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from bikes.core.comparison import Slicing
from bikes.core.errors import ConfigError, MonitoringFindingError
from bikes.core.monitoring import Monitor
from bikes.io.contracts import load_contract
from bikes.jobs.monitoring import MonitoringJob
from tests.conftest import HOUR_CSV, started

pytest.importorskip("pyspark")

from bikes.spark.monitoring import SparkMonitor

NOW = dt.datetime(2013, 1, 2)
CONTRACT = "confs/bikes-contract.yaml"
# Spark reads microsecond timestamps only (the lake has them; pandas writes nanoseconds).
US: dict[str, T.Any] = {"coerce_timestamps": "us", "allow_truncated_timestamps": True}


def _bikes() -> tuple[pd.DataFrame, pd.DataFrame]:
    """The hourly data split at random in two halves, a noisy model's predictions beside."""
    frame = pd.read_csv(HOUR_CSV)
    frame["timestamp"] = pd.to_datetime(frame["dteday"]) + pd.to_timedelta(frame["hr"], "h")
    rng = np.random.default_rng(0)
    frame["prediction"] = frame["cnt"] * rng.normal(1, 0.2, len(frame))
    order = rng.permutation(len(frame))
    half = len(frame) // 2
    reference = frame.iloc[np.sort(order[:half])].reset_index(drop=True)
    current = frame.iloc[np.sort(order[half:])].reset_index(drop=True)
    return reference.drop(columns="dteday"), current.drop(columns="dteday")


def _shifted(current: pd.DataFrame) -> pd.DataFrame:
    """Humidity down a quarter (drift), windspeed blank in 10% of rows, a few temperatures
    beyond the contract's max and an unknown weather code (quality issues)."""
    rng = np.random.default_rng(1)
    frame = current.assign(hum=np.clip(current["hum"] - 0.25, 0, 1))
    frame["windspeed"] = frame["windspeed"].mask(rng.random(len(frame)) < 0.1)
    frame.loc[:4, "temp"] = 1.5
    frame.loc[5:6, "weathersit"] = 5
    frame["prediction"] = frame["prediction"] * 1.4  # a worse model: degraded performance
    return frame


def _assert_same(pandas: dict[str, T.Any], spark: dict[str, T.Any], monitor: SparkMonitor) -> None:
    """Verdicts equal; numeric scores inside their bounds; category scores equal; quality,
    performance and segments equal to rounding."""
    assert spark["status"] == pandas["status"]
    assert spark["window"] == pandas["window"]
    assert spark["data_quality"]["columns"] == pandas["data_quality"]["columns"]
    assert spark["data_quality"]["missing_columns"] == pandas["data_quality"]["missing_columns"]
    # The window's time span, from the same pass: the latest event exactly, and the service's
    # rows per hour to rounding (latency percentiles: Spark's percentile_approx is a row's value
    # within 1/10,000 of the rank, pandas interpolates between rows).
    assert spark["data_quality"]["freshness"] == pandas["data_quality"]["freshness"]
    if pandas["service"] is None:
        assert spark["service"] is None
    else:
        rows_per_hour = pandas["service"]["rows_per_hour"]
        assert spark["service"]["rows_per_hour"] == pytest.approx(rows_per_hour, rel=1e-12)
        for name, value in pandas["service"]["latency_ms"].items():
            assert spark["service"]["latency_ms"][name] == pytest.approx(value, rel=0.01), name
    drift = pandas["data_drift"]
    for key in ("dataset_drift", "drift_share", "drifted_columns", "counted_columns"):
        assert spark["data_drift"][key] == drift[key]
    bounds = monitor.bounds[-1]
    outputs = [(k, pandas[k], spark[k]) for k in ("prediction_drift", "target_drift")]
    columns = [(c, f, spark["data_drift"]["columns"][c]) for c, f in drift["columns"].items()]
    for name, expected, found in columns + outputs:
        if expected is None:
            assert found is None
            continue
        column = expected["column"]
        assert (found["method"], found["drift"]) == (expected["method"], expected["drift"]), column
        if monitor.kinds[column] != "numeric":
            assert found["score"] == pytest.approx(expected["score"], rel=1e-12), column
        elif expected["method"] in {"wasserstein", "ks"}:
            low, high = bounds[column]
            assert low - 1e-9 <= expected["score"] <= high + 1e-9, (name, bounds[column])
        else:
            assert found["score"] == pytest.approx(expected["score"], rel=0.05), column
    performance, found_performance = pandas["performance"], spark["performance"]
    if performance is None:
        assert found_performance is None
        return
    for key in ("label_coverage", "rows_labelled", "degraded", "metric"):
        assert found_performance[key] == performance[key], key
    assert set(found_performance["current"]) == set(performance["current"])
    for name, value in found_performance["current"].items():
        # ROC AUC from fine bins: the estimate, within one bin's ties of the exact value
        tolerance = {"abs": 2e-3} if name == "roc_auc" else {"rel": 1e-9}
        assert value == pytest.approx(performance["current"][name], **tolerance), name
    assert [(s["segment"], s["value"], s["rows"]) for s in spark["segments"]] == [
        (s["segment"], s["value"], s["rows"]) for s in pandas["segments"]
    ]
    for mine, theirs in zip(spark["segments"], pandas["segments"], strict=True):
        assert mine["current"] == pytest.approx(theirs["current"], rel=1e-9)


def test_bike_windows_with_a_shift_and_without_get_the_pandas_verdicts(
    spark: T.Any, tmp_path: Path
) -> None:
    reference, current = _bikes()
    contract = load_contract(CONTRACT)
    slicing = Slicing(columns=list(contract.segments), hour_column="hr")
    pandas_monitor = Monitor(reference, contract, contract.feature_names, slicing=slicing)
    reference.to_parquet(tmp_path / "reference.parquet", **US)
    spark_monitor = SparkMonitor(
        spark.read.parquet(str(tmp_path / "reference.parquet")),
        contract,
        contract.feature_names,
        slicing=slicing,
    )
    verdicts = {}
    for name, frame in {"same": current, "shifted": _shifted(current)}.items():
        frame = frame.rename(columns={"timestamp": "event_time"})
        # As the capture store has them: answered a few seconds after each event, in 5-500 ms.
        delays = np.random.default_rng(2).uniform(0, 5, len(frame))
        frame["received_time"] = frame["event_time"] + pd.to_timedelta(delays, unit="s")
        frame["latency_ms"] = np.random.default_rng(3).lognormal(3, 1, len(frame)).clip(5, 500)
        frame.to_parquet(tmp_path / f"{name}.parquet", **US)
        expected = pandas_monitor.window(frame, None, None, NOW)
        found = spark_monitor.window(
            spark.read.parquet(str(tmp_path / f"{name}.parquet")), None, None, NOW
        )
        _assert_same(expected, found, spark_monitor)
        verdicts[name] = found
    same, shifted = verdicts["same"], verdicts["shifted"]
    assert same["status"] == "no_detection"
    assert not any(c["drift"] for c in same["data_drift"]["columns"].values())
    assert shifted["status"] == "detected"  # performance degraded
    assert [c for c, r in shifted["data_drift"]["columns"].items() if r["drift"]] == ["hum"]
    quality = shifted["data_quality"]["columns"]
    assert quality["windspeed"]["missing_share"] > 0.05
    assert quality["temp"]["out_of_range_share"] == 5 / len(current)
    assert quality["weathersit"]["unseen_categories"] == [5]
    # The report's binned shares, per window, as the pandas engine has them.
    assert set(spark_monitor.window_shares[-1]) == set(pandas_monitor.window_shares[-1])
    shares = spark_monitor.window_shares[-1]["hum"]
    assert np.abs(shares - pandas_monitor.window_shares[-1]["hum"]).max() < 0.01


def test_the_weather_classifier_small_reference_gets_the_pandas_verdicts(
    spark: T.Any, gibraltar_splits: Path, tmp_path: Path
) -> None:
    """The second dataset: a text label, a text feature, a reference under 1,000 rows (KS,
    chi-square and Z tests, whose p-values the spark engine computes exactly)."""
    contract = load_contract("confs/examples/gibraltar-contract.yaml")
    rng = np.random.default_rng(2)
    frames = {}
    for split in ("train", "production"):
        frame = pd.read_parquet(gibraltar_splits / f"{split}.parquet")
        wrong = rng.random(len(frame)) < 0.2
        classes = np.array(["cloudy", "fair", "wet"])
        frame["predicted_sky"] = np.where(
            wrong, classes[rng.integers(0, 3, len(frame))], frame["sky"]
        )
        # probabilities leaning to the true class: ROC AUC and log loss on both engines
        weights = rng.dirichlet(np.ones(3), len(frame))
        weights[np.arange(len(frame)), np.searchsorted(classes, frame["sky"])] += 1.0
        weights /= weights.sum(axis=1, keepdims=True)
        for i, sky in enumerate(classes):
            frame[f"p_{sky}"] = weights[:, i]
        frames[split] = frame
    reference = frames["train"].iloc[:900].reset_index(drop=True)
    contract = contract.with_columns(reference)
    columns = contract.feature_names
    slicing = Slicing(columns=list(contract.segments))
    pandas_monitor = Monitor(reference, contract, columns, slicing=slicing)
    reference.to_parquet(tmp_path / "reference.parquet", **US)
    spark_monitor = SparkMonitor(
        spark.read.parquet(str(tmp_path / "reference.parquet")), contract, columns, slicing=slicing
    )
    production = frames["production"]
    warmer = production.assign(temp=production["temp"] + 3.0)
    for name, frame in {"same": production, "warmer": warmer}.items():
        frame = frame.rename(columns={"observed_at": "event_time"})
        frame.to_parquet(tmp_path / f"{name}.parquet", **US)
        expected = pandas_monitor.window(frame, None, None, NOW)
        found = spark_monitor.window(
            spark.read.parquet(str(tmp_path / f"{name}.parquet")), None, None, NOW
        )
        assert expected["data_drift"]["columns"]["temp"]["method"] == "ks"
        assert found["data_drift"]["columns"]["temp"]["score"] == pytest.approx(
            expected["data_drift"]["columns"]["temp"]["score"], rel=1e-9
        )
        _assert_same(expected, found, spark_monitor)
        assert {"roc_auc", "log_loss"} <= set(found["performance"]["current"])
    assert found["data_drift"]["columns"]["temp"]["drift"]


def test_the_job_with_engine_spark_writes_json_report_and_run_and_fails_on_a_finding(
    spark: T.Any, services: dict[str, T.Any], tmp_path: Path
) -> None:
    reference, current = _bikes()
    (tmp_path / "reference").mkdir()
    half = len(reference) // 2  # a folder of two files: what a lake partition looks like
    reference.iloc[:half].to_parquet(tmp_path / "reference" / "part-0.parquet", **US)
    reference.iloc[half:].to_parquet(tmp_path / "reference" / "part-1.parquet", **US)
    _shifted(current).to_parquet(tmp_path / "current.parquet", **US)
    config = {
        "engine": "spark",
        "spark": {"master": "local[2]", "conf": {"spark.sql.shuffle.partitions": "2"}},
        "contract": CONTRACT,
        "reference": {"KIND": "ParquetReader", "path": str(tmp_path / "reference")},
        "current": {"KIND": "ParquetReader", "path": str(tmp_path / "current.parquet")},
        "results_path": str(tmp_path / "monitoring.json"),
        "report_path": str(tmp_path / "monitoring.html"),
        "channels": [],
        "fail_on": "detected",
        "run_name": "spark-monitoring",
        **services,
    }
    with MonitoringJob.model_validate(config) as job, pytest.raises(MonitoringFindingError):
        job.run()
    document = json.loads((tmp_path / "monitoring.json").read_text())
    assert document["status"] == "detected"
    assert document["window"]["start"] == str(current["timestamp"].min().isoformat())
    assert document["data_drift"]["columns"]["hum"]["drift"]
    assert document["performance"]["degraded"]
    assert document["diagnostics"] is None
    assert "hum" in (tmp_path / "monitoring.html").read_text()
    with started(services["mlflow_service"]):
        runs = mlflow.search_runs(
            search_all_experiments=True, filter_string="tags.mlflow.runName = 'spark-monitoring'"
        )
    assert len(runs) == 1
    assert runs["tags.status"].iloc[0] == "detected"
    assert (
        runs["metrics.drift_score.hum"].iloc[0] == document["data_drift"]["columns"]["hum"]["score"]
    )


def test_the_spark_engine_refuses_the_capture_store(
    services: dict[str, T.Any], tmp_path: Path
) -> None:
    job = MonitoringJob.model_validate(
        {
            "engine": "spark",
            "reference": {"KIND": "ParquetReader", "path": str(tmp_path / "r.parquet")},
            "current": {"KIND": "StoreReader", "uri": f"sqlite:///{tmp_path / 'store.db'}"},
            **services,
        }
    )
    from bikes.spark.job import prepare

    with pytest.raises(ConfigError, match="job.current: the spark engine reads parquet"):
        prepare(job)


def test_the_cli_and_the_pandas_engine_never_import_pyspark() -> None:
    code = (
        "import sys, bikes.scripts, bikes.jobs.monitoring; "
        "bikes.jobs.monitoring.MonitoringJob.model_json_schema(); "
        "assert 'pyspark' not in sys.modules, 'pyspark imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
