"""The parquet lake: captured predictions with their labels, one file per model and event date.

Layout (hive style, so ``pyarrow.dataset``, ``pd.read_parquet(folder)`` and
``spark.read.parquet(folder)`` all find the partitions)::

    <lake>/_bikes_export.json                                   the export's manifest
    <lake>/model_name=bikes/event_date=2012-07-01/part-0000.parquet

The export job (``bikes.jobs.export``) writes it; ``LakeReader`` reads it, into pandas for the
pandas engine or into a Spark DataFrame for the Spark engine. Monitoring at scale reads the
lake, never the OLTP capture store.
"""

from __future__ import annotations

import datetime as dt
import glob
import itertools
import json
import os
import typing as T
import urllib.parse
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pydantic as pdt

from bikes.core.errors import ConfigError, InputError, first_line
from bikes.io.datasets import atomic_file
from bikes.io.monitoring import TimeWindows, Window

if T.TYPE_CHECKING:
    from pyspark.sql import DataFrame as SparkFrame
    from pyspark.sql import SparkSession

MANIFEST = "_bikes_export.json"
PART_FILE = "part-0000.parquet"
MODEL_KEY = "model_name"
DATE_KEY = "event_date"
_GLOB_CHARACTERS = frozenset("*?[")


def partition_folder(lake: str | Path, model_name: str, day: str) -> Path:
    """``<lake>/model_name=<model>/event_date=<YYYY-MM-DD>``; the model's name is %-escaped as
    pyarrow and Spark unescape it (a ``/`` or ``=`` in a name stays one path segment)."""
    return Path(lake) / f"{MODEL_KEY}={_escaped(model_name)}" / f"{DATE_KEY}={day}"


def _escaped(value: str) -> str:
    return urllib.parse.quote(value, safe=" -_.")


def write_json_atomically(path: Path, document: dict[str, T.Any]) -> None:
    """Replace ``path`` by ``atomic_file``: a reader (or a crash) sees the old document or the
    new one, never half of one."""
    with atomic_file(path) as temporary, open(temporary, "w", encoding="utf-8") as file:
        json.dump(document, file, indent=1, default=str)


