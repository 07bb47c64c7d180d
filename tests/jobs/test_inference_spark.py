"""Batch inference on Spark (local[2]) against the pandas engine, and the lake read by Spark.

PySpark 4.3 warns that pandas 3 is not fully supported: these tests run the pandas-facing
paths (``spark_udf`` through Arrow, ``toPandas``) on the locked pandas and pyarrow.
"""

from __future__ import annotations

import datetime as dt
import typing as T
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("pyspark")

from bikes.core.errors import ContractError, SchemaError
from bikes.io.lake import LakeReader
from bikes.io.services import LoggerService
from bikes.io.spark import SparkSettings, session
from bikes.io.store import Store
from bikes.jobs.export import ExportJob
from bikes.jobs.inference import InferenceJob
from tests.jobs.test_export import _labels, _rows

if T.TYPE_CHECKING:
    from pyspark.sql import SparkSession

SPARK = {"master": "local[2]", "conf": {"spark.sql.shuffle.partitions": "2"}}


@pytest.fixture(scope="session")
def spark() -> T.Iterator[SparkSession]:
    """One local session for every Spark test (a JVM start costs seconds)."""
    started = session(SparkSettings.model_validate(SPARK))
    yield started
    started.stop()


def _job(services: dict[str, T.Any], inputs: str, output: str, **config: T.Any) -> InferenceJob:
    return InferenceJob.model_validate(
        {"inputs": {"path": inputs}, "outputs": {"path": output}, **services, **config}
    )


def test_spark_predictions_equal_the_pandas_engines(
    champion: dict[str, T.Any],
    services: dict[str, T.Any],
    splits_dir: Path,
    spark: SparkSession,
    tmp_path: Path,
) -> None:
    production = str(splits_dir / "production.parquet")
    with _job(services, production, str(tmp_path / "pandas.parquet")) as job:
        job.run()
    folder = tmp_path / "spark-predictions"
    with _job(services, production, str(folder), engine="spark", spark=SPARK) as job:
        result = job.run()
    expected = pd.read_parquet(tmp_path / "pandas.parquet")
    assert result == {
        "model_version": champion["model_version"],
        "rows": len(expected),
        "path": str(folder),
        "engine": "spark",
    }
    assert sorted(p.name for p in folder.iterdir() if p.is_dir())[0] == "event_date=2012-07-01"
    found = pd.read_parquet(folder).sort_values("timestamp").reset_index(drop=True)
    assert list(found.columns) == ["timestamp", "prediction", "model_version", "event_date"]
    assert found["timestamp"].tolist() == expected["timestamp"].tolist()
    assert found["prediction"].to_numpy() == pytest.approx(
        expected["prediction"].to_numpy(), rel=1e-9, abs=1e-9
    )
    assert (found["model_version"] == champion["model_version"]).all()
    # Spark reads its own output back, through Arrow into pandas 3.
    back = spark.read.parquet(str(folder)).toPandas()
    assert len(back) == len(expected)
    # A second run replaces the folder whole: no file of the first is left beside.
    with _job(services, production, str(folder), engine="spark", spark=SPARK) as job:
        job.run()
    assert len(pd.read_parquet(folder)) == len(expected)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".spark-predictions")]


