from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from bikes.core.errors import InputError
from bikes.io.datasets import (
    ParquetReader,
    ParquetWriter,
    atomic_file,
    read_hourly_csv,
    temporaries,
)
from tests.conftest import HOUR_CSV, REPO


def test_hourly_csv_gets_event_timestamps() -> None:
    frame = read_hourly_csv(HOUR_CSV)
    assert len(frame) == 17379
    assert frame["timestamp"].iloc[0] == pd.Timestamp("2011-01-01 00:00")
    assert frame["timestamp"].iloc[-1] == pd.Timestamp("2012-12-31 23:00")
    assert (frame["timestamp"].dt.hour == frame["hr"]).all()
    assert frame["timestamp"].is_monotonic_increasing


def test_bad_date_names_the_rows(tmp_path: Path) -> None:
    csv = tmp_path / "hour.csv"
    csv.write_text("dteday,hr\n2011-01-01,0\n2011-13-45,1\n")
    with pytest.raises(
        InputError, match=r"dteday is not a YYYY-MM-DD date \(row 1: '2011-13-45'\)"
    ):
        read_hourly_csv(csv)


def test_csv_without_required_columns(tmp_path: Path) -> None:
    csv = tmp_path / "hour.csv"
    csv.write_text("a,b\n1,2\n")
    with pytest.raises(InputError, match=r"missing column\(s\) dteday, hr"):
        read_hourly_csv(csv)
    with pytest.raises(InputError, match="CSV file not found"):
        read_hourly_csv(tmp_path / "none.csv")


def test_round_trip_and_limit(tmp_path: Path) -> None:
    frame = pd.DataFrame({"a": range(10), "b": [0.5] * 10})
    path = ParquetWriter(path=str(tmp_path / "sub" / "x.parquet")).write(frame)
    assert path.is_file()
    assert list(path.parent.iterdir()) == [path]  # no temporary file left behind
    umask = os.umask(0o022)
    try:
        readable = ParquetWriter(path=str(tmp_path / "y.parquet")).write(frame)
    finally:
        os.umask(umask)
    assert stat.S_IMODE(readable.stat().st_mode) == 0o644  # as open() gives, not mkstemp's 0600
    pd.testing.assert_frame_equal(ParquetReader(path=str(path)).read(), frame)
    assert len(ParquetReader(path=str(path), limit=3).read()) == 3


def test_missing_corrupt_and_empty_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"none.parquet: parquet file not found"):
        ParquetReader(path=str(tmp_path / "none.parquet")).read()
    corrupt = tmp_path / "corrupt.parquet"
    corrupt.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(InputError, match=r"corrupt.parquet: not a readable parquet file"):
        ParquetReader(path=str(corrupt)).read()
    empty = tmp_path / "empty.parquet"
    pd.DataFrame({"a": pd.Series([], dtype=int)}).to_parquet(empty)
    with pytest.raises(InputError, match=r"empty.parquet: holds no rows"):
        ParquetReader(path=str(empty)).read()


def test_failed_write_keeps_the_previous_file(tmp_path: Path) -> None:
    target = tmp_path / "x.parquet"
    writer = ParquetWriter(path=str(target))
    writer.write(pd.DataFrame({"a": [1, 2]}))
    with pytest.raises((pa.ArrowException, TypeError, ValueError)):
        writer.write(pd.DataFrame({"a": [object()]}))
    pd.testing.assert_frame_equal(pd.read_parquet(target), pd.DataFrame({"a": [1, 2]}))
    assert [p.name for p in tmp_path.iterdir()] == ["x.parquet"]


def test_atomic_file_replaces_the_file_only_when_the_block_ends(tmp_path: Path) -> None:
    target = tmp_path / "x.json"
    target.write_text("old")
    with atomic_file(target) as temporary:
        assert temporary.parent == tmp_path
        assert temporary.name.startswith(".x.json.")
        temporary.write_text("new")
        assert target.read_text() == "old"  # nothing visible before the block ends
        assert temporaries(target) == [temporary]
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]
    umask = os.umask(0o027)
    try:
        with atomic_file(target) as temporary:
            temporary.write_text("newer")
    finally:
        os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o640  # what open() gives, not 0600
    with atomic_file(target, mode=0o604) as temporary:
        temporary.write_text("newest")
    assert stat.S_IMODE(target.stat().st_mode) == 0o604


def test_atomic_file_failing_mid_write_keeps_the_old_file_and_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "x.json"
    target.write_text("old")

    def half_a_write() -> None:
        with atomic_file(target) as temporary:
            temporary.write_text("half of the ne")
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        half_a_write()
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]
    # A real fault at the rename itself (a folder where the file goes): nothing left either.
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    with pytest.raises(IsADirectoryError), atomic_file(blocked) as temporary:
        temporary.write_text("new")
    assert blocked.is_dir()
    assert not list(blocked.iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocked", "x.json"]


def test_atomic_file_syncs_the_file_before_the_rename_and_the_folder_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real fsync, watched: what each call flushed, in order."""
    synced: list[str] = []
    fsync = os.fsync

    def watched(descriptor: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{descriptor}"))
        fsync(descriptor)

    monkeypatch.setattr(os, "fsync", watched)
    target = tmp_path / "x.json"
    with atomic_file(target) as temporary:
        temporary.write_text("new")
    assert synced == [str(temporary), str(tmp_path)]


def test_a_killed_writer_leaves_the_old_file_and_a_temp_that_temporaries_finds(
    tmp_path: Path,
) -> None:
    target = tmp_path / "x.parquet"
    target.write_text("old")
    script = (
        "import os, signal, sys\n"
        "from bikes.io.datasets import atomic_file\n"
        "with atomic_file(sys.argv[1]) as temporary:\n"
        "    temporary.write_text('half')\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    killed = subprocess.run(
        [sys.executable, "-c", script, str(target)], cwd=REPO, timeout=120, check=False
    )
    assert killed.returncode == -signal.SIGKILL
    assert target.read_text() == "old"
    (left,) = temporaries(target)
    assert left.read_text() == "half"
    assert left.name.startswith(".x.parquet.")
    assert temporaries(tmp_path / "x") == []  # another file's temps are not its own
