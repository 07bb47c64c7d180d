"""The capture writer: batching, draining, and a real database outage with spool and replay."""

from __future__ import annotations

import contextlib
import datetime as dt
import glob
import json
import shutil
import subprocess
import sys
import tempfile
import time
import typing as T
from pathlib import Path

import pytest
from loguru import logger

from bikes.io.capture import CaptureFullError, CaptureUnavailableError, CaptureWriter
from bikes.io.store import Store
from tests.conftest import REPO, postgres_store
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
    writer = CaptureWriter(store, tmp_path / "spool.jsonl", max_pending=10, acknowledge="queued")
    writer.submit(_rows(8, 1))  # queued: acknowledged before the writer has even started
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


UNREACHABLE = "postgresql+psycopg://postgres@127.0.0.1:1/none?connect_timeout=1"


def test_a_durable_submit_returns_only_once_its_rows_are_committed(tmp_path: Path) -> None:
    """Durable mode does not wait for flush_interval (group commit), and returns only when
    another connection already sees the rows; queued mode returns before (the window)."""
    store = Store(f"sqlite:///{tmp_path / 'p.db'}")
    store.create()
    reader = Store(f"sqlite:///{tmp_path / 'p.db'}")  # a connection pool of its own
    durable = CaptureWriter(store, tmp_path / "spool.jsonl", flush_interval=30.0)
    durable.start()
    rows = _rows(50, 1)
    started = time.monotonic()
    for start in range(0, 50, 10):
        durable.submit(rows[start : start + 10])
        ids = [row["prediction_id"] for row in rows[start : start + 10]]
        assert reader.known_ids(ids) == set(ids)
    assert time.monotonic() - started < 30.0
    durable.stop()
    queued = CaptureWriter(
        store, tmp_path / "spool.jsonl", flush_interval=30.0, acknowledge="queued"
    )
    queued.start()
    later = _rows(10, 2)
    queued.submit(later)
    assert reader.known_ids([row["prediction_id"] for row in later]) == set()  # not yet
    assert queued.stop() == 0
    assert reader.count() == 60


def test_requests_never_checkpoint_sqlite_the_writer_thread_does(tmp_path: Path) -> None:
    """The commits of durable requests leave SQLite's write-ahead log alone (by default the
    commit that grows it past 1,000 pages copies it into the database file and syncs both,
    15-30 ms on that request); the writer thread checkpoints it, and past ``reset_frames``
    finishes the job so that the next write starts the log afresh."""
    store = Store(f"sqlite:///{tmp_path / 'p.db'}")
    store.create()
    writer = CaptureWriter(store, tmp_path / "spool.jsonl")
    writer.reset_frames = 200
    wal = tmp_path / "p.db-wal"
    day = 0
    while wal.stat().st_size < 12 * 1024 * 1024:  # 3,000 pages: no request checkpointed
        day += 1
        for start in range(0, 1440, 32):
            writer.submit(_rows(1440, day % 28 + 1)[start : start + 32])  # not started: leaders
        assert day < 200, "the log stopped growing: a request's commit checkpointed it"
    database = tmp_path / "p.db"
    before = database.stat().st_size
    assert before < 64 * 1024  # the tables, empty: the rows are all in the log still
    writer.start()
    deadline = time.monotonic() + 30
    while database.stat().st_size < before + 512 * 1024:  # copied into the database file
        assert time.monotonic() < deadline, "the writer thread did not checkpoint"
        time.sleep(0.2)
    later = _rows(32, 1)
    for row in later:
        row["prediction_id"] = f"later-{row['prediction_id']}"
    writer.submit(later)
    with store.engine.connect() as connection:
        _, logged, _ = connection.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)").one()
    assert logged < 100  # the log started again from its beginning
    assert writer.stop() == 0
    assert store.count() == len({row["prediction_id"] for row in later}) + min(day, 28) * 1440


def test_with_the_store_down_a_durable_submit_returns_once_its_rows_are_spooled(
    tmp_path: Path,
) -> None:
    spool = tmp_path / "spool.jsonl"
    writer = CaptureWriter(Store(UNREACHABLE), spool, retry_interval=60)
    writer.start()
    rows = _rows(30, 3)
    for start in range(0, 30, 10):
        writer.submit(rows[start : start + 10])
        spooled = [json.loads(line)["prediction_id"] for line in spool.read_text().splitlines()]
        assert spooled == [row["prediction_id"] for row in rows[: start + 10]]
    assert (writer.status, writer.spooled, writer.failures["store"]) == ("degraded", 30, 1)
    assert writer.stop() == 0  # kept in the spool: not lost