def read_manifest(lake: str | Path) -> dict[str, T.Any] | None:
    """The export's manifest of a lake folder, or None where there is none (a lake written by
    another tool, a glob, a table)."""
    path = Path(lake) / MANIFEST
    if not path.is_file():
        return None
    try:
        document: dict[str, T.Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise InputError(f"{path}: not a readable export manifest ({first_line(error)})") from None
    return document


def arrow_schema(columns: T.Mapping[str, str]) -> pa.Schema:
    """A manifest's ``{column: arrow type name}`` as an arrow schema."""
    return pa.schema([(name, pa.type_for_alias(kind)) for name, kind in columns.items()])


def is_path(location: str) -> bool:
    """A folder, a file, a glob or a URL (``s3a://``): a path. Anything else (``db.table``, a
    bare name that does not exist on disk) is a table name, for Spark's catalog."""
    return (
        "/" in location
        or "://" in location
        or bool(_GLOB_CHARACTERS & set(location))
        or os.path.exists(location)
    )


def _glob_base(pattern: str) -> str:
    """The folder above a glob's first wildcard: where hive partition names start."""
    parts = Path(pattern).parts
    fixed = list(itertools.takewhile(lambda part: not (_GLOB_CHARACTERS & set(part)), parts))
    return str(Path(*fixed)) if fixed else "."


class LakeReader(TimeWindows):
    """Captured predictions from the parquet lake: one model's rows, in time windows.

    The same columns as the store's windows (``event_time``, ``prediction_id``,
    ``model_version``, ``latency_ms``, the features, ``prediction``, the scores, ``target``,
    ``label_time``), so monitoring reads a lake as it reads the store. Partitions outside the
    model and the time bounds are never opened.
    """

    KIND: T.Literal["LakeReader"] = pdt.Field(
        default="LakeReader", description="The reader's kind."
    )
    path: str = pdt.Field(
        default="outputs/lake",
        description="The lake: a folder (bikes confs/export.yaml writes one), a glob of "
        "parquet files or partition folders, or (Spark engine only) a table name.",
    )
    model_name: str | None = pdt.Field(
        default=None,
        description="Only this model's rows. Default: the monitoring job's registered_model "
        "(every model when read on its own).",
    )
    columns: list[str] | None = pdt.Field(
        default=None,
        description="Read only these columns (event_time is always read). Default: all.",
    )

    @property
    def source(self) -> str:
        return self.path

    # -- pandas -------------------------------------------------------------------------------
    def read(
        self,
        model_name: str | None = None,
        start: dt.datetime | None = None,
        end: dt.datetime | None = None,
    ) -> pd.DataFrame:
        """The rows of the reader's ``model_name`` (else ``model_name``: the job's model) in
        ``[start, end)`` (else the reader's bounds), oldest first, as pandas: only the
        partitions and columns needed."""
        model = self.model_name or model_name
        start = self.start if start is None else start
        end = self.end if end is None else end
        dataset = self._dataset(model)
        condition = _arrow_filter(model, start, end)
        columns = self._columns(dataset.schema.names)
        try:
            table = dataset.to_table(columns=columns, filter=condition)
        except (pa.ArrowException, OSError) as error:
            raise InputError(f"{self.path}: lake unreadable ({first_line(error)})") from None
        frame: pd.DataFrame = table.to_pandas(self_destruct=True, split_blocks=True)
        if MODEL_KEY in frame.columns:  # a partition key comes back as a pandas category
            frame[MODEL_KEY] = frame[MODEL_KEY].astype(str)
        if "event_time" in frame.columns:
            frame = frame.sort_values("event_time", kind="stable").reset_index(drop=True)
        return frame

    def windows(self, model_name: str) -> T.Iterator[Window]:
        """Each window read when it is needed (a backfill holds one window at a time); a
        window without rows is returned empty (monitoring calls it ``no_data``)."""
        for start, end in self.bounds():
            frame = self.read(model_name, start, end)
            if start is None and end is None and not frame.empty:
                start = frame["event_time"].min().to_pydatetime()
                end = frame["event_time"].max().to_pydatetime()
            yield Window(start, end, frame)

    def _columns(self, available: list[str]) -> list[str] | None:
        if self.columns is None:
            return [name for name in available if name != DATE_KEY]
        wanted = list(dict.fromkeys(["event_time", *self.columns]))
        missing = [name for name in wanted if name not in available]
        if missing:
            raise InputError(
                f"job.current.columns: {', '.join(missing)} not in the lake {self.path} "
                f"(it has {', '.join(available)})"
            )
        return wanted

    def _dataset(self, model_name: str | None) -> ds.Dataset:
        """The lake as a pyarrow dataset with hive partitions; with the export's manifest, the
        model's schema (every file of a model has it; other models' files may differ)."""
        if not is_path(self.path):
            raise ConfigError(
                f"job.current.path: {self.path!r} is a table name: only the Spark engine reads "
                "tables (job.engine: spark); give the pandas engine a lake folder or a glob"
            )
        if _GLOB_CHARACTERS & set(self.path):
            files = sorted(glob.glob(self.path))
            if not files:
                raise InputError(f"{self.path}: no file matches this glob")
            source: T.Any = _expanded_files(files)
            base = _glob_base(self.path)
        else:
            if not Path(self.path).exists():
                raise InputError(
                    f"{self.path}: no such lake (write one with bikes confs/export.yaml)"
                )
            source, base = self.path, self.path
        schema = self._schema(base, model_name)
        partitioning = ds.partitioning(
            pa.schema([(MODEL_KEY, pa.string()), (DATE_KEY, pa.string())]), flavor="hive"
        )
        try:
            return ds.dataset(
                source,
                format="parquet",
                partitioning=partitioning,
                partition_base_dir=base if not isinstance(source, str) else None,
                schema=schema,
                exclude_invalid_files=False,
            )
        except (pa.ArrowException, OSError) as error:
            raise InputError(f"{self.path}: lake unreadable ({first_line(error)})") from None

    @staticmethod
    def _schema(base: str, model_name: str | None) -> pa.Schema | None:
        manifest = read_manifest(base)
        if manifest is None or model_name is None:
            return None
        columns = manifest.get("schemas", {}).get(model_name)
        if columns is None:
            return None
        return (
            arrow_schema(columns)
            .append(pa.field(MODEL_KEY, pa.string()))
            .append(pa.field(DATE_KEY, pa.string()))
        )

    # -- Spark --------------------------------------------------------------------------------
    def read_spark(
        self,
        spark: SparkSession,
        model_name: str | None = None,
        start: dt.datetime | None = None,
        end: dt.datetime | None = None,
    ) -> SparkFrame:
        """The same rows as a Spark DataFrame, never collected: a table name through Spark's
        catalog, a folder or glob through its parquet reader (hive partitions discovered,
        schemas merged, so a model's columns added later read as null in older files)."""
        from pyspark.errors import AnalysisException
        from pyspark.sql import functions as F

        model = self.model_name or model_name
        start = self.start if start is None else start
        end = self.end if end is None else end
        try:
            if not is_path(self.path):
                frame = spark.table(self.path)
            else:
                reader = spark.read.option("mergeSchema", "true")
                location = self.path
                if _GLOB_CHARACTERS & set(self.path):
                    reader = reader.option("basePath", _glob_base(self.path))
                elif (
                    model is not None
                    and (Path(self.path) / f"{MODEL_KEY}={_escaped(model)}").is_dir()
                ):
                    # The model's own folder: other models' columns and types never merge in.
                    location = str(Path(self.path) / f"{MODEL_KEY}={_escaped(model)}")
                    reader = reader.option("basePath", self.path)
                frame = reader.parquet(location)
        except AnalysisException as error:
            raise InputError(f"{self.path}: lake unreadable ({first_line(error)})") from None
        if model is not None and MODEL_KEY in frame.columns:
            frame = frame.where(F.col(MODEL_KEY) == model)
        if DATE_KEY in frame.columns:  # partition pruning: whole days outside the bounds
            day = F.col(DATE_KEY).cast("date")
            if start is not None:
                frame = frame.where(day >= F.lit(start.date()))
            if end is not None:
                frame = frame.where(day <= F.lit(end.date()))
        if start is not None:
            frame = frame.where(F.col("event_time") >= F.lit(start))
        if end is not None:
            frame = frame.where(F.col("event_time") < F.lit(end))
        if self.columns is not None:
            frame = frame.select(*dict.fromkeys(["event_time", *self.columns]))
        elif DATE_KEY in frame.columns:
            frame = frame.drop(DATE_KEY)
        return frame


def _expanded_files(paths: list[str]) -> list[str]:
    """A glob's matches as parquet files: a matched partition folder stands for its files."""
    files: list[str] = []
    for path in paths:
        if os.path.isdir(path):
            files.extend(
                str(file)
                for file in sorted(Path(path).rglob("*.parquet"))
                if not any(part.startswith((".", "_")) for part in file.relative_to(path).parts)
            )
        elif not os.path.basename(path).startswith((".", "_")):
            files.append(path)
    return files


def _arrow_filter(
    model_name: str | None, start: dt.datetime | None, end: dt.datetime | None
) -> ds.Expression | None:
    """Partition keys first (whole folders skipped), then the exact event-time bounds."""
    conditions: list[ds.Expression] = []
    if model_name is not None:
        conditions.append(ds.field(MODEL_KEY) == model_name)
    if start is not None:
        conditions.append(ds.field(DATE_KEY) >= start.date().isoformat())
        conditions.append(ds.field("event_time") >= pa.scalar(start, pa.timestamp("us")))
    if end is not None:
        conditions.append(ds.field(DATE_KEY) <= end.date().isoformat())
        conditions.append(ds.field("event_time") < pa.scalar(end, pa.timestamp("us")))
    if not conditions:
        return None
    condition = conditions[0]
    for more in conditions[1:]:
        condition = condition & more
    return condition
