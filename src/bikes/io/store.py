"""The capture store: every prediction a service made, the labels that came later, and the
rows it rejected.

SQLAlchemy 2 Core over SQLite (WAL mode, the default) or PostgreSQL (``postgresql+psycopg``).
One store holds several models (``model_name`` on every row) of any contract: the inputs, the
prediction (a number or a class, its type kept) and the scores are JSON, so the tables do not
depend on a model's features. Writes are idempotent on ``prediction_id`` / ``rejection_id``
(a replayed spool never duplicates a row) and a label sent twice keeps the latest value.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import os
import typing as T

import numpy as np
import pandas as pd
import pydantic as pdt
import pydantic_core
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from bikes.core.contract import CAPTURE_COLUMNS
from bikes.core.errors import InputError, first_line
from bikes.core.redaction import redact, redact_url

STORE_URI_VARIABLE = "BIKES_STORE_URI"
PREDICTIONS = "predictions"
LABELS = "labels"
REJECTED = "rejected_rows"
# A rejected row is kept as received, within bounds: a client cannot fill the store.
MAX_RAW_VALUE_CHARS = 200
MAX_RAW_ROW_CHARS = 4096
MAX_FIELD_CHARS = 200
MAX_REASON_CHARS = 1000
# Ids per IN list and rows per upsert statement: PostgreSQL takes at most 65,535 parameters a
# statement and SQLite 32,766, so a batch of 70,000 labels goes in several statements.
CHUNK_ROWS = 5000

# The columns ``read`` returns around the inputs and scores, in order: the contract's own list.
PREDICTION_COLUMNS = CAPTURE_COLUMNS
REJECTED_COLUMNS = (
    "event_time",
    "received_time",
    "model_name",
    "model_version",
    "row",
    "field",
    "reason",
)


def _tables(metadata: sa.MetaData) -> tuple[sa.Table, sa.Table, sa.Table]:
    predictions = sa.Table(
        PREDICTIONS,
        metadata,
        sa.Column("prediction_id", sa.String(36), primary_key=True),
        sa.Column("event_time", sa.DateTime, nullable=False, index=True),
        sa.Column("received_time", sa.DateTime, nullable=False, index=True),
        sa.Column("model_name", sa.String(200), nullable=False, index=True),
        sa.Column("model_version", sa.String(20), nullable=False),
        sa.Column("latency_ms", sa.Float, nullable=False),
        sa.Column("inputs", sa.JSON, nullable=False),  # {feature: value}, as validated
        sa.Column("prediction", sa.JSON, nullable=False),  # a number or a class
        sa.Column("scores", sa.JSON(none_as_null=True), nullable=True),  # {score column: p}
    )
    labels = sa.Table(
        LABELS,
        metadata,
        sa.Column("prediction_id", sa.String(36), primary_key=True),
        sa.Column("label_time", sa.DateTime, nullable=False, index=True),
        sa.Column("target", sa.JSON, nullable=False),  # a number or a class
    )
    rejected = sa.Table(
        REJECTED,
        metadata,
        sa.Column("rejection_id", sa.String(36), primary_key=True),
        sa.Column("received_time", sa.DateTime, nullable=False, index=True),
        # The row's own event time when it could be read, else when it was received.
        sa.Column("event_time", sa.DateTime, nullable=True, index=True),
        sa.Column("model_name", sa.String(200), nullable=False, index=True),
        sa.Column("model_version", sa.String(20), nullable=False),
        sa.Column("row", sa.Integer, nullable=False),  # its index in the request
        sa.Column("field", sa.String(MAX_FIELD_CHARS), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("raw", sa.Text, nullable=False),  # the row as received, JSON, capped
    )
    return predictions, labels, rejected


def configured_uri(uri: str) -> str:
    """``BIKES_STORE_URI`` wins over a config's URI: a password belongs in the environment."""
    return os.environ.get(STORE_URI_VARIABLE) or uri


# The capture store's settings, shared by every config that reads or writes it (the serving,
# export and retraining jobs, the monitoring's StoreReader): one description, one default.
# Each config keeps its own key (store_uri, uri, schema_name, store_schema: a public contract)
# and assigns the default itself, ``field: StoreUri = DEFAULT_STORE_URI``, as pydantic's mypy
# plugin only sees a default given so.
DEFAULT_STORE_URI = "sqlite:///predictions.db"
StoreUri = T.Annotated[
    str,
    pdt.Field(description="The capture store's SQLAlchemy URI; BIKES_STORE_URI wins over it."),
]
StoreSchema = T.Annotated[
    str | None,
    pdt.Field(description="PostgreSQL: the schema holding the capture store's tables."),
]


