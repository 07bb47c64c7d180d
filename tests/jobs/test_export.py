"""The export job on real SQLite and real PostgreSQL stores, and a real process killed mid-way."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import stat
import subprocess
import sys
import time
import typing as T
import uuid
from pathlib import Path

import pandas as pd
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from bikes.core.errors import InputError
from bikes.io.lake import MANIFEST, LakeReader, partition_folder
from bikes.io.services import LoggerService
from bikes.io.store import Store
from bikes.jobs.export import ExportJob
from tests.conftest import REPO, clean_environment, postgres_store

DAY = dt.datetime(2012, 7, 1)
QUIET = {"logger_service": LoggerService(level="WARNING")}


def _rows(days: int, per_day: int, model: str = "bikes", first: dt.datetime = DAY) -> list[dict]:
    """Captured bike predictions, ``per_day`` hours a day; received in event order."""
    rows = []
    for day in range(days):
        for hour in range(per_day):
            event = first + dt.timedelta(days=day, hours=hour)
            inputs: dict[str, T.Any] = {"hr": hour, "temp": 0.5 + hour / 100, "season": 3}
            if model != "bikes":
                inputs = {"plan": ["basic", "pro"][hour % 2], "tenure": float(hour)}
            rows.append(
                {
                    "prediction_id": uuid.uuid4().hex,
                    "event_time": event,
                    "received_time": event + dt.timedelta(seconds=1),
                    "model_name": model,
                    "model_version": "3",
                    "latency_ms": 2.0 + hour,
                    "inputs": inputs,
                    "prediction": 100.0 + hour if model == "bikes" else ["stay", "leave"][hour % 2],
                    "scores": None if model == "bikes" else {"p_leave": hour / 10},
                }
            )
    return rows


def _labels(rows: list[dict], value: float = 7.0, when: dt.datetime | None = None) -> list[dict]:
    moment = when or dt.datetime(2026, 1, 1)
    return [
        {"prediction_id": r["prediction_id"], "label_time": moment, "target": value} for r in rows
    ]


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> T.Iterator[Store]:
    if request.param == "sqlite":
        sqlite = Store(f"sqlite:///{tmp_path / 'predictions.db'}")
        sqlite.create()
        yield sqlite
        sqlite.dispose()
        return
    with postgres_store() as postgres:
        yield postgres


def _export(store: Store, lake: Path, **settings: T.Any) -> dict[str, T.Any]:
    job = ExportJob(
        store_uri=store.engine.url.render_as_string(hide_password=False),
        schema_name=store.metadata.schema,
        lake=str(lake),
        **QUIET,
        **settings,
    )
    with job:
        return job.run()


def _lake_ids(lake: Path) -> list[str]:
    return pd.read_parquet(lake, columns=["prediction_id"])["prediction_id"].tolist()


def test_the_lake_holds_what_the_store_reader_reads(store: Store, tmp_path: Path) -> None:
    bikes, churn = _rows(3, 5), _rows(2, 4, model="churn")
    store.write_predictions(bikes + churn)
    store.write_labels([*_labels(bikes[:4]), {**_labels(churn[:1])[0], "target": "leave"}])
    lake = tmp_path / "lake"
    result = _export(store, lake)
    assert result == {"lake": str(lake), "partitions": 5, "rows": 23, "unchanged": 0}
    assert (partition_folder(lake, "bikes", "2012-07-01") / "part-0000.parquet").is_file()
    assert sorted(p.name for p in lake.iterdir()) == [
        "_bikes_export.json",
        "_bikes_export.lock",
        "model_name=bikes",
        "model_name=churn",
    ]
    for model in ("bikes", "churn"):
        expected = store.read(model_name=model)
        found = LakeReader(path=str(lake)).read(model)
        assert list(found.columns) == [
            *list(expected.columns[expected.columns != "model_name"]),
            "model_name",
        ]
        pd.testing.assert_frame_equal(
            found[expected.columns], expected, check_dtype=False, check_exact=True
        )
    # Any hive reader finds the partitions: pandas and pyarrow on the folder (one model's
    # folder: models differ in columns and types, a whole-lake read takes the first file's).
    assert len(pd.read_parquet(lake, columns=["prediction_id", "event_time"])) == 23
    everything = pd.read_parquet(lake / "model_name=bikes")
    assert len(everything) == 15
    assert sorted(everything["event_date"].astype(str).unique()) == [
        "2012-07-01",
        "2012-07-02",
        "2012-07-03",
    ]
    dataset = ds.dataset(lake / "model_name=churn", partitioning="hive")
    assert dataset.to_table(filter=ds.field("event_date") == "2012-07-02").num_rows == 4


def test_a_rerun_exports_nothing_and_new_rows_write_only_their_day(
    store: Store, tmp_path: Path
) -> None:
    rows = _rows(4, 6)
    store.write_predictions(rows)
    lake = tmp_path / "lake"
    assert _export(store, lake)["rows"] == 24
    files = {p: p.stat().st_ino for p in lake.rglob("part-*.parquet")}
    again = _export(store, lake)
    assert again == {"lake": str(lake), "partitions": 0, "rows": 0, "unchanged": 4}
    assert {p: p.stat().st_ino for p in lake.rglob("part-*.parquet")} == files  # untouched
    # A replayed spool: rows of an old day, received late but with their own (older) times.
    late = _rows(1, 3, first=DAY + dt.timedelta(days=1, minutes=30))
    late = [{**r, "received_time": DAY} for r in late]
    store.write_predictions(late + _rows(1, 2, first=DAY + dt.timedelta(days=10)))
    third = _export(store, lake)
    assert (third["partitions"], third["rows"], third["unchanged"]) == (2, 6 + 3 + 2, 3)
    ids = _lake_ids(lake)
    assert len(ids) == len(set(ids)) == store.count() == 29


def test_a_late_label_rewrites_just_its_partition(store: Store, tmp_path: Path) -> None:
    rows = _rows(3, 4)
    store.write_predictions(rows)
    lake = tmp_path / "lake"
    _export(store, lake)
    before = {p.parent.name: p.stat().st_ino for p in lake.rglob("part-*.parquet")}
    store.write_labels(_labels(rows[5:6], value=42.0))  # the second day's second hour
    result = _export(store, lake)
    assert (result["partitions"], result["rows"]) == (1, 4)
    after = {p.parent.name: p.stat().st_ino for p in lake.rglob("part-*.parquet")}
    assert [day for day in after if after[day] != before[day]] == ["event_date=2012-07-02"]
    frame = LakeReader(path=str(lake)).read("bikes")
    assert frame["target"].notna().sum() == 1
    assert frame.loc[frame["prediction_id"] == rows[5]["prediction_id"], "target"].item() == 42.0
    # Sent again later, the label's latest value wins in the lake too.
    store.write_labels(_labels(rows[5:6], value=43.0, when=dt.datetime(2026, 1, 2)))
    assert _export(store, lake)["partitions"] == 1
    frame = LakeReader(path=str(lake)).read("bikes")
    assert frame["target"].dropna().tolist() == [43.0]
    assert len(frame) == 12


def test_a_wider_type_rewrites_every_file_of_the_model_with_one_schema(tmp_path: Path) -> None:
    """Spark refuses a column that is int64 in one file and double in another."""
    store = Store(f"sqlite:///{tmp_path / 'p.db'}")
    store.create()
    store.write_predictions(_rows(2, 3))
    lake = tmp_path / "lake"
    _export(store, lake)
    widened = [
        {**r, "inputs": {**r["inputs"], "hr": 1.5}} for r in _rows(1, 2, first=DAY.replace(day=9))
    ]
    store.write_predictions(widened)
    result = _export(store, lake, chunk_rows=2)
    assert result["partitions"] == 3  # the new day, then both older days again
    schemas = {str(pq.read_schema(p).field("hr").type) for p in lake.rglob("part-*.parquet")}
    assert schemas == {"double"}
    assert json.loads((lake / MANIFEST).read_text())["schemas"]["bikes"]["hr"] == "double"
    assert _export(store, lake)["partitions"] == 0
    assert len(LakeReader(path=str(lake)).read("bikes")) == 8


def test_chunks_bound_memory_into_row_groups(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'p.db'}")
    store.create()
    store.write_predictions(_rows(1, 23))
    lake = tmp_path / "lake"
    _export(store, lake, chunk_rows=5)
    (part,) = lake.rglob("part-*.parquet")
    assert pq.ParquetFile(part).metadata.num_row_groups == 5  # 23 rows, 5 at a time
    assert pq.read_table(part)["hr"].to_pylist() == list(range(23))


def test_an_unreachable_store_is_named_without_its_password(tmp_path: Path) -> None:
    job = ExportJob(
        store_uri="postgresql+psycopg://bikes:s3cret@127.0.0.1:1/nowhere",
        lake=str(tmp_path / "lake"),
        **QUIET,
    )
    with (
        job,
        pytest.raises(
            InputError, match=r"^job.store_uri: store .*127\.0\.0\.1:1/nowhere"
        ) as caught,
    ):
        job.run()
    assert "s3cret" not in str(caught.value)
    missing = ExportJob(
        store_uri=f"sqlite:///{tmp_path / 'none.db'}", lake=str(tmp_path / "l"), **QUIET
    )
    with missing, pytest.raises(InputError, match="no such database file"):
        missing.run()
    assert not (tmp_path / "none.db").exists()


def test_a_failed_partition_leaves_the_lake_whole_and_the_next_run_completes(
    tmp_path: Path,
) -> None:
    """A real fault mid-export, once the fourth day's file is written: a folder where it must
    be renamed to (we run as root, so a read-only folder would not stop us)."""
    store = Store(f"sqlite:///{tmp_path / 'p.db'}")
    store.create()
    store.write_predictions(_rows(5, 4))
    lake = tmp_path / "lake"
    blocker = partition_folder(lake, "bikes", "2012-07-04") / "part-0000.parquet"
    blocker.mkdir(parents=True)
    with pytest.raises(IsADirectoryError):
        _export(store, lake)
    ids = _lake_ids(lake)  # what is visible is whole: three days, no half file
    assert len(ids) == len(set(ids)) == 12
    assert not list(lake.rglob("*.tmp"))
    blocker.rmdir()
    result = _export(store, lake)
    assert (result["partitions"], result["unchanged"]) == (2, 3)
    ids = _lake_ids(lake)
    assert len(ids) == len(set(ids)) == store.count() == 20


def test_kill_9_mid_export_then_the_next_run_completes_it(tmp_path: Path) -> None:
    """``bikes confs/export.yaml`` in a real process, SIGKILLed once it has written some
    partitions: every visible file is whole, and a second run adds exactly the rest."""
    store = Store(f"sqlite:///{tmp_path / 'p.db'}")
    store.create()
    store.write_predictions(_rows(300, 24))
    total = store.count()
    lake = tmp_path / "lake"
    command = [
        sys.executable,
        "-m",
        "bikes",
        str(REPO / "confs" / "export.yaml"),
        "-e",
        f"job.store_uri=sqlite:///{tmp_path / 'p.db'}",
        "-e",
        f"job.lake={lake}",
        "-e",
        "job.chunk_rows=7",
    ]
    env = {k: v for k, v in clean_environment().items() if k != "BIKES_STORE_URI"}
    process = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 120
    try:
        while True:
            assert process.poll() is None, "the export finished before it could be killed"
            assert time.monotonic() < deadline, "no partition written within 120 s"
            manifest = lake / MANIFEST
            if manifest.is_file() and len(_partitions(manifest)) >= 20:
                break
            time.sleep(0.02)
        os.kill(process.pid, signal.SIGKILL)
        assert process.wait(timeout=30) == -signal.SIGKILL
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)
        assert process.stderr is not None
        process.stderr.close()
    written = len(_partitions(lake / MANIFEST))
    assert 20 <= written < 300
    ids = _lake_ids(lake)  # readable as a whole: no torn file is visible
    assert len(ids) == len(set(ids))
    assert written * 24 <= len(ids) < total
    finished = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    ids = _lake_ids(lake)
    assert len(ids) == len(set(ids)) == total  # nothing twice, nothing lost
    assert not list(lake.rglob("*.tmp"))  # the killed run's temp file is cleared
    assert _export(store, lake)["partitions"] == 0


def test_temp_files_of_a_killed_run_are_cleared(tmp_path: Path) -> None:
    """What a run killed mid-write leaves (a partition's and the manifest's temp files) is
    removed by the next run, which holds the lake's lock; other hidden files are left alone."""
    store = Store(f"sqlite:///{tmp_path / 'p.db'}")
    store.create()
    store.write_predictions(_rows(1, 3))
    lake = tmp_path / "lake"
    folder = partition_folder(lake, "bikes", "2012-07-01")
    folder.mkdir(parents=True)
    left = [folder / ".part-0000.parquet.k1ll3d_x.tmp", lake / f".{MANIFEST}.k1ll3d_y.tmp"]
    for file in left:
        file.write_bytes(b"half a file")
    kept = folder / ".notes.tmp"
    kept.write_text("not the export's")
    umask = os.umask(0o022)
    try:
        assert _export(store, lake)["rows"] == 3
    finally:
        os.umask(umask)
    assert not any(file.exists() for file in left)
    for written in (lake / MANIFEST, folder / "part-0000.parquet"):  # readers of other users
        assert stat.S_IMODE(written.stat().st_mode) == 0o644
    assert kept.exists()
    assert sorted(_lake_ids(lake)) == sorted(store.read()["prediction_id"])


def _partitions(manifest: Path) -> list[str]:
    return list(json.loads(manifest.read_text()).get("partitions", {}).get("bikes", {}))


def test_values_of_mixed_kinds_and_nested_ones_are_kept_as_text(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'p.db'}")
    store.create()
    rows = _rows(1, 3, model="odd")
    values = [({"code": 7, "tags": {"a": 1}}), {"code": "A7"}, {"code": None, "tags": [1, 2]}]
    store.write_predictions([{**r, "inputs": v} for r, v in zip(rows, values, strict=True)])
    lake = tmp_path / "lake"
    _export(store, lake)
    frame = LakeReader(path=str(lake)).read("odd")
    assert frame["code"].tolist()[:2] == ["7", "A7"]
    assert pd.isna(frame["code"].iloc[2])
    assert frame["tags"].tolist()[0] == '{"a": 1}'
    assert frame["tags"].tolist()[2] == "[1, 2]"
    assert frame["prediction"].tolist() == ["stay", "leave", "stay"]
