"""Export the capture store to the parquet lake: incremental, idempotent, crash-safe.

Why a per-partition fingerprint and not a watermark: the store has no monotonic row id
(``prediction_id`` is a UUID) and ``received_time`` is not monotonic either (rows a service
kept in its spool during an outage are replayed later with their original times), so "rows
after the last exported one" would miss rows. Instead each run asks the store for one
aggregate per (model, event date): rows, labelled rows, latest ``received_time``, latest
``label_time`` (labels are upserted with the service's clock, so a new or re-sent label moves
it). A partition whose figures differ from those of the file the lake holds is rewritten
whole; the others are not read at all. The figures of each written file are kept in
``<lake>/_bikes_export.json`` (inside the lake, so the lake describes itself and the store
stays read-only for the export), replaced atomically after every partition.

A partition file is written to a hidden temp file in its folder and renamed over the old
one: a reader (pyarrow, pandas, Spark: all skip names starting with ``.``) sees the old
partition or the new one, never half of one. A crash leaves at most the partition it was
writing out of date; the next run finds its figures wrong and writes it again.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import itertools
import json
import typing as T
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pydantic as pdt
import sqlalchemy as sa
from loguru import logger
from tqdm import tqdm

from bikes.core.contract import CAPTURE_COLUMNS
from bikes.core.errors import ConfigError, InputError, first_line
from bikes.io.datasets import atomic_file, check_writable, temporaries
from bikes.io.lake import (
    MANIFEST,
    MODEL_KEY,
    PART_FILE,
    arrow_schema,
    partition_folder,
    read_manifest,
    write_json_atomically,
)
from bikes.io.store import (
    DEFAULT_STORE_URI,
    Store,
    StoreSchema,
    StoreUri,
    open_store,
    parsed_json,
)
from bikes.jobs.base import Job, Locals

FORMAT = 1
LOCK = "_bikes_export.lock"
# The columns around the inputs, in the store reader's order; model_name is the partition key.
LEADING = tuple(name for name in CAPTURE_COLUMNS if name != MODEL_KEY)

Key = tuple[str, str]  # (model_name, event date YYYY-MM-DD)


class SchemaChangedError(Exception):
    """A model's columns grew (a new column, a wider type): its files must be rewritten."""


