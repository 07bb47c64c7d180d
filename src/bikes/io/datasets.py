"""Dataset readers and writers: parquet files in, parquet files out, errors that name the file."""

from __future__ import annotations

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
        descriptor, temporary = tempfile.mkstemp(
            dir=file.parent, prefix=f".{file.name}.", suffix=".tmp"
        )
        os.close(descriptor)
        try:
            frame.to_parquet(temporary, index=False)
            # mkstemp creates 0600; the finished file gets what a plain open() would give it,
            # so other users and containers can read the outputs as usual.
            os.chmod(temporary, 0o666 & ~_umask())
            os.replace(temporary, file)
        finally:
            if os.path.exists(temporary):
                os.remove(temporary)
        return file


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