def test_rows_no_store_and_no_spool_can_take_are_refused_and_the_writer_lives_on(
    tmp_path: Path,
) -> None:
    """A value JSON cannot carry fails the store (SQLAlchemy's StatementError) and the spool (a
    TypeError, which used to kill the writer thread): its request is refused, the others go on."""
    store = Store(f"sqlite:///{tmp_path / 'p.db'}")
    store.create()
    writer = CaptureWriter(store, tmp_path / "spool.jsonl", retry_interval=0.1)
    writer.start()
    poison = _rows(3, 4)
    poison[1]["inputs"] = {"hr": object()}
    with pytest.raises(CaptureUnavailableError, match="neither in the store nor in the spool"):
        writer.submit(poison)
    assert writer.alive
    assert writer.failures == {"store": 1, "spool": 1, "replay": 0, "writer": 0}
    assert writer.last_error is not None
    assert writer.last_error.startswith("TypeError")
    good = _rows(5, 5)
    writer.submit(good)
    assert writer.stop() == 0
    assert sorted(store.read()["prediction_id"]) == sorted(r["prediction_id"] for r in good)
    assert not (tmp_path / "spool.jsonl").exists()


def test_a_spool_that_cannot_be_created_refuses_rows_until_it_can(tmp_path: Path) -> None:
    """Store down and the spool's folder a file (FileExistsError, which used to kill the writer
    thread): rows are refused, not acknowledged; once the path is fixed, they are kept again."""
    blocker = tmp_path / "blocked"
    blocker.write_text("a file where the spool's folder should be")
    spool = blocker / "spool.jsonl"
    writer = CaptureWriter(Store(UNREACHABLE), spool, retry_interval=0.2)
    writer.start()
    with pytest.raises(CaptureUnavailableError, match="neither in the store nor in the spool"):
        writer.submit(_rows(4, 6))
    assert (writer.status, writer.alive, writer.failures["store"]) == ("failing", True, 1)
    assert writer.failures["spool"] >= 1  # each retry that fails counts, however many ran
    assert writer.last_error is not None
    assert "FileExistsError" in writer.last_error
    with pytest.raises(CaptureUnavailableError, match="cannot keep rows"):
        writer.check()  # refused at once: the service answers 503 without predicting
    assert writer.pending == 0  # nothing acknowledged, nothing held
    blocker.unlink()  # the operator fixes the path
    _wait(lambda: writer.status == "degraded")  # a retry found the spool writable again
    rows = _rows(6, 6)
    writer.submit(rows)
    assert writer.stop() == 0
    spooled = [json.loads(line)["prediction_id"] for line in spool.read_text().splitlines()]
    assert spooled == [row["prediction_id"] for row in rows]


def test_queued_rows_nothing_can_keep_are_held_then_kept_or_counted_lost(tmp_path: Path) -> None:
    """Queued mode acknowledges before writing: rows neither the store nor the spool takes are
    held in memory and retried (new requests refused); stop() counts those it never kept,
    and rows no spool line can carry are counted lost at once."""
    blocker = tmp_path / "blocked"
    blocker.write_text("not a folder")
    spool = blocker / "spool.jsonl"
    held = CaptureWriter(
        Store(UNREACHABLE), spool, flush_interval=0.05, retry_interval=0.2, acknowledge="queued"
    )
    held.start()
    held.submit(_rows(6, 7))
    assert held.flush()
    assert (held.status, held.pending) == ("failing", 6)
    with pytest.raises(CaptureUnavailableError, match="cannot keep rows"):
        held.submit(_rows(2, 7))
    blocker.unlink()
    _wait(lambda: held.status == "degraded")  # the held rows reached the spool
    assert held.stop() == 0
    assert len(spool.read_text().splitlines()) == 6

    blocked = tmp_path / "blocked-too"
    blocked.write_text("not a folder either")
    lost = CaptureWriter(
        Store(UNREACHABLE),
        blocked / "spool.jsonl",
        flush_interval=0.05,
        retry_interval=60,
        acknowledge="queued",
    )
    lost.start()
    poison = _rows(3, 8)
    poison[0]["inputs"] = {"hr": object()}
    lost.submit(_rows(6, 8))
    lost.submit(poison)
    assert lost.flush()
    assert lost.stop() == 9  # 6 held and never kept, 3 no spool line can carry
    assert lost.lost == 9


def _spool_lines(tmp_path: Path, rows: list[dict[str, T.Any]]) -> list[bytes]:
    """The spool lines the writer itself writes for these rows (the store down)."""
    spool = tmp_path / "written.jsonl"
    writer = CaptureWriter(Store(UNREACHABLE), spool, retry_interval=60)
    writer.start()
    writer.submit(rows)
    writer.stop()
    return spool.read_bytes().splitlines(keepends=True)


