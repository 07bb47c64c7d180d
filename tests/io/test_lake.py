"""The lake reader: partitions pruned, a glob, windows, and monitoring a lake as it monitors a store."""

from __future__ import annotations

import datetime as dt
import typing as T
from pathlib import Path

import pandas as pd
import pytest

from bikes.core.errors import ConfigError, InputError
from bikes.io.lake import LakeReader, is_path, partition_folder
from bikes.io.services import LoggerService
from bikes.io.store import Store
from bikes.jobs.export import ExportJob
from tests.jobs.test_monitoring import SHOP_CONTRACT, START, _capture, _job, _shop_table


@pytest.fixture
def lake(tmp_path: Path) -> T.Iterator[tuple[Store, Path]]:
    """Two models exported: ``shop`` on 1 and 2 March (1,440 rows a day, labelled), ``other``
    on 4 March."""
    store = Store(f"sqlite:///{tmp_path / 'shop.db'}")
    store.create()
    _capture(store, _shop_table(2 * 1440, 5, (0.5, 0.3, 0.2)), "shop")
    other = _shop_table(100, 6, (0.5, 0.3, 0.2))
    _capture(store, other.assign(seen_at=other["seen_at"] + pd.Timedelta(days=3)), "other")
    folder = tmp_path / "lake"
    job = ExportJob(
        store_uri=store.uri, lake=str(folder), logger_service=LoggerService(level="WARNING")
    )
    with job:
        job.run()
    yield store, folder
    store.dispose()


def test_bounds_and_model_read_only_their_partitions(lake: tuple[Store, Path]) -> None:
    store, folder = lake
    # A partition outside the bounds is never opened: garbage there changes nothing.
    (partition_folder(folder, "shop", "2026-03-01") / "part-0000.parquet").write_bytes(b"junk")
    second = dt.datetime(2026, 3, 2)
    reader = LakeReader(path=str(folder), start=second, end=second + dt.timedelta(hours=6))
    frame = reader.read("shop")
    expected = store.read(model_name="shop", start=reader.start, end=reader.end)
    assert len(frame) == len(expected) == 360
    assert frame["prediction_id"].tolist() == expected["prediction_id"].tolist()
    assert (frame["model_name"] == "shop").all()
    assert frame["event_time"].is_monotonic_increasing
    with pytest.raises(InputError, match="lake unreadable"):
        LakeReader(path=str(folder)).read("shop")  # the whole model reaches the junk


def test_a_glob_and_a_column_list(lake: tuple[Store, Path]) -> None:
    _, folder = lake
    pattern = str(folder / "model_name=*" / "event_date=2026-03-0[24]")
    frame = LakeReader(path=pattern, columns=["x", "target"]).read()
    assert list(frame.columns) == ["event_time", "x", "target"]
    assert len(frame) == 1440 + 100
    only = LakeReader(path=pattern, model_name="other").read("shop")  # the config's name wins
    assert len(only) == 100
    with pytest.raises(InputError, match="no file matches"):
        LakeReader(path=str(folder / "model_name=nobody*")).read()
    with pytest.raises(InputError, match=r"columns: nope not in the lake"):
        LakeReader(path=str(folder), columns=["nope"]).read("shop")


def test_a_table_name_is_for_spark_only() -> None:
    assert not is_path("monitoring.predictions")
    assert is_path("outputs/lake")
    assert is_path("s3a://bucket/lake")
    with pytest.raises(ConfigError, match="is a table name: only the Spark engine"):
        LakeReader(path="predictions_lake").read("shop")


def test_windows_of_a_backfill_one_at_a_time(lake: tuple[Store, Path]) -> None:
    _, folder = lake
    reader = LakeReader(path=str(folder), start="2026-03-01", end="2026-03-04", step="1D")
    windows = list(reader.windows("shop"))
    assert [(w.start.day, w.end.day, len(w.frame)) for w in windows] == [  # type: ignore[union-attr]
        (1, 2, 1440),
        (2, 3, 1440),
        (3, 4, 0),
    ]


def test_monitoring_a_lake_equals_monitoring_its_store(
    lake: tuple[Store, Path], services: dict[str, T.Any], tmp_path: Path
) -> None:
    """The same windows from the store and from the lake it was exported to: the same
    statuses, drift scores, quality and performance."""
    store, folder = lake
    _shop_table(3000, 1, (0.5, 0.3, 0.2)).to_parquet(tmp_path / "reference.parquet")
    window = {"start": "2026-03-01", "end": "2026-03-03", "step": "1D"}
    documents = {}
    for kind, current in (
        ("store", {"KIND": "StoreReader", "uri": store.uri, **window}),
        ("lake", {"KIND": "LakeReader", "path": str(folder), **window}),
    ):
        (tmp_path / f"run-{kind}").mkdir()
        with _job(
            services,
            tmp_path / f"run-{kind}",
            registered_model="shop",
            contract={
                **SHOP_CONTRACT,
                "features": [
                    {"name": "x", "min": -10, "max": 10},
                    {"name": "colour", "kind": "categorical"},
                ],
            },
            reference={"KIND": "ParquetReader", "path": str(tmp_path / "reference.parquet")},
            current=current,
            metrics_store_uri=f"sqlite:///{tmp_path / f'run-{kind}' / 'metrics.db'}",
        ) as job:
            documents[kind] = job.run()["results"]
    for from_store, from_lake in zip(
        documents["store"]["windows"], documents["lake"]["windows"], strict=True
    ):
        assert from_lake["status"] == from_store["status"]
        assert from_lake["window"] == from_store["window"]
        assert from_lake["data_drift"] == from_store["data_drift"]
        assert from_lake["performance"] == from_store["performance"]
        assert from_lake["data_quality"]["columns"] == from_store["data_quality"]["columns"]
    assert documents["lake"]["windows"][0]["performance"]["rows_labelled"] == 1440


def test_a_lake_period_as_the_reference(
    lake: tuple[Store, Path], services: dict[str, T.Any], tmp_path: Path
) -> None:
    """Last period's captured rows (with their prediction and label) as the baseline."""
    _, folder = lake
    with _job(
        services,
        tmp_path,
        registered_model="shop",
        contract=SHOP_CONTRACT,
        reference={"KIND": "LakeReader", "path": str(folder), "end": "2026-03-02"},
        current={"KIND": "LakeReader", "path": str(folder), "start": "2026-03-02"},
    ) as job:
        result = job.run()["results"]
    assert set(result["data_quality"]["columns"]) == {"x", "colour"}
    assert result["window"]["start"] == (START + dt.timedelta(days=1)).isoformat()
    assert result["performance"]["rows_labelled"] == 1440
    assert result["status"] == "no_detection"
