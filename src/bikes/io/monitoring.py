"""Monitoring's edges: production windows from the store, the champion's reference data,
the ``monitoring_metrics`` table Grafana reads, and alert channels with a cooldown."""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import os
import tempfile
import typing as T

import httpx
import mlflow
import pandas as pd
import pydantic as pdt
import sqlalchemy as sa
from loguru import logger
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from sqlalchemy.dialects import postgresql, sqlite

from bikes.core.errors import InputError, first_line
from bikes.io import registry
from bikes.io.datasets import ParquetReader
from bikes.io.store import Store, configured_uri

REFERENCE_TAG = "reference_data"  # on a model version: the URI of its reference table


@dataclasses.dataclass(frozen=True)
class Window:
    """A production window: the rows the model answered (``frame``) and, from a store, the
    rows the service rejected (``rejected``: one entry per refused request row, its values as
    received)."""

    start: dt.datetime | None
    end: dt.datetime | None
    frame: pd.DataFrame
    rejected: pd.DataFrame | None = None


class StoreReader(pdt.BaseModel, strict=False, frozen=True, extra="forbid"):
    """Production windows from the capture store: the latest N rows, a range, or a backfill.

    With ``step`` (``1D``, ``6h``...) ``start``..``end`` is cut into windows, oldest first.
    Only the rows of the job's ``registered_model`` are read.
    """

    KIND: T.Literal["StoreReader"] = "StoreReader"
    uri: str = pdt.Field(
        default="sqlite:///predictions.db",
        description="The capture store's SQLAlchemy URI; BIKES_STORE_URI wins over it.",
    )
    schema_name: str | None = pdt.Field(
        default=None, description="PostgreSQL schema of the store's tables."
    )
    latest: int = pdt.Field(
        default=500, gt=0, description="Without start and end: the latest N predictions."
    )
    start: dt.datetime | None = pdt.Field(
        default=None, description="First event time of the range (inclusive)."
    )
    end: dt.datetime | None = pdt.Field(
        default=None, description="Last event time of the range (exclusive)."
    )
    step: str | None = pdt.Field(
        default=None,
        description="Cut start..end into windows of this pandas frequency (7D, 1D, MS...): a "
        "backfill, oldest window first.",
    )

    def store(self) -> Store:
        return Store(configured_uri(self.uri), self.schema_name)

    def bounds(self) -> list[tuple[dt.datetime | None, dt.datetime | None]]:
        """Each window's ``[start, end)``; ``(None, None)``: the latest rows."""
        if self.step is not None:
            if self.start is None or self.end is None:
                raise InputError("job.current: a backfill (step) needs start and end")
            edges = pd.date_range(self.start, self.end, freq=self.step).to_pydatetime().tolist()
            if not edges or edges[-1] < self.end:
                edges.append(self.end)
            return list(itertools.pairwise(edges))
        if self.start is not None or self.end is not None:
            return [(self.start, self.end)]
        return [(None, None)]

    def windows(self, model_name: str) -> T.Iterator[Window]:
        """Each window read when it is needed, so a backfill holds one window at a time.

        A window with no rows is returned empty (monitoring calls it ``no_data``); only the
        latest-rows read of a store with nothing for ``model_name`` is an input error.
        """
        bounds = self.bounds()
        store = self.store()
        try:
            for start, end in bounds:
                if start is None and end is None:
                    yield self._latest(store, model_name)
                    continue
                yield Window(
                    start,
                    end,
                    store.read(model_name=model_name, start=start, end=end),
                    store.read_rejected(model_name=model_name, start=start, end=end),
                )
        except sa.exc.SQLAlchemyError as error:
            raise InputError(f"store {store.safe_uri}: unreadable ({first_line(error)})") from None
        finally:
            store.dispose()

    def _latest(self, store: Store, model_name: str) -> Window:
        frame = store.read(model_name=model_name, latest=self.latest)
        if frame.empty:
            raise InputError(
                f"store {store.safe_uri}: no predictions captured yet for model {model_name!r} "
                "(job.registered_model)"
            )
        start = frame["event_time"].min().to_pydatetime()
        end = frame["event_time"].max().to_pydatetime()
        rejected = store.read_rejected(
            model_name=model_name, start=start, end=end + dt.timedelta(microseconds=1)
        )
        return Window(start, end, frame, rejected)


