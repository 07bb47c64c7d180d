"""The capture writer: batching, draining, and a real database outage with spool and replay."""

from __future__ import annotations

import contextlib
import datetime as dt
import glob
import json
import shutil
import subprocess
import tempfile
import time
import typing as T
from pathlib import Path

import pytest

from bikes.io.capture import CaptureFullError, CaptureWriter
from bikes.io.store import Store
from tests.io.test_store import BIKE_INPUTS, _rejected, _row
from tests.serving.test_app import free_port


def _rows(count: int, day: int) -> list[dict[str, T.Any]]:
    return [_row(dt.datetime(2012, 9, day) + dt.timedelta(minutes=i)) for i in range(count)]


def test_stop_drains_everything_queued(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'p.db'}")
    store.create()
    written: list[int] = []
    writer = CaptureWriter(
        store,
        tmp_path / "spool.jsonl",
        batch_size=64,
        flush_interval=5.0,
        on_written=written.append,
    )
    writer.start()
    rows = _rows(1000, 1)
    for start in range(0, 1000, 100):
        writer.submit(rows[start : start + 100])
    writer.stop()
    assert store.count() == 1000
    assert sum(written) == writer.written == 1000
    assert writer.pending == 0
    assert not (tmp_path / "spool.jsonl").exists()


def test_a_full_queue_refuses_the_whole_batch(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'p.db'}")
    store.create()
    writer = CaptureWriter(store, tmp_path / "spool.jsonl", max_pending=10)
    writer.submit(_rows(8, 1))
    with pytest.raises(CaptureFullError, match="capture queue full"):
        writer.submit(_rows(3, 2))
    assert writer.pending == 8  # nothing of the refused batch went in
    writer.start()
    writer.stop()
    assert store.count() == 8


@contextlib.contextmanager
def throwaway_postgres() -> T.Iterator[tuple[str, T.Callable[[], None], T.Callable[[], None]]]:
    """A PostgreSQL cluster of the test's own (initdb + pg_ctl), which the test can stop."""
    binaries = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not binaries or shutil.which("runuser") is None:
        pytest.fail("PostgreSQL server binaries (initdb, pg_ctl) and runuser are needed")
    bin_dir = Path(binaries[-1]).parent
    root = Path(tempfile.mkdtemp(prefix="bikes-pg-", dir="/tmp"))
    shutil.chown(root, "postgres", "postgres")
    port = free_port()

    def as_postgres(*command: str) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", *command],
            check=True,
            capture_output=True,
            timeout=60,
        )

    as_postgres(str(bin_dir / "initdb"), "-D", str(root / "data"), "-A", "trust", "-U", "postgres")
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"

    def start() -> None:
        as_postgres(
            str(bin_dir / "pg_ctl"),
            "-D",
            str(root / "data"),
            "-o",
            options,
            "-l",
            str(root / "log"),
            "-w",
            "start",
        )

    def stop() -> None:
        as_postgres(str(bin_dir / "pg_ctl"), "-D", str(root / "data"), "-m", "fast", "-w", "stop")

    start()
    try:
        yield (
            f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres?connect_timeout=2",
            start,
            stop,
        )
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            stop()
        shutil.rmtree(root, ignore_errors=True)


def _wait(condition: T.Callable[[], bool], seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_an_outage_spools_then_replays_without_loss_or_duplicates(tmp_path: Path) -> None:
    with throwaway_postgres() as (uri, start, stop):
        store = Store(uri)
        store.create()
        spool = tmp_path / "spool.jsonl"
        writer = CaptureWriter(store, spool, batch_size=50, flush_interval=0.05, retry_interval=0.2)
        writer.start()
        before, during, after = _rows(120, 1), _rows(150, 2), _rows(80, 3)
        writer.submit(before)
        assert writer.flush()
        assert store.count() == 120

        stop()  # the database goes away mid-run
        writer.submit(during)
        rejected = [_rejected(dt.datetime(2012, 9, 2), hr=99) for _ in range(7)]
        writer.submit_rejected(rejected)  # rejected rows take the same road
        assert writer.flush()
        assert writer.degraded
        assert writer.pending == 157
        assert spool.is_file()
        writer.submit(after[:40])  # rows keep their order behind the spooled ones
        assert writer.flush()
        assert writer.pending == 197

        start()
        _wait(lambda: not writer.degraded)
        writer.submit(after[40:])
        writer.stop()
        stored = store.read()
        recorded = store.read_rejected()
    sent = [row["prediction_id"] for row in before + during + after]
    assert len(stored) == len(set(stored["prediction_id"])) == 350
    assert set(stored["prediction_id"]) == set(sent)
    assert list(stored["hr"]) == [0] * 350  # inputs survived the spool's JSON
    assert list(recorded["hr"]) == [99] * 7
    assert not spool.exists()
    assert (writer.written, writer.written_rejected) == (350, 7)


def test_rows_left_in_the_spool_are_replayed_at_the_next_start(tmp_path: Path) -> None:
    spool = tmp_path / "spool.jsonl"
    unreachable = Store("postgresql+psycopg://postgres@127.0.0.1:1/none?connect_timeout=1")
    writer = CaptureWriter(unreachable, spool, flush_interval=0.05, retry_interval=60)
    writer.start()
    rows = _rows(30, 4)
    writer.submit(rows)
    writer.stop()
    assert writer.pending == 30  # kept on disk, not lost
    store = Store(f"sqlite:///{tmp_path / 'p.db'}")
    store.create()
    again = CaptureWriter(store, spool, flush_interval=0.05, retry_interval=0.1)
    assert again.degraded
    again.start()
    _wait(lambda: not again.degraded)
    again.stop()
    assert sorted(store.read()["prediction_id"]) == sorted(r["prediction_id"] for r in rows)


def test_a_spool_of_an_older_bikes_is_replayed_into_the_new_layout(tmp_path: Path) -> None:
    """Lines spooled before the upgrade (one key per feature, no inputs) are not stuck."""
    spool = tmp_path / "spool.jsonl"
    old = {
        "prediction_id": "a" * 32,
        "event_time": "2012-09-05T10:00:00",
        "received_time": "2026-01-01T00:00:00",
        "model_name": "bikes",
        "model_version": "3",
        "latency_ms": 4.0,
        "prediction": 120.5,
        **BIKE_INPUTS,
    }
    spool.write_text(json.dumps(old) + "\n")
    store = Store(f"sqlite:///{tmp_path / 'p.db'}")
    store.create()
    writer = CaptureWriter(store, spool, flush_interval=0.05, retry_interval=0.1)
    writer.start()
    _wait(lambda: not writer.degraded)
    writer.stop()
    stored = store.read()
    assert list(stored["prediction_id"]) == ["a" * 32]
    assert stored.loc[0, "prediction"] == 120.5
    assert {k: stored.loc[0, k] for k in BIKE_INPUTS} == BIKE_INPUTS
    assert stored.loc[0, "event_time"] == dt.datetime(2012, 9, 5, 10)
