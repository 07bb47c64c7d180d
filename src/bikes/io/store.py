"""The capture store: every prediction the service made, and the labels that came later.

SQLAlchemy 2 Core over SQLite (WAL mode, the default) or PostgreSQL (``postgresql+psycopg``).
Writes are idempotent on ``prediction_id`` (a replayed spool never duplicates a row) and a
label sent twice keeps the latest value.
"""

from __future__ import annotations

import datetime as dt
import os
import typing as T

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from bikes.core import schemas
from bikes.core.errors import InputError, first_line

STORE_URI_VARIABLE = "BIKES_STORE_URI"
PREDICTIONS = "predictions"
LABELS = "labels"
_SQL_TYPES: dict[type, type[sa.types.TypeEngine[T.Any]]] = {int: sa.Integer, float: sa.Float}


def _tables(metadata: sa.MetaData) -> tuple[sa.Table, sa.Table]:
    predictions = sa.Table(
        PREDICTIONS,
        metadata,
        sa.Column("prediction_id", sa.String(36), primary_key=True),
        sa.Column("event_time", sa.DateTime, nullable=False, index=True),
        sa.Column("received_time", sa.DateTime, nullable=False, index=True),
        sa.Column("model_name", sa.String(200), nullable=False),
        sa.Column("model_version", sa.String(20), nullable=False),
        sa.Column("latency_ms", sa.Float, nullable=False),
        sa.Column("prediction", sa.Float, nullable=False),
        *(
            sa.Column(feature.name, _SQL_TYPES[feature.dtype], nullable=True)
            for feature in schemas.FEATURES
        ),
    )
    labels = sa.Table(
        LABELS,
        metadata,
        sa.Column("prediction_id", sa.String(36), primary_key=True),
        sa.Column("label_time", sa.DateTime, nullable=False, index=True),
        sa.Column("target", sa.Float, nullable=False),
    )
    return predictions, labels


def configured_uri(uri: str) -> str:
    """``BIKES_STORE_URI`` wins over a config's URI: a password belongs in the environment."""
    return os.environ.get(STORE_URI_VARIABLE) or uri


def _sqlite_wal(dbapi_connection: T.Any, _: T.Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


class Store:
    """Tables, idempotent writes and time-window reads over one database URI."""

    def __init__(self, uri: str, schema: str | None = None) -> None:
        self.uri = uri
        self.engine = sa.create_engine(uri, pool_pre_ping=True)
        if self.engine.dialect.name == "sqlite":
            sa.event.listen(self.engine, "connect", _sqlite_wal)
            schema = None  # SQLite has no schemas
        self.metadata = sa.MetaData(schema=schema)
        self.predictions, self.labels = _tables(self.metadata)

    @property
    def safe_uri(self) -> str:
        """The URI without its password, fit for logs."""
        return self.engine.url.render_as_string(hide_password=True)

    def create(self) -> None:
        """Create the schema and tables if missing; an unreachable database names itself."""
        try:
            with self.engine.begin() as connection:
                if self.metadata.schema:
                    connection.execute(
                        sa.schema.CreateSchema(self.metadata.schema, if_not_exists=True)
                    )
                self.metadata.create_all(connection)
        except sa.exc.SQLAlchemyError as error:
            raise InputError(f"store {self.safe_uri}: unreachable ({first_line(error)})") from None

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

    def write_predictions(self, rows: T.Sequence[dict[str, T.Any]]) -> None:
        """Insert rows; a ``prediction_id`` already stored is skipped, never duplicated."""
        if not rows:
            return
        statement = self._insert(self.predictions).on_conflict_do_nothing(
            index_elements=["prediction_id"]
        )
        with self.engine.begin() as connection:
            connection.execute(statement, list(rows))

    def write_labels(self, rows: T.Sequence[dict[str, T.Any]]) -> None:
        """Upsert labels: the latest value for a prediction wins."""
        if not rows:
            return
        insert = self._insert(self.labels)
        statement = insert.on_conflict_do_update(
            index_elements=["prediction_id"],
            set_={"target": insert.excluded.target, "label_time": insert.excluded.label_time},
        )
        with self.engine.begin() as connection:
            connection.execute(statement, list(rows))

    def known_ids(self, ids: T.Sequence[str]) -> set[str]:
        """Which of these prediction ids are stored."""
        column = self.predictions.c.prediction_id
        with self.engine.connect() as connection:
            found = connection.execute(sa.select(column).where(column.in_(list(ids))))
            return {row[0] for row in found}

    def read(
        self,
        start: dt.datetime | None = None,
        end: dt.datetime | None = None,
        latest: int | None = None,
    ) -> pd.DataFrame:
        """Predictions by event-time window ``[start, end)`` or the latest N, with their labels."""
        p, lab = self.predictions, self.labels
        query = sa.select(p, lab.c.target.label(schemas.TARGET), lab.c.label_time).select_from(
            p.outerjoin(lab, p.c.prediction_id == lab.c.prediction_id)
        )
        if start is not None:
            query = query.where(p.c.event_time >= start)
        if end is not None:
            query = query.where(p.c.event_time < end)
        if latest is not None:
            query = query.order_by(p.c.event_time.desc(), p.c.received_time.desc()).limit(latest)
        with self.engine.connect() as connection:
            frame = pd.read_sql(query, connection)
        return frame.sort_values(["event_time", "received_time"], kind="stable").reset_index(
            drop=True
        )

    def label_coverage(
        self, start: dt.datetime, end: dt.datetime, step: str = "1D"
    ) -> pd.DataFrame:
        """Per window of ``step`` in ``[start, end)``: rows, labelled rows and their share."""
        frame = self.read(start=start, end=end)
        windows = pd.date_range(start, end, freq=step, inclusive="left")
        if frame.empty:
            grouped = pd.DataFrame({"rows": 0, "labelled": 0}, index=windows)
        else:
            bucket = frame.set_index("event_time")[schemas.TARGET].notna()
            grouped = bucket.resample(step, origin=pd.Timestamp(start)).agg(["size", "sum"])
            grouped = grouped.rename(columns={"size": "rows", "sum": "labelled"})
            grouped = grouped.reindex(windows, fill_value=0)
        grouped["coverage"] = (grouped["labelled"] / grouped["rows"]).where(grouped["rows"] > 0)
        return (
            grouped.rename_axis("window_start").reset_index().astype({"rows": int, "labelled": int})
        )

    def count(self, table: str = PREDICTIONS) -> int:
        target = self.predictions if table == PREDICTIONS else self.labels
        with self.engine.connect() as connection:
            return int(
                connection.execute(sa.select(sa.func.count()).select_from(target)).scalar_one()
            )

    def dispose(self) -> None:
        self.engine.dispose()
