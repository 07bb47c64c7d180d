"""Dataset readers and writers: parquet files in, parquet files out, errors that name the file."""

from __future__ import annotations

import contextlib
import glob
import os
import tempfile
import typing as T
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pydantic as pdt

from bikes.core.errors import ConfigError, InputError


class ParquetReader(pdt.BaseModel, strict=True, frozen=True, extra="forbid"):
    """Read one parquet file; ``limit`` keeps the first rows only (handy for quick runs)."""

    KIND: T.Literal["ParquetReader"] = pdt.Field(
        default="ParquetReader", description="The reader's kind."
    )
    path: str = pdt.Field(description="The parquet file.")
    limit: int | None = pdt.Field(default=None, gt=0, description="Read the first rows only.")

    def read(self) -> pd.DataFrame:
        file = Path(self.path)
        if not file.is_file():
            raise InputError(f"{file}: parquet file not found")
        try:
            # Column by column, freeing Arrow's buffers as pandas takes them: the peak stays
            # near one copy of the data instead of two (pd.read_parquet holds both).
            frame: pd.DataFrame = pq.read_table(file).to_pandas(
                self_destruct=True, split_blocks=True
            )
        except (pa.ArrowException, OSError, ValueError) as error:
            raise InputError(f"{file}: not a readable parquet file ({error})") from None
        if frame.empty:
            raise InputError(f"{file}: holds no rows")
        return frame.head(self.limit) if self.limit else frame

    @property
    def source(self) -> str:
        return self.path


class ParquetWriter(pdt.BaseModel, strict=True, frozen=True, extra="forbid"):
    """Write one parquet file atomically: a crash mid-write never leaves half a file behind."""

    KIND: T.Literal["ParquetWriter"] = pdt.Field(
        default="ParquetWriter", description="The writer's kind."
    )
    path: str = pdt.Field(description="The parquet file, replaced atomically.")

    def write(self, frame: pd.DataFrame) -> Path:
        file = Path(self.path)
        file.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(file) as temporary:
            frame.to_parquet(temporary, index=False)
        return file


@contextlib.contextmanager
def atomic_file(path: str | Path, mode: int | None = None) -> T.Iterator[Path]:
    """Yield a temp file beside ``path`` to write; when the block ends normally, sync it, give
    it ``mode`` and rename it over ``path``, then sync the folder: a reader (or a crash) sees
    the old file or the new one, never half of one, and the rename survives a power cut.

    If the block raises, ``path`` is left as it was and the temp file is removed. The temp
    file is hidden (``.<name>.<random>.tmp``: pyarrow, pandas and Spark skip names starting
    with ``.``); a killed process may leave one, which ``temporaries(path)`` finds. ``mode``
    defaults to what a plain ``open()`` gives (``0o666`` less the umask), not mkstemp's
    ``0600``, so other users and containers can read the outputs as usual. The folder must
    exist.
    """
    file = Path(path)
    descriptor, name = tempfile.mkstemp(dir=file.parent, prefix=f".{file.name}.", suffix=".tmp")
    os.close(descriptor)
    temporary = Path(name)
    try:
        yield temporary
        _synced(temporary)
        os.chmod(temporary, 0o666 & ~_umask() if mode is None else mode)
        os.replace(temporary, file)
        _synced(file.parent)
    finally:
        temporary.unlink(missing_ok=True)


def temporaries(path: str | Path) -> list[Path]:
    """The temp files ``atomic_file(path)`` left behind when its process was killed: only
    whoever owns ``path`` (holds its lock) may remove them."""
    file = Path(path)
    prefix = f".{file.name}."
    return sorted(
        found
        for found in file.parent.glob(f"{glob.escape(prefix)}*.tmp")
        if "." not in found.name[len(prefix) : -len(".tmp")]  # mkstemp's part has no dot
    )


def _synced(path: Path) -> None:
    """Flush a file's data, or a folder's entries, to disk before it counts as written."""
    flags = os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0)
    descriptor = os.open(path, flags)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_writable(path: str | Path, key: str) -> None:
    """Fail before any work (and any other output) when ``path`` cannot be written, naming the
    config ``key``: its nearest existing folder must let us create a file there (a probe file,
    removed at once; missing folders are not created yet), and it must not be a folder."""
    file = Path(path)
    if file.is_dir():
        raise ConfigError(f"{key}: {file} is a folder, not a file")
    folder = file.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise ConfigError(f"{key}: cannot write {file}: {folder} is a file, not a folder")
    try:
        descriptor, probe = tempfile.mkstemp(dir=folder, prefix=".bikes-write-check-")
    except OSError as error:
        raise ConfigError(
            f"{key}: cannot write {file}: no file can be created in {folder} "
            f"({error.strerror or error})"
        ) from None
    os.close(descriptor)
    os.remove(probe)


def write_text(path: str | Path, text: str) -> Path:
    """A text file (results JSON, HTML report), its folder created when missing."""
    file = Path(path)
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(text, encoding="utf-8")
    return file


def read_hourly_csv(path: str | Path, timestamp: str = "timestamp") -> pd.DataFrame:
    """The UCI hourly CSV with an event ``timestamp`` built from ``dteday`` and ``hr``."""
    file = Path(path)
    if not file.is_file():
        raise InputError(f"{file}: CSV file not found")
    try:
        frame = pd.read_csv(file)
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as error:
        raise InputError(f"{file}: not a readable CSV file ({error})") from None
    missing = [column for column in ("dteday", "hr") if column not in frame.columns]
    if missing:
        raise InputError(f"{file}: missing column(s) {', '.join(missing)}")
    days = pd.to_datetime(frame["dteday"], format="%Y-%m-%d", errors="coerce")
    bad_rows = days.index[days.isna()]
    if len(bad_rows):
        examples = ", ".join(f"row {row}: {frame['dteday'].iloc[row]!r}" for row in bad_rows[:5])
        raise InputError(f"{file}: dteday is not a YYYY-MM-DD date ({examples})")
    timestamps = days + pd.to_timedelta(frame["hr"], unit="h")
    frame.insert(0, timestamp, timestamps.astype("datetime64[ns]"))
    return frame