def test_spark_writes_a_classifiers_score_columns_as_the_pandas_engine(
    classifier: dict[str, T.Any],
    services: dict[str, T.Any],
    gibraltar_splits: Path,
    spark: SparkSession,
    tmp_path: Path,
) -> None:
    """The version's own contract names p_fair, p_cloudy, p_wet: Spark writes them too (a
    second UDF over predict_proba), equal to the pandas engine's, in the same column order."""
    production = str(gibraltar_splits / "production.parquet")
    weather = {"registered_model": "weather"}
    with _job(services, production, str(tmp_path / "pandas.parquet"), **weather) as job:
        job.run()
    folder = tmp_path / "spark-weather"
    with _job(services, production, str(folder), engine="spark", spark=SPARK, **weather) as job:
        result = job.run()
    expected = pd.read_parquet(tmp_path / "pandas.parquet")
    assert result["rows"] == len(expected)
    found = pd.read_parquet(folder)
    assert list(found.columns) == [*expected.columns, "event_date"]
    scores = ["p_fair", "p_cloudy", "p_wet"]
    keys = ["observed_at", "predicted_sky", *scores]
    found = found.sort_values(keys).reset_index(drop=True)
    expected = expected.sort_values(keys).reset_index(drop=True)
    assert found["observed_at"].tolist() == expected["observed_at"].tolist()
    assert found["predicted_sky"].tolist() == expected["predicted_sky"].tolist()
    for column in scores:
        assert found[column].to_numpy() == pytest.approx(
            expected[column].to_numpy(), rel=1e-9, abs=1e-9
        )
    assert found[scores].sum(axis=1).to_numpy() == pytest.approx(1.0, abs=1e-9)
    assert found[scores].std().min() > 0.01  # real probabilities, not a constant column


def test_spark_checks_the_contract_on_every_row_without_collecting_them(
    champion: dict[str, T.Any],
    services: dict[str, T.Any],
    test_frame: pd.DataFrame,
    spark: SparkSession,
    tmp_path: Path,
) -> None:
    frame = test_frame.head(50)
    frame.drop(columns=["hum"]).to_parquet(tmp_path / "no-hum.parquet")
    broken = frame.copy()
    broken.loc[broken.index[[3, 7]], "temp"] = 1.5  # above the contract's max 1.0
    broken.loc[broken.index[9], "weathersit"] = 9  # not one of 1..4
    broken.to_parquet(tmp_path / "broken.parquet")
    frame.assign(temp=frame["temp"].astype(str)).to_parquet(tmp_path / "text.parquet")
    output = tmp_path / "out"
    cases = [
        ("no-hum", SchemaError, r"missing column\(s\): hum"),
        ("broken", SchemaError, r"weathersit: 1 of 50 row\(s\) invalid .*\n  - temp: 2 of 50"),
        ("text", ContractError, "column 'temp' is numeric in the contract but holds string"),
    ]
    for name, error, message in cases:
        job = _job(services, str(tmp_path / f"{name}.parquet"), str(output), engine="spark")
        with job, pytest.raises(error, match=message):
            job.run()
    assert not output.exists()


def test_spark_reads_the_lake_a_glob_and_a_table(spark: SparkSession, tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'p.db'}")
    store.create()
    bikes = _rows(3, 5)
    store.write_predictions([*bikes, *_rows(2, 4, model="churn")])
    store.write_labels(_labels(bikes[:2], value=9.5))
    lake = tmp_path / "lake"
    export = ExportJob(
        store_uri=store.uri, lake=str(lake), logger_service=LoggerService(level="WARNING")
    )
    with export:
        export.run()
    start, end = dt.datetime(2012, 7, 2), dt.datetime(2012, 7, 3, 2)
    reader = LakeReader(path=str(lake), model_name="bikes", start=start, end=end)
    frame = reader.read_spark(spark)
    expected = reader.read()
    assert frame.count() == len(expected) == 5 + 2
    got = frame.toPandas().sort_values("event_time").reset_index(drop=True)
    assert got["prediction_id"].tolist() == expected["prediction_id"].tolist()
    assert set(got.columns) == set(expected.columns)
    labelled = LakeReader(path=str(lake), model_name="bikes").read_spark(spark)
    assert labelled.where("target IS NOT NULL").count() == 2
    # The churn model's columns (text predictions) never merge into bikes' read.
    assert dict(labelled.dtypes)["prediction"] in ("bigint", "double")
    pattern = str(lake / "model_name=churn" / "event_date=*")
    churn = LakeReader(path=pattern).read_spark(spark)
    assert churn.count() == 8
    assert dict(churn.dtypes)["prediction"] == "string"
    spark.read.parquet(str(lake / "model_name=churn")).createOrReplaceTempView("churn_lake")
    assert LakeReader(path="churn_lake").read_spark(spark).count() == 8
    store.dispose()