class ExportJob(Job):
    """Move captured predictions, with their labels, into a parquet lake by model and date.

    Re-running exports nothing twice; a late label rewrites its partition; rows are read in
    chunks (``chunk_rows``), so memory does not grow with the store.
    """

    KIND: T.Literal["ExportJob"] = "ExportJob"

    store_uri: StoreUri = DEFAULT_STORE_URI
    schema_name: StoreSchema = None
    lake: str = pdt.Field(
        default="outputs/lake",
        description="The lake folder: <lake>/model_name=<m>/event_date=<YYYY-MM-DD>/part-0000."
        "parquet, and the export's manifest _bikes_export.json.",
    )
    model_name: str | None = pdt.Field(
        default=None, description="Export this model's rows only. Default: every model."
    )
    chunk_rows: int = pdt.Field(
        default=50_000,
        gt=0,
        description="Rows fetched and written at a time (one parquet row group): the memory "
        "bound, whatever a day holds.",
    )

    uses_mlflow: T.ClassVar[bool] = False

    def run(self) -> Locals:
        lake = Path(self.lake)
        check_writable(lake / MANIFEST, "job.lake")
        lake.mkdir(parents=True, exist_ok=True)
        store = open_store(self.store_uri, self.schema_name)
        try:
            with _locked(lake):
                return self._export(store, lake)
        except sa.exc.SQLAlchemyError as error:
            raise InputError(
                f"job.store_uri: store {store.safe_uri}: unreadable ({first_line(error)})"
            ) from None
        finally:
            store.dispose()

    def _export(self, store: Store, lake: Path) -> Locals:
        try:
            store.check_captured()
        except InputError as error:
            raise InputError(f"job.store_uri: {error}") from None
        manifest = _Manifest.load(lake)
        wanted = _fingerprints(store, self.model_name)
        stale = sorted(
            key
            for key, figures in wanted.items()
            if manifest.figures(key) != figures
            or not (partition_folder(lake, *key) / PART_FILE).is_file()
        )
        logger.info(
            "Store {}: {} partition(s), {} to write into {}",
            store.safe_uri,
            len(wanted),
            len(stale),
            lake,
        )
        rows = written = 0
        progress = tqdm(
            stale, desc="exporting partitions", unit="partition", disable=len(stale) < 2
        )
        pending = list(stale)
        while pending:
            key = pending.pop(0)
            try:
                count = self._write(store, lake, key, manifest)
            except SchemaChangedError:
                # Every file of a model keeps one schema (Spark refuses mixed types): the
                # model's other partitions are written again with the wider one.
                again = [k for k in manifest.keys(key[0]) if k not in pending and k != key]
                logger.info("{}: columns changed: {} partition(s) rewritten", key[0], len(again))
                manifest.forget(key[0])
                pending = [key, *sorted(again), *pending]
                progress.total = (progress.total or 0) + len(again)
                continue
            rows += count
            written += 1
            progress.update()
            progress.set_postfix_str(f"{key[0]} {key[1]} {count} rows")
        progress.close()
        logger.success(
            "Exported {} rows in {} partition(s) to {} ({} unchanged)",
            rows,
            written,
            lake,
            len(wanted) - len(stale),
        )
        return {
            "lake": str(lake),
            "partitions": written,
            "rows": rows,
            "unchanged": len(wanted) - len(stale),
        }

    def _write(self, store: Store, lake: Path, key: Key, manifest: _Manifest) -> int:
        """Write one partition whole, from a stream of the store's rows, then record it."""
        model, day = key
        target = partition_folder(lake, model, day) / PART_FILE
        target.parent.mkdir(parents=True, exist_ok=True)
        for leftover in temporaries(target):  # a killed run's (we hold the lock)
            leftover.unlink()
        schema = manifest.schema(model)
        figures = _Figures()
        with contextlib.closing(_chunks(store, model, day, self.chunk_rows)) as chunks:
            first = next(chunks, None)
            if first is None:  # the rows went away meanwhile: nothing to write
                return 0
            with atomic_file(target, mode=0o644) as temporary:
                writer: pq.ParquetWriter | None = None
                try:
                    for chunk in itertools.chain([first], chunks):
                        table = _table(chunk, schema)  # raises SchemaChangedError, schema updated
                        if writer is None:
                            writer = pq.ParquetWriter(temporary, table.schema)
                        writer.write_table(table)
                        figures.add(table)
                finally:
                    if writer is not None:
                        writer.close()
        manifest.record(key, figures.as_dict(), schema)
        return figures.rows


class _Figures:
    """What a partition holds: compared with the store's aggregate to find stale partitions."""

    def __init__(self) -> None:
        self.rows = 0
        self.labelled = 0
        self.received: dt.datetime | None = None
        self.labelled_at: dt.datetime | None = None

    def add(self, table: pa.Table) -> None:
        self.rows += table.num_rows
        self.labelled += table["label_time"].length() - table["label_time"].null_count
        for name, latest in (("received", "received_time"), ("labelled_at", "label_time")):
            found = pc.max(table[latest]).as_py()
            if found is not None:
                setattr(self, name, _latest(getattr(self, name), found))

    def as_dict(self) -> dict[str, T.Any]:
        return _figures(self.rows, self.labelled, self.received, self.labelled_at)


def _latest(current: dt.datetime | None, other: dt.datetime) -> dt.datetime:
    return other if current is None or other > current else current


def _figures(rows: int, labelled: int, received: T.Any, labelled_at: T.Any) -> dict[str, T.Any]:
    return {
        "rows": int(rows),
        "labelled": int(labelled),
        "max_received_time": _moment(received),
        "max_label_time": _moment(labelled_at),
    }


def _moment(value: T.Any) -> str | None:
    """A time as the manifest keeps it; SQLite's aggregates may answer text."""
    if value is None:
        return None
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    return T.cast(dt.datetime, value).isoformat(" ", "microseconds")


def _day(store: Store, column: sa.ColumnElement[T.Any]) -> sa.ColumnElement[T.Any]:
    """An event time's UTC date: text on SQLite, a date on PostgreSQL (``str`` of both is
    ``YYYY-MM-DD``)."""
    return sa.func.date(column)