class ChampionReference(pdt.BaseModel, strict=True, frozen=True, extra="forbid"):
    """The reference data of a registered version: the table its ``reference_data`` tag points
    at (bikes training logs it; for a model trained elsewhere, set the tag yourself)."""

    KIND: T.Literal["ChampionReference"] = "ChampionReference"
    model_uri: str | None = pdt.Field(
        default=None,
        description="The model version, models:/NAME@ALIAS or models:/NAME/VERSION. "
        "Default: models:/<job.registered_model>@champion.",
    )

    def uri(self, registered_model: str) -> str:
        return self.model_uri or f"models:/{registered_model}@champion"

    def read(self, client: MlflowClient, ref: registry.ModelRef) -> pd.DataFrame:
        artifact = registry.version_tag(client, ref, REFERENCE_TAG)
        if artifact is None:
            raise InputError(
                f"{ref.uri}: no {REFERENCE_TAG} tag (bikes training sets it; for a model "
                f"trained elsewhere, tag the version with {REFERENCE_TAG}=<artifact URI of a "
                "parquet table>, or give job.reference a ParquetReader)"
            )
        with tempfile.TemporaryDirectory() as directory:
            try:
                path = mlflow.artifacts.download_artifacts(artifact, dst_path=directory)
            except (MlflowException, OSError) as error:
                raise InputError(
                    f"{artifact}: cannot be downloaded ({first_line(error)})"
                ) from None
            return ParquetReader(path=path).read()