def open_store(uri: str, schema: str | None = None) -> Store:
    """The store a config names, ``BIKES_STORE_URI`` winning over its URI."""
    return Store(configured_uri(uri), schema)


def _sqlite_wal(dbapi_connection: T.Any, _: T.Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def native(value: T.Any) -> T.Any:
    """A numpy scalar as the Python value JSON knows (classes may be ``np.int64``)."""
    if isinstance(value, np.generic):
        return value.item()
    return value


def _finite(value: T.Any) -> T.Any:
    """NaN and infinities are not JSON (PostgreSQL refuses them): they are stored as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def json_default(value: T.Any) -> T.Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


_ENCODER = json.JSONEncoder(default=json_default, separators=(",", ":"))  # one, not one a call


def dumps(value: T.Any) -> str:
    """Strict JSON for the JSON columns: numpy scalars as plain values, NaN as null."""
    text = _ENCODER.encode(value)
    if "NaN" in text or "Infinity" in text:
        text = _ENCODER.encode(_finite(value))
    return text


def raw_row(values: T.Any, first: T.Sequence[str] = ()) -> str:
    """A rejected row as received, for the ``raw`` column: JSON, each value at most
    ``MAX_RAW_VALUE_CHARS`` (longer text is cut, nested values become cut JSON text), the whole
    at most ``MAX_RAW_ROW_CHARS``; keys in ``first`` (the contract's columns) are kept first."""
    if not isinstance(values, dict):
        values = {"_row": values}
    keys = [k for k in first if k in values] + [k for k in values if k not in set(first)]
    kept: dict[str, T.Any] = {}
    size = 2  # the braces
    for key in keys:
        value = _capped(values[key])
        name = _utf8(str(key))
        item = len(json.dumps({name: value}, default=str)) - 2 + 1  # "k":v plus a comma
        if size + item > MAX_RAW_ROW_CHARS:
            break
        kept[name] = value
        size += item
    return json.dumps(kept, default=str)


_Item = T.TypeVar("_Item")


def _chunks(items: T.Sequence[_Item], size: int = CHUNK_ROWS) -> T.Iterator[list[_Item]]:
    """``items`` in lists of at most ``size``: one statement's worth of parameters each."""
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def _capped(value: T.Any) -> T.Any:
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return _utf8(value)
    return json.dumps(value, default=str)[:MAX_RAW_VALUE_CHARS]


def _utf8(text: str) -> str:
    """At most ``MAX_RAW_VALUE_CHARS`` of a client's text, a lone surrogate (JSON's ``\\ud800``)
    written out as its escape: JSON would store it, but reading it back into a frame fails."""
    return (
        text[:MAX_RAW_VALUE_CHARS]
        .encode("utf-8", "backslashreplace")
        .decode("utf-8")[:MAX_RAW_VALUE_CHARS]
    )


# The columns in the order of ``_sqlite_prediction_values``.
_SQLITE_INSERT_PREDICTIONS = (
    "INSERT INTO predictions (prediction_id, event_time, received_time, model_name, "
    "model_version, latency_ms, inputs, prediction, scores) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (prediction_id) DO NOTHING"
)


def _sqlite_datetime(value: T.Any) -> T.Any:
    """A datetime as SQLAlchemy's SQLite ``DateTime`` stores it (``YYYY-MM-DD HH:MM:SS.ffffff``,
    a time zone ignored), so ``read`` parses it back alike; anything else as given."""
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.replace(tzinfo=None)
        return value.isoformat(" ", "microseconds")  # a third of strftime's cost
    return value


def _json_value(value: T.Any) -> str:
    """``dumps`` for one JSON value, a plain finite float or int without the encoder (the
    same text: JSON writes them as ``repr``)."""
    kind = type(value)
    if kind is float and math.isfinite(value):
        return repr(value)
    if kind is int:
        return repr(value)
    return dumps(value)


def _json_document(value: T.Any) -> str:
    """``dumps`` for a row's inputs or scores, by pydantic's Rust encoder: a quarter of the
    cost, and JSON that reads back to the same values (non-ASCII text is written as UTF-8
    rather than escaped, ``1e-7`` rather than ``1e-07``; NaN is null alike). What it cannot
    write (a lone surrogate) goes through ``dumps``."""
    try:
        return pydantic_core.to_json(value, inf_nan_mode="null", fallback=json_default).decode()
    except ValueError:
        return dumps(value)


def _sqlite_prediction_values(rows: T.Sequence[dict[str, T.Any]]) -> list[tuple[T.Any, ...]]:
    """Prediction rows as the SQLite driver's parameters, each value encoded once: what
    SQLAlchemy's type processing does, without its per-value dispatch. A value that cannot be
    encoded is a ``StatementError``, as through SQLAlchemy (the capture writer tells such a
    row from an outage)."""
    received: dict[int, T.Any] = {}  # a request's rows share one received_time: encoded once
    try:
        return [
            (
                row["prediction_id"],
                _sqlite_datetime(row["event_time"]),
                received.get(id(row["received_time"]))
                or received.setdefault(
                    id(row["received_time"]), _sqlite_datetime(row["received_time"])
                ),
                row["model_name"],
                row["model_version"],
                row["latency_ms"],
                _json_document(row["inputs"]),
                _json_value(row["prediction"]),
                None if row.get("scores") is None else _json_document(row["scores"]),
            )
            for row in rows
        ]
    except (TypeError, ValueError, KeyError) as error:
        raise sa.exc.StatementError(
            f"a prediction row cannot be stored: {first_line(error)}",
            "INSERT INTO predictions",
            None,
            error,
        ) from error


class Checkpoint(T.NamedTuple):
    """What ``PRAGMA wal_checkpoint`` did: the log's frames, and how many are in the database
    file now (``busy``: a reader or writer kept it from copying everything)."""

    busy: bool
    frames: int
    copied: int


class Store:
    """Tables, idempotent writes and time-window reads over one database URI."""

    def __init__(self, uri: str, schema: str | None = None) -> None:
        self.uri = uri
        self.engine = sa.create_engine(uri, pool_pre_ping=True, json_serializer=dumps)
        if self.engine.dialect.name == "sqlite":
            sa.event.listen(self.engine, "connect", _sqlite_wal)
            schema = None  # SQLite has no schemas
        self.metadata = sa.MetaData(schema=schema)
        self.predictions, self.labels, self.rejected = _tables(self.metadata)
        self._layout_checked = False
        # SQLite: predictions go in through the driver, their values encoded once in Python
        # as SQLAlchemy would store them (a third of the cost of a capture write).
        self._fast_insert: str | None = None
        if self.engine.dialect.name == "sqlite":
            self._fast_insert = _SQLITE_INSERT_PREDICTIONS

    @property
    def safe_uri(self) -> str:
        """The URI without its password nor secret query parameters, fit for logs."""
        return redact_url(self.engine.url.render_as_string(hide_password=True))

    def create(self) -> None:
        """Create the schema and tables if missing; an unreachable database names itself, and
        so does one whose tables an older bikes created (a feature column each)."""
        try:
            with self.engine.begin() as connection:
                if self.metadata.schema:
                    connection.execute(
                        sa.schema.CreateSchema(self.metadata.schema, if_not_exists=True)
                    )
                self._check_layout(connection, require=False)
                self.metadata.create_all(connection)
        except sa.exc.SQLAlchemyError as error:
            raise InputError(f"store {self.safe_uri}: unreachable ({first_line(error)})") from None
        self._layout_checked = True

    def check_captured(self) -> None:
        """The store a reader needs: reachable, with the capture tables, checked without
        creating anything (a SQLite file that does not exist would be created empty by a
        connection) so a job can refuse it before it writes a thing."""
        database = self.engine.url.database
        if (
            self.engine.dialect.name == "sqlite"
            and database
            and database != ":memory:"
            and not database.startswith("file:")
            and not os.path.isfile(database)
        ):
            raise InputError(
                f"store {self.safe_uri}: no such database file, nothing was captured here "
                "(is this the prediction service's store_uri?)"
            )
        try:
            with self.engine.connect() as connection:
                self._checked(connection)
        except sa.exc.SQLAlchemyError as error:
            raise InputError(
                f"store {self.safe_uri}: unreachable ({redact(first_line(error))})"
            ) from None

    def _check_layout(self, connection: sa.Connection, require: bool) -> None:
        """Existing tables must have this layout; ``require``: they must exist, too."""
        inspector = sa.inspect(connection)
        schema = self.metadata.schema
        if require and not inspector.has_table(PREDICTIONS, schema=schema):
            raise InputError(
                f"store {self.safe_uri}: no {PREDICTIONS} table, nothing was captured here "
                "(is this the prediction service's store_uri?)"
            )
        for table in (self.predictions, self.labels, self.rejected):
            if not inspector.has_table(table.name, schema=schema):
                if require:
                    self._older(f"it has no {table.name} table")
                continue
            present = {column["name"] for column in inspector.get_columns(table.name, schema)}
            lacking = [column.name for column in table.columns if column.name not in present]
            if lacking:
                self._older(f"table {table.name} lacks column(s) {', '.join(lacking)}")

    def _older(self, detail: str) -> T.NoReturn:
        raise InputError(
            f"store {self.safe_uri}: created by an older bikes ({detail}; its tables hold one "
            "column per bike feature): point the store URI at a new database (or schema); "
            "bikes does not migrate captured rows"
        )

    def _checked(self, connection: sa.Connection) -> None:
        if not self._layout_checked:
            self._check_layout(connection, require=True)
            self._layout_checked = True

    def reachable(self) -> bool:
        try:
            with self.engine.connect() as connection:
                connection.execute(sa.text("SELECT 1"))
        except sa.exc.SQLAlchemyError:
            return False
        return True

    def _insert(self, table: sa.Table) -> T.Any:
        dialect = postgresql if self.engine.dialect.name == "postgresql" else sqlite
        return dialect.insert(table)

    # -- writes -------------------------------------------------------------------------------
    def write_predictions(
        self, rows: T.Sequence[dict[str, T.Any]], connection: sa.Connection | None = None
    ) -> None:
        """Insert predictions; a ``prediction_id`` already stored is skipped, never duplicated.

        A row: ``prediction_id``, ``event_time``, ``received_time``, ``model_name``,
        ``model_version``, ``latency_ms``, ``inputs`` ({feature: value}), ``prediction`` (a
        number or a class) and, optionally, ``scores`` ({score column: probability}).
        ``connection``: in the caller's transaction (the capture writer holds one connection,
        sparing a pool checkout and ping per write), else in one of its own.
        """
        if not rows:
            return
        if self._fast_insert is not None:
            # One executemany of the driver's own: no SQLAlchemy type processing per value.
            encoded = _sqlite_prediction_values(rows)
            with self._transaction(connection) as writing:
                writing.exec_driver_sql(self._fast_insert, encoded)
            return
        statement = self._insert(self.predictions).on_conflict_do_nothing(
            index_elements=["prediction_id"]
        )
        values = [row if "scores" in row else {**row, "scores": None} for row in rows]
        with self._transaction(connection) as writing:
            writing.execute(statement, values)

    # -- SQLite's write-ahead log ----------------------------------------------------------------
    def defer_checkpoints(self, connection: sa.Connection) -> None:
        """SQLite: writes on ``connection`` never checkpoint the write-ahead log themselves
        (by default the commit that grows it past 1,000 pages copies it into the database
        file and syncs both, 15-30 ms on the request that happens to commit); whoever defers
        them calls ``checkpoint``. Elsewhere: nothing to do."""
        if self._fast_insert is not None:
            connection.exec_driver_sql("PRAGMA wal_autocheckpoint=0")
            connection.commit()

    def checkpoint(self) -> Checkpoint | None:
        """SQLite: copy the write-ahead log into the database file, without waiting for
        writers or readers (``PASSIVE``: what is being written meanwhile stays for the next
        time). None on other databases, which checkpoint on their own."""
        if self._fast_insert is None:
            return None
        with self.engine.connect() as connection:
            busy, frames, copied = connection.exec_driver_sql(
                "PRAGMA wal_checkpoint(PASSIVE)"
            ).one()
            connection.commit()
        return Checkpoint(busy=bool(busy), frames=int(frames), copied=int(copied))

    @contextlib.contextmanager
    def _transaction(self, connection: sa.Connection | None) -> T.Iterator[sa.Connection]:
        """The caller's connection (its transaction is the caller's), else a transaction of
        its own, committed on exit."""
        if connection is not None:
            yield connection
            return
        with self.engine.begin() as begun:
            yield begun

    def write_labels(self, rows: T.Sequence[dict[str, T.Any]]) -> None:
        """Upsert labels (``prediction_id``, ``label_time``, ``target``: a number or a class):
        the latest value for a prediction wins."""
        if not rows:
            return
        insert = self._insert(self.labels)
        statement = insert.on_conflict_do_update(
            index_elements=["prediction_id"],
            set_={"target": insert.excluded.target, "label_time": insert.excluded.label_time},
        )
        with self.engine.begin() as connection:  # one transaction: all the labels or none
            for chunk in _chunks(rows):
                connection.execute(statement, chunk)

    def write_rejected(
        self, rows: T.Sequence[dict[str, T.Any]], connection: sa.Connection | None = None
    ) -> None:
        """Insert rejected rows; a ``rejection_id`` already stored is skipped.

        A row: ``rejection_id``, ``received_time``, ``event_time`` (or None), ``model_name``,
        ``model_version``, ``row``, ``field``, ``reason`` and ``raw`` (``raw_row``'s JSON).
        ``connection``: as in ``write_predictions``.
        """
        if not rows:
            return
        statement = self._insert(self.rejected).on_conflict_do_nothing(
            index_elements=["rejection_id"]
        )
        values = [
            {
                **row,
                "field": str(row["field"])[:MAX_FIELD_CHARS],
                "reason": str(row["reason"])[:MAX_REASON_CHARS],
            }
            for row in rows
        ]
        with self._transaction(connection) as writing:
            writing.execute(statement, values)

    def known_ids(self, ids: T.Sequence[str]) -> set[str]:
        """Which of these prediction ids are stored."""
        column = self.predictions.c.prediction_id
        known: set[str] = set()
        with self.engine.connect() as connection:
            for chunk in _chunks(ids):
                found = connection.execute(sa.select(column).where(column.in_(chunk)))
                known.update(row[0] for row in found)
        return known

    # -- reads --------------------------------------------------------------------------------
    def read(
        self,
        model_name: str | None = None,
        start: dt.datetime | None = None,
        end: dt.datetime | None = None,
        latest: int | None = None,
    ) -> pd.DataFrame:
        """Predictions of one model (or all) by event-time window ``[start, end)`` or the latest
        N, oldest first, with their labels.

        Columns: ``prediction_id``, ``event_time``, ``received_time``, ``model_name``,
        ``model_version``, ``latency_ms``, one per input, ``prediction``, one per score column,
        ``target`` (missing until labelled) and ``label_time``.
        """
        p, lab = self.predictions, self.labels
        query = sa.select(
            *(p.c[name] for name in PREDICTION_COLUMNS),
            *(_as_text(column) for column in (p.c.inputs, p.c.prediction, p.c.scores)),
            _as_text(lab.c.target),
            lab.c.label_time,
        ).select_from(p.outerjoin(lab, p.c.prediction_id == lab.c.prediction_id))
        query = _filtered(query, p, model_name, start, end)
        if latest is not None:
            query = query.order_by(p.c.event_time.desc(), p.c.received_time.desc()).limit(latest)
        with self.engine.connect() as connection:
            self._checked(connection)
            frame = pd.read_sql(query, connection)
        frame = frame.sort_values(["event_time", "received_time"], kind="stable").reset_index(
            drop=True
        )
        inputs = _expanded(parsed_json(frame.pop("inputs")), frame.index)
        scores = _expanded(parsed_json(frame.pop("scores")), frame.index)
        prediction = pd.Series(parsed_json(frame.pop("prediction")), index=frame.index)
        target = pd.Series(parsed_json(frame.pop("target")), index=frame.index)
        label_time = frame.pop("label_time")
        parts = [
            frame,
            inputs.drop(columns=[c for c in inputs.columns if c in frame.columns]),
            pd.DataFrame({"prediction": prediction}, index=frame.index),
            scores.drop(columns=[c for c in scores.columns if c in frame.columns]),
            pd.DataFrame({"target": target, "label_time": label_time}, index=frame.index),
        ]
        return pd.concat(parts, axis=1)

    def read_rejected(
        self,
        model_name: str | None = None,
        start: dt.datetime | None = None,
        end: dt.datetime | None = None,
    ) -> pd.DataFrame:
        """Rejected rows of one model (or all) by event-time window ``[start, end)``, oldest
        first: ``event_time``, ``received_time``, ``model_name``, ``model_version``, ``row``,
        ``field``, ``reason`` and one column per key of the row as received."""
        r = self.rejected
        query = sa.select(*(r.c[name] for name in REJECTED_COLUMNS), r.c.raw)
        query = _filtered(query, r, model_name, start, end)
        with self.engine.connect() as connection:
            self._checked(connection)
            frame = pd.read_sql(query, connection)
        frame = frame.sort_values(["event_time", "received_time"], kind="stable").reset_index(
            drop=True
        )
        values = _expanded(parsed_json(frame.pop("raw")), frame.index)
        return pd.concat(
            [frame, values.drop(columns=[c for c in values.columns if c in frame.columns])],
            axis=1,
        )

    def label_coverage(
        self,
        start: dt.datetime,
        end: dt.datetime,
        step: str = "1D",
        model_name: str | None = None,
    ) -> pd.DataFrame:
        """Per window of ``step`` in ``[start, end)``: rows, labelled rows and their share."""
        p, lab = self.predictions, self.labels
        query = sa.select(
            p.c.event_time, lab.c.prediction_id.is_not(None).label("labelled")
        ).select_from(p.outerjoin(lab, p.c.prediction_id == lab.c.prediction_id))
        query = _filtered(query, p, model_name, start, end)
        with self.engine.connect() as connection:
            self._checked(connection)
            frame = pd.read_sql(query, connection)
        windows = pd.date_range(start, end, freq=step, inclusive="left")
        if frame.empty:
            grouped = pd.DataFrame({"rows": 0, "labelled": 0}, index=windows)
        else:
            bucket = frame.set_index("event_time")["labelled"].astype(bool)
            grouped = bucket.resample(step, origin=pd.Timestamp(start)).agg(["size", "sum"])
            grouped = grouped.rename(columns={"size": "rows", "sum": "labelled"})
            grouped = grouped.reindex(windows, fill_value=0)
        grouped["coverage"] = (grouped["labelled"] / grouped["rows"]).where(grouped["rows"] > 0)
        return (
            grouped.rename_axis("window_start").reset_index().astype({"rows": int, "labelled": int})
        )

    def count(self, table: str = PREDICTIONS) -> int:
        """Rows in ``predictions``, ``labels`` or ``rejected_rows``."""
        target = {PREDICTIONS: self.predictions, LABELS: self.labels, REJECTED: self.rejected}[
            table
        ]
        with self.engine.connect() as connection:
            return int(
                connection.execute(sa.select(sa.func.count()).select_from(target)).scalar_one()
            )

    def dispose(self) -> None:
        self.engine.dispose()


def _filtered(
    query: T.Any,
    table: sa.Table,
    model_name: str | None,
    start: dt.datetime | None,
    end: dt.datetime | None,
) -> T.Any:
    if model_name is not None:
        query = query.where(table.c.model_name == model_name)
    if start is not None:
        query = query.where(table.c.event_time >= start)
    if end is not None:
        query = query.where(table.c.event_time < end)
    return query


def _as_text(column: sa.ColumnElement[T.Any]) -> sa.ColumnElement[str]:
    """A JSON column as its text: parsed in bulk below, not value by value by the driver."""
    return sa.cast(column, sa.Text).label(column.name)


def parsed_json(texts: T.Sequence[str | None] | pd.Series) -> list[T.Any]:
    """JSON texts parsed at once: one C parse of one array, not one call each (a tenth of the
    cost on a batch of rows). Anything but text (None, a missing NaN) is parsed as null. The
    store reader and the export both parse their JSON columns so."""
    values = texts.tolist() if isinstance(texts, pd.Series) else texts
    return T.cast(
        list[T.Any],
        json.loads("[" + ",".join(t if isinstance(t, str) else "null" for t in values) + "]"),
    )


def _expanded(documents: list[T.Any], index: pd.Index) -> pd.DataFrame:
    """One column per key of JSON objects (a missing object or key is missing)."""
    records = [value if isinstance(value, dict) else {} for value in documents]
    if not any(records):
        return pd.DataFrame(index=index)
    return pd.DataFrame.from_records(records, index=index)
