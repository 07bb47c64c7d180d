"""Monitoring's edges: production windows from the store, the champion's reference data,
the ``monitoring_metrics`` table Grafana reads, and alert channels with a cooldown."""

from __future__ import annotations

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

Window = tuple[dt.datetime | None, dt.datetime | None, pd.DataFrame]


class StoreReader(pdt.BaseModel, strict=False, frozen=True, extra="forbid"):
    """Production windows from the capture store: the latest N rows, a range, or a backfill.

    With ``step`` (``1D``, ``6h``...) ``start``..``end`` is cut into windows, oldest first.
    """

    KIND: T.Literal["StoreReader"] = "StoreReader"
    uri: str = "sqlite:///predictions.db"
    schema_name: str | None = None
    latest: int = pdt.Field(default=500, gt=0)
    start: dt.datetime | None = None
    end: dt.datetime | None = None
    step: str | None = None

    def store(self) -> Store:
        return Store(configured_uri(self.uri), self.schema_name)

    def windows(self) -> list[Window]:
        store = self.store()
        try:
            if self.step is not None:
                if self.start is None or self.end is None:
                    raise InputError("job.current: a backfill (step) needs start and end")
                edges = pd.date_range(self.start, self.end, freq=self.step).to_pydatetime().tolist()
                if not edges or edges[-1] < self.end:
                    edges.append(self.end)
                return [(a, b, store.read(start=a, end=b)) for a, b in itertools.pairwise(edges)]
            if self.start is not None or self.end is not None:
                return [(self.start, self.end, store.read(start=self.start, end=self.end))]
            frame = store.read(latest=self.latest)
        except sa.exc.SQLAlchemyError as error:
            raise InputError(f"store {store.safe_uri}: unreadable ({first_line(error)})") from None
        finally:
            store.dispose()
        if frame.empty:
            raise InputError(f"store {store.safe_uri}: no predictions captured yet")
        return [
            (
                frame["event_time"].min().to_pydatetime(),
                frame["event_time"].max().to_pydatetime(),
                frame,
            )
        ]


class ChampionReference(pdt.BaseModel, strict=True, frozen=True, extra="forbid"):
    """The reference data logged by the training run of a registered version (the champion)."""

    KIND: T.Literal["ChampionReference"] = "ChampionReference"
    model_uri: str = "models:/bikes@champion"

    def read(self, client: MlflowClient) -> pd.DataFrame:
        ref = registry.resolve(client, self.model_uri)
        artifact = registry.version_tag(client, ref, "reference_data")
        if artifact is None:
            raise InputError(f"{ref.uri}: no reference_data tag (was it trained by bikes?)")
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
        sa.Column("rule", sa.String(200), primary_key=True),
        sa.Column("window_start", sa.DateTime, primary_key=True),
        sa.Column("window_end", sa.DateTime, primary_key=True),
        sa.Column("fired_at", sa.DateTime, nullable=False),
    )


class MonitoringTables:
    """``monitoring_metrics`` (long format, upserted: re-running a window replaces its rows)
    and ``monitoring_alerts`` (which rule fired for which window: the cooldown)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.metrics = _metrics_table(store.metadata)
        self.alerts = _alerts_table(store.metadata)

    def create(self) -> None:
        self.store.create()

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
                "model_version": version or "",
                "computed_at": now,
            }
            for row in rows
        ]
        insert = self._dialect().insert(self.metrics)
        statement = insert.on_conflict_do_update(
            index_elements=["window_start", "window_end", "model_version", "check", "column"],
            set_={k: insert.excluded[k] for k in ("value", "threshold", "status", "computed_at")},
        )
        with self.store.engine.begin() as connection:
            connection.execute(statement, records)

    def first_firing(self, rule: str, start: dt.datetime, end: dt.datetime) -> bool:
        """Record that ``rule`` fired for this window; False when it already had."""
        insert = self._dialect().insert(self.alerts).on_conflict_do_nothing()
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        with self.store.engine.begin() as connection:
            done = connection.execute(
                insert, {"rule": rule, "window_start": start, "window_end": end, "fired_at": now}
            )
        return bool(done.rowcount)

    def read(self) -> pd.DataFrame:
        with self.store.engine.connect() as connection:
            return pd.read_sql(sa.select(self.metrics), connection)


class Channel(pdt.BaseModel, strict=True, frozen=True, extra="forbid"):
    """Where alerts go: ``log``, a ``webhook`` (JSON POST) or a ``slack`` incoming webhook.

    Webhook URLs carry secrets: give ``url_env``, the environment variable that holds it.
    """

    KIND: T.Literal["log", "webhook", "slack"] = "log"
    url: str | None = None
    url_env: str | None = None
    timeout: float = 10.0

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