def _fingerprints(store: Store, model_name: str | None) -> dict[Key, dict[str, T.Any]]:
    """One aggregate over the store (no row leaves it): per model and event date, the rows,
    labelled rows and latest received and label times."""
    p, lab = store.predictions, store.labels
    day = _day(store, p.c.event_time).label("day")
    query = (
        sa.select(
            p.c.model_name,
            day,
            sa.func.count().label("rows"),
            sa.func.count(lab.c.prediction_id).label("labelled"),
            sa.func.max(p.c.received_time).label("received"),
            sa.func.max(lab.c.label_time).label("labelled_at"),
        )
        .select_from(p.outerjoin(lab, p.c.prediction_id == lab.c.prediction_id))
        .group_by(p.c.model_name, day)
    )
    if model_name is not None:
        query = query.where(p.c.model_name == model_name)
    with store.engine.connect() as connection:
        found = connection.execute(query).all()
    return {
        (row.model_name, str(row.day)[:10]): _figures(
            row.rows, row.labelled, row.received, row.labelled_at
        )
        for row in found
    }


def _chunks(
    store: Store, model: str, day: str, size: int
) -> T.Generator[list[sa.Row[T.Any]], None, None]:
    """A partition's rows with their labels, ``size`` at a time, from a server-side cursor
    (PostgreSQL) or SQLite's own lazy cursor: never the whole day in memory."""
    p, lab = store.predictions, store.labels
    start = dt.datetime.fromisoformat(day)
    query = (
        sa.select(
            *(p.c[name] for name in CAPTURE_COLUMNS),
            *(sa.cast(c, sa.Text).label(c.name) for c in (p.c.inputs, p.c.prediction, p.c.scores)),
            sa.cast(lab.c.target, sa.Text).label("target"),
            lab.c.label_time,
        )
        .select_from(p.outerjoin(lab, p.c.prediction_id == lab.c.prediction_id))
        .where(
            p.c.model_name == model,
            p.c.event_time >= start,
            p.c.event_time < start + dt.timedelta(days=1),
        )
        .order_by(p.c.event_time, p.c.received_time, p.c.prediction_id)
    )
    with store.engine.connect() as connection:
        result = connection.execution_options(stream_results=True, yield_per=size).execute(query)
        for partition in result.partitions(size):
            yield T.cast(list[sa.Row[T.Any]], list(partition))


def _expanded(documents: list[T.Any], taken: set[str]) -> dict[str, pa.Array | list[T.Any]]:
    """One column per key of JSON objects (a missing key is null); keys in ``taken`` (capture
    columns) are left out, as the store reader leaves them out. Arrow splits the objects in
    C++ (a struct array, flattened); values of mixed kinds go the Python way."""
    try:
        struct = pa.array([d if isinstance(d, dict) else None for d in documents])
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        return _expanded_in_python(documents, taken)
    if not pa.types.is_struct(struct.type):  # no object at all
        return {}
    fields = [struct.type.field(i).name for i in range(struct.type.num_fields)]
    return {
        name: array
        for name, array in zip(fields, struct.flatten(), strict=True)
        if name not in taken
    }


def _expanded_in_python(documents: list[T.Any], taken: set[str]) -> dict[str, list[T.Any]]:
    names: dict[str, None] = {}
    for document in documents:
        if isinstance(document, dict):
            names.update(dict.fromkeys(document))
    return {
        name: [d.get(name) if isinstance(d, dict) else None for d in documents]
        for name in names
        if name not in taken
    }


def _column(values: pa.Array | list[T.Any]) -> pa.Array:
    """Arrow's own typing of JSON values (an int column with nulls stays int); values of mixed
    kinds (a number here, text there) and nested ones are kept as text."""
    if isinstance(values, pa.Array):
        if _flat(values.type):
            return values
        values = values.to_pylist()
    try:
        array = pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        array = None
    if array is not None and _flat(array.type):
        return array
    return pa.array(
        [None if v is None else v if isinstance(v, str) else json.dumps(v) for v in values],
        pa.string(),
    )


def _flat(kind: pa.DataType) -> bool:
    """Types the manifest names and every reader takes; nested JSON is kept as its text."""
    return bool(
        pa.types.is_null(kind)
        or pa.types.is_boolean(kind)
        or kind in (pa.int64(), pa.float64(), pa.string())
    )


def _wider(known: pa.DataType, found: pa.DataType) -> pa.DataType:
    """The type that holds both: null < bool, null < int64 < double; anything else is text."""
    if known == found or pa.types.is_null(found):
        return known
    if pa.types.is_null(known):
        return found
    if {known, found} == {pa.int64(), pa.float64()}:
        return pa.float64()
    return pa.string()