def test_unreadable_spool_lines_are_quarantined_and_the_rest_replayed_once(
    store: Store, tmp_path: Path
) -> None:
    rows = _rows(30, 9)
    lines = _spool_lines(tmp_path, rows)
    assert len(lines) == 30
    bad_time = json.loads(lines[5])
    bad_time["event_time"] = "the fifth of never"
    no_id = json.loads(lines[6])
    del no_id["prediction_id"]
    bad = {  # what replaces a good line (its row is lost to the store), by 1-based line number
        3: b"{not json at all\n",
        6: lines[4][:40] + b"\n",  # a line cut short in the middle of the file
        8: b"[1, 2, 3]\n",  # JSON, not an object
        10: json.dumps(bad_time).encode() + b"\n",
        12: b"\xff\xfe\x00 not UTF-8\n",
        14: json.dumps(no_id).encode() + b"\n",
    }
    text: list[bytes] = []
    kept: list[str] = []
    for number, line in enumerate(lines[:29], start=1):
        if number in bad:
            text.append(bad[number])
        else:
            text.append(line)
            kept.append(rows[number - 1]["prediction_id"])
    text.append(lines[1])  # a line spooled twice: stored once
    text.append(lines[29][:25])  # the last append cut short by a crash, no newline
    spool = tmp_path / "spool.jsonl"
    spool.write_bytes(b"".join(text))
    store.write_predictions([rows[0]])  # a replay interrupted after its first write
    messages: list[str] = []
    sink = logger.add(messages.append, level="ERROR", format="{message}")
    try:
        writer = CaptureWriter(store, spool, retry_interval=0.1)
        assert writer.spooled == 31
        writer.start()
        _wait(lambda: not writer.degraded)
        more = _rows(5, 10)
        writer.submit(more)
        writer.stop()
    finally:
        logger.remove(sink)
    stored = store.read()
    assert len(stored) == len(set(stored["prediction_id"])) == len(kept) + 5 == 28
    assert set(stored["prediction_id"]) == set(kept) | {r["prediction_id"] for r in more}
    quarantine = writer.quarantine_path
    assert quarantine == tmp_path / "spool.quarantine.jsonl"
    entries = [json.loads(line) for line in quarantine.read_text().splitlines()]
    assert [entry["line"] for entry in entries] == [*sorted(bad), 31]
    assert writer.quarantined == 7
    assert entries[0]["text"] == "{not json at all"
    assert entries[0]["error"].startswith("JSONDecodeError")
    assert "event_time" in entries[3]["error"]
    assert "no prediction_id" in entries[5]["error"]
    for number in [*bad, 31]:
        assert any(f"line {number} unreadable" in message for message in messages), number
    assert not spool.exists()


def test_rows_the_store_refuses_are_quarantined_not_retried_forever(tmp_path: Path) -> None:
    """PostgreSQL refuses a value of the wrong type and a NUL character, whatever the retry:
    such lines leave the spool for the quarantine file, and the rows beside them are stored."""
    rows = _rows(12, 11)
    lines = _spool_lines(tmp_path, rows)
    wrong_type, nul = json.loads(lines[3]), json.loads(lines[8])
    wrong_type["latency_ms"] = "fast"
    nul["model_name"] = "bi\u0000kes"
    lines[3] = json.dumps(wrong_type).encode() + b"\n"
    lines[8] = json.dumps(nul).encode() + b"\n"
    spool = tmp_path / "spool.jsonl"
    spool.write_bytes(b"".join(lines))
    with postgres_store() as store:
        writer = CaptureWriter(store, spool, retry_interval=0.1)
        writer.start()
        _wait(lambda: not writer.degraded)
        writer.stop()
        stored = set(store.read()["prediction_id"])
    assert stored == {row["prediction_id"] for i, row in enumerate(rows) if i not in (3, 8)}
    entries = [json.loads(line) for line in writer.quarantine_path.read_text().splitlines()]
    assert [entry["line"] for entry in entries] == [4, 9]
    assert entries[0]["error"].startswith("DataError")
    assert writer.quarantined == 2
    assert not spool.exists()


def test_a_spool_append_the_file_size_limit_cuts_leaves_no_half_line(tmp_path: Path) -> None:
    """Under RLIMIT_FSIZE (in a process of its own), an append that does not fit fails with
    EFBIG: the rows are refused and the spool is cut back to its last whole line."""
    spool = tmp_path / "spool.jsonl"
    script = f"""
import datetime as dt, resource
from bikes.io.capture import CaptureUnavailableError, CaptureWriter
from bikes.io.store import Store
from tests.io.test_capture import UNREACHABLE, _rows
resource.setrlimit(resource.RLIMIT_FSIZE, (8192, 8192))
writer = CaptureWriter(Store(UNREACHABLE), {str(spool)!r}, retry_interval=60)
writer.start()
kept = refused = 0
for day in range(1, 21):
    try:
        writer.submit(_rows(3, day))
        kept += 3
    except CaptureUnavailableError:
        refused += 3
        break
error = writer.last_error
failures = writer.failures["spool"]
writer.stop()
print(kept, refused, failures, error)
"""
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    kept, refused, failures, error = done.stdout.split(maxsplit=3)
    assert (int(refused), int(failures)) == (3, 1)
    assert error.startswith("OSError: [Errno 27] File too large"), error
    assert spool.stat().st_size <= 8192
    lines = spool.read_bytes().split(b"\n")
    assert lines[-1] == b""  # ends with a whole line
    assert len(lines) - 1 == int(kept) > 0
    assert all(json.loads(line)["prediction_id"] for line in lines[:-1])