def _metrics_table(metadata: sa.MetaData) -> sa.Table:
    return sa.Table(
        "monitoring_metrics",
        metadata,
        sa.Column("window_start", sa.DateTime, primary_key=True),
        sa.Column("window_end", sa.DateTime, primary_key=True),
        sa.Column("model_name", sa.String(200), primary_key=True),
        sa.Column("model_version", sa.String(50), primary_key=True),
        sa.Column("check", sa.String(50), primary_key=True),
        sa.Column("column", sa.String(100), primary_key=True),
        sa.Column("value", sa.Float, nullable=False),
        sa.Column("threshold", sa.Float, nullable=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("computed_at", sa.DateTime, nullable=False),
    )


def _alerts_table(metadata: sa.MetaData) -> sa.Table:
    return sa.Table(
        "monitoring_alerts",
        metadata,
        sa.Column("model_name", sa.String(200), primary_key=True),
        sa.Column("rule", sa.String(200), primary_key=True),
        sa.Column("window_start", sa.DateTime, primary_key=True),
        sa.Column("window_end", sa.DateTime, primary_key=True),
        sa.Column("fired_at", sa.DateTime, nullable=False),
    )


class MonitoringTables:
    """``monitoring_metrics`` (long format, upserted: re-running a window replaces its rows)
    and ``monitoring_alerts`` (which rule fired for which window: the cooldown), one set of
    rows per ``model_name``: several models share the tables."""

    def __init__(self, store: Store, model_name: str = "bikes") -> None:
        self.store = store
        self.model_name = model_name
        self.metrics = _metrics_table(store.metadata)
        self.alerts = _alerts_table(store.metadata)

    def create(self) -> None:
        """Create the tables if missing; tables an older bikes created (no ``model_name``)
        are named, never written into."""
        try:
            with self.store.engine.begin() as connection:
                if self.store.metadata.schema:
                    connection.execute(
                        sa.schema.CreateSchema(self.store.metadata.schema, if_not_exists=True)
                    )
                inspector = sa.inspect(connection)
                for table in (self.metrics, self.alerts):
                    if not inspector.has_table(table.name, schema=table.schema):
                        continue
                    present = {c["name"] for c in inspector.get_columns(table.name, table.schema)}
                    if "model_name" not in present:
                        raise InputError(
                            f"store {self.store.safe_uri}: table {table.name} was created by an "
                            "older bikes (no model_name column): drop it (it is derived data; "
                            "a backfill refills it) or point job.metrics_store_uri elsewhere"
                        )
                self.metrics.create(connection, checkfirst=True)
                self.alerts.create(connection, checkfirst=True)
        except sa.exc.SQLAlchemyError as error:
            raise InputError(
                f"store {self.store.safe_uri}: unreachable ({first_line(error)})"
            ) from None

    def _dialect(self) -> T.Any:
        return postgresql if self.store.engine.dialect.name == "postgresql" else sqlite

    def write(
        self,
        start: dt.datetime,
        end: dt.datetime,
        version: str | None,
        rows: list[dict[str, T.Any]],
    ) -> None:
        if not rows:
            return
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        records = [
            {
                **row,
                "window_start": start,
                "window_end": end,
                "model_name": self.model_name,
                "model_version": version or "",
                "computed_at": now,
            }
            for row in rows
        ]
        insert = self._dialect().insert(self.metrics)
        statement = insert.on_conflict_do_update(
            index_elements=[
                "window_start",
                "window_end",
                "model_name",
                "model_version",
                "check",
                "column",
            ],
            set_={k: insert.excluded[k] for k in ("value", "threshold", "status", "computed_at")},
        )
        with self.store.engine.begin() as connection:
            # A window re-run replaces its rows, including checks that no longer apply.
            connection.execute(
                self.metrics.delete().where(
                    self.metrics.c.window_start == start,
                    self.metrics.c.window_end == end,
                    self.metrics.c.model_name == self.model_name,
                )
            )
            connection.execute(statement, records)

    def first_firing(self, rule: str, start: dt.datetime, end: dt.datetime) -> bool:
        """Record that ``rule`` fired for this window; False when it already had."""
        insert = self._dialect().insert(self.alerts).on_conflict_do_nothing()
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        record = {
            "model_name": self.model_name,
            "rule": rule[:200],
            "window_start": start,
            "window_end": end,
            "fired_at": now,
        }
        with self.store.engine.begin() as connection:
            done = connection.execute(insert, record)
        return bool(done.rowcount)

    def read(self) -> pd.DataFrame:
        """This model's rows of ``monitoring_metrics``."""
        query = sa.select(self.metrics).where(self.metrics.c.model_name == self.model_name)
        with self.store.engine.connect() as connection:
            return pd.read_sql(query, connection)


class Channel(pdt.BaseModel, strict=True, frozen=True, extra="forbid"):
    """Where alerts go: ``log``, a ``webhook`` (JSON POST) or a ``slack`` incoming webhook.

    Webhook URLs carry secrets: give ``url_env``, the environment variable that holds it.
    """

    KIND: T.Literal["log", "webhook", "slack"] = pdt.Field(
        default="log", description="log (a warning line), webhook (JSON POST) or slack."
    )
    url: str | None = pdt.Field(default=None, description="The webhook's URL (prefer url_env).")
    url_env: str | None = pdt.Field(
        default=None, description="The environment variable holding the webhook's URL."
    )
    timeout: float = pdt.Field(default=10.0, gt=0, description="HTTP timeout, seconds.")

    def send(self, alerts: list[dict[str, T.Any]]) -> None:
        if not alerts:
            return
        if self.KIND == "log":
            for alert in alerts:
                logger.warning("ALERT [{severity}] {message}", **alert)
            return
        url = self.url or (os.environ.get(self.url_env) if self.url_env else None)
        if not url:
            raise InputError(f"alert channel {self.KIND}: set url or url_env (and that variable)")
        if self.KIND == "slack":
            lines = [f"*[{a['severity']}]* {a['message']}" for a in alerts]
            payload: dict[str, T.Any] = {"text": "bikes monitoring\n" + "\n".join(lines)}
        else:
            payload = {"source": "bikes", "alerts": alerts}
        try:
            httpx.post(url, json=payload, timeout=self.timeout).raise_for_status()
        except httpx.HTTPError as error:
            logger.error("Alert channel {} failed: {}", self.KIND, error)