def _table(chunk: list[sa.Row[T.Any]], schema: dict[str, str]) -> pa.Table:
    """A chunk of rows as an arrow table with the model's ``schema`` (``{column: type}``),
    which grows with new columns; a column whose type must widen (or a new column, once files
    exist) raises ``SchemaChangedError`` with ``schema`` already updated."""
    raw = dict(zip(chunk[0]._fields, zip(*chunk, strict=True), strict=True))  # one pass
    columns: dict[str, pa.Array] = {
        "prediction_id": pa.array(raw["prediction_id"], pa.string()),
        "event_time": pa.array(raw["event_time"], pa.timestamp("us")),
        "received_time": pa.array(raw["received_time"], pa.timestamp("us")),
        "model_version": pa.array(raw["model_version"], pa.string()),
        "latency_ms": pa.array(raw["latency_ms"], pa.float64()),
    }
    taken = {*CAPTURE_COLUMNS, "prediction", "target", "label_time"}
    inputs = _expanded(parsed_json(raw["inputs"]), taken)
    scores = _expanded(parsed_json(raw["scores"]), taken | set(inputs))
    for name, values in inputs.items():
        columns[name] = _column(values)
    columns["prediction"] = _column(parsed_json(raw["prediction"]))
    for name, values in scores.items():
        columns[name] = _column(values)
    columns["target"] = _column(parsed_json(raw["target"]))
    columns["label_time"] = pa.array(raw["label_time"], pa.timestamp("us"))
    changed = False
    existing = bool(schema)
    for name, array in columns.items():
        known = schema.get(name)
        kind = array.type if known is None else _wider(pa.type_for_alias(known), array.type)
        if pa.types.is_null(kind):
            # Never a null column in a file: Spark cannot merge it with the typed one a later
            # file has. A label is of its prediction's kind; anything else is likely a number.
            kind = columns["prediction"].type if name == "target" else pa.float64()
            kind = pa.float64() if pa.types.is_null(kind) else kind
        if known is None or str(kind) != known:
            schema[name] = str(kind)
            changed = changed or existing
    if changed:
        raise SchemaChangedError(", ".join(columns))
    target = arrow_schema(schema)
    arrays = [
        columns[field.name].cast(field.type)
        if field.name in columns
        else pa.nulls(len(chunk), field.type)
        for field in target
    ]
    return pa.Table.from_arrays(arrays, schema=target)


@contextlib.contextmanager
def _locked(lake: Path) -> T.Iterator[None]:
    """One export at a time per lake: a second one would race on the manifest."""
    with open(lake / LOCK, "a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(
                f"job.lake: another export is writing {lake} (it holds {lake / LOCK})"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class _Manifest:
    """``_bikes_export.json``: per model its columns (one schema for all its files) and per
    partition the figures of the file written, saved atomically after each partition."""

    def __init__(self, path: Path, document: dict[str, T.Any]) -> None:
        self.path = path
        self.document = document

    @classmethod
    def load(cls, lake: Path) -> _Manifest:
        for leftover in temporaries(lake / MANIFEST):  # a killed run's (we hold the lock)
            leftover.unlink()
        document = read_manifest(lake) or {}
        if document and document.get("format") != FORMAT:
            raise InputError(
                f"{lake / MANIFEST}: format {document.get('format')!r}, not {FORMAT}: written by "
                "another bikes; export into a new lake folder"
            )
        document.setdefault("format", FORMAT)
        document.setdefault("schemas", {})
        document.setdefault("partitions", {})
        return cls(lake / MANIFEST, document)

    def figures(self, key: Key) -> dict[str, T.Any] | None:
        found: dict[str, T.Any] | None = self.document["partitions"].get(key[0], {}).get(key[1])
        return found

    def keys(self, model: str) -> list[Key]:
        return [(model, day) for day in self.document["partitions"].get(model, {})]

    def schema(self, model: str) -> dict[str, str]:
        """The model's columns, a dict the chunks may grow (saved with the next partition)."""
        schema: dict[str, str] = self.document["schemas"].setdefault(model, {})
        return schema

    def forget(self, model: str) -> None:
        """A model whose schema widened: none of its files counts as written any more."""
        self.document["partitions"].pop(model, None)
        self._save()

    def record(self, key: Key, figures: dict[str, T.Any], schema: dict[str, str]) -> None:
        self.document["partitions"].setdefault(key[0], {})[key[1]] = figures
        self.document["schemas"][key[0]] = schema
        self.document["exported_at"] = dt.datetime.now(dt.UTC).isoformat()
        self._save()

    def _save(self) -> None:
        write_json_atomically(self.path, self.document)
