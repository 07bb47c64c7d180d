"""Monitoring's edges: production windows from the store, the champion's reference data,
the ``monitoring_metrics`` table Grafana reads, and alert channels with a cooldown that starts
only once an alert is delivered (undelivered ones wait in ``monitoring_alerts_undelivered``)."""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import hashlib
import itertools
import json
import os
import tempfile
import time
import typing as T

import pandas as pd
import pydantic as pdt
import sqlalchemy as sa
from loguru import logger
from sqlalchemy.dialects import postgresql, sqlite

from bikes.core.contract import as_naive_utc
from bikes.core.errors import InputError, first_line
from bikes.core.redaction import redact, redact_url
from bikes.core.reference import HELD_OUT_TAG, HeldOutPerformance
from bikes.io import registry
from bikes.io.datasets import ParquetReader
from bikes.io.store import DEFAULT_STORE_URI, Store, StoreSchema, StoreUri, open_store

if T.TYPE_CHECKING:  # MLflow is imported where it is used (a 3 s import; see io.services)
    from mlflow.tracking import MlflowClient

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


class TimeWindows(pdt.BaseModel, strict=False, frozen=True, extra="forbid"):
    """Event-time bounds, cut into windows: what the store's and the lake's readers share.

    With ``step`` (``1D``, ``6h``...) ``start``..``end`` is cut into windows, oldest first.
    """

    start: dt.datetime | None = pdt.Field(
        default=None, description="First event time of the range (inclusive)."
    )
    end: dt.datetime | None = pdt.Field(
        default=None, description="Last event time of the range (exclusive)."
    )
    step: str | None = pdt.Field(
        default=None,
        description="Cut start..end into windows of this pandas frequency (7D, 1D, MS...): a "
        "backfill, oldest window first, one window in memory at a time.",
    )

    @pdt.field_validator("start", "end")
    @classmethod
    def _naive_utc(cls, moment: dt.datetime | None) -> dt.datetime | None:
        """Captured event times are naive UTC: an aware bound is converted, so it compares."""
        return as_naive_utc(moment)

    @pdt.field_validator("step")
    @classmethod
    def _positive_step(cls, step: str | None) -> str | None:
        """A step that pandas cannot read, or that does not move forward, is refused here:
        before anything is read or written (it was a traceback after the metrics rows)."""
        if step is None:
            return step
        try:
            offset = pd.tseries.frequencies.to_offset(step)
        except ValueError:
            offset = None
        if offset is None or offset.n <= 0:
            raise ValueError(f"{step!r} is not a positive pandas frequency (1D, 6h, 7D, MS...)")
        return step

    @pdt.model_validator(mode="after")
    def _ordered(self) -> T.Self:
        if self.step is not None and (self.start is None or self.end is None):
            raise ValueError("a backfill (step) needs start and end")
        if self.start is not None and self.end is not None and self.start >= self.end:
            raise ValueError(f"start {self.start} is not before end {self.end}")
        return self

    def bounds(self) -> list[tuple[dt.datetime | None, dt.datetime | None]]:
        """Each window's ``[start, end)``: the steps of a backfill, else the one range
        (``(None, None)``: no bounds, e.g. the store's latest rows)."""
        if self.step is not None and self.start is not None and self.end is not None:
            edges = pd.date_range(self.start, self.end, freq=self.step).to_pydatetime().tolist()
            if not edges or edges[-1] < self.end:
                edges.append(self.end)
            return list(itertools.pairwise(edges))
        return [(self.start, self.end)]


class StoreReader(TimeWindows):
    """Production windows from the capture store: the latest N rows, a range, or a backfill.

    With ``step`` (``1D``, ``6h``...) ``start``..``end`` is cut into windows, oldest first.
    Only the rows of the job's ``registered_model`` are read.
    """

    KIND: T.Literal["StoreReader"] = "StoreReader"
    uri: StoreUri = DEFAULT_STORE_URI
    schema_name: StoreSchema = None
    latest: int = pdt.Field(
        default=500, gt=0, description="Without start and end: the latest N predictions."
    )

    def store(self) -> Store:
        return open_store(self.uri, self.schema_name)

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
    at (bikes training logs it; for a model trained elsewhere, set the tag yourself), and its
    reference *performance* from its ``held_out_performance`` tag (rows it did not train on:
    training's validation part, or the gate's test split, which overwrites it)."""

    KIND: T.Literal["ChampionReference"] = "ChampionReference"
    model_uri: str | None = pdt.Field(
        default=None,
        description="The model version, models:/NAME@ALIAS or models:/NAME/VERSION. "
        "Default: models:/<job.registered_model>@champion.",
    )

    def uri(self, registered_model: str) -> str:
        return self.model_uri or f"models:/{registered_model}@champion"

    def read(self, client: MlflowClient, ref: registry.ModelRef) -> pd.DataFrame:
        import mlflow
        from mlflow.exceptions import MlflowException

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

    def held_out(self, client: MlflowClient, ref: registry.ModelRef) -> HeldOutPerformance | None:
        """The version's held-out record, or None when it has none (trained elsewhere, or by
        an older bikes); a malformed one is an ``InputError`` naming the version."""
        text = registry.version_tag(client, ref, HELD_OUT_TAG)
        if text is None:
            return None
        try:
            return HeldOutPerformance.from_tag(text)
        except InputError as error:
            raise InputError(f"{ref.uri}: {error}") from None

    def held_out_rows(self, record: HeldOutPerformance) -> pd.DataFrame | None:
        """The held-out rows with their predictions, when the record kept them and they can
        still be read; else None (the per-segment reference then comes from the table)."""
        import mlflow
        from mlflow.exceptions import MlflowException

        if record.predictions_uri is None:
            return None
        with tempfile.TemporaryDirectory() as directory:
            try:
                path = mlflow.artifacts.download_artifacts(
                    record.predictions_uri, dst_path=directory
                )
                return ParquetReader(path=path).read()
            except (MlflowException, OSError, InputError) as error:
                logger.warning(
                    "{}: held-out rows unreadable ({}): per-segment reference figures come "
                    "from the reference table",
                    record.predictions_uri,
                    first_line(error),
                )
                return None


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


def _undelivered_table(metadata: sa.MetaData) -> sa.Table:
    return sa.Table(
        "monitoring_alerts_undelivered",
        metadata,
        sa.Column("model_name", sa.String(200), primary_key=True),
        sa.Column("rule", sa.String(200), primary_key=True),
        sa.Column("window_start", sa.DateTime, primary_key=True),
        sa.Column("window_end", sa.DateTime, primary_key=True),
        sa.Column("channel", sa.String(200), primary_key=True),
        sa.Column("alert", sa.Text, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("first_failed_at", sa.DateTime, nullable=False),
        sa.Column("last_failed_at", sa.DateTime, nullable=False),
        sa.Column("last_error", sa.Text, nullable=False),
    )


@dataclasses.dataclass(frozen=True)
class Pending:
    """An alert a channel has not taken yet: what to send again, and how it failed so far."""

    rule: str
    start: dt.datetime
    end: dt.datetime
    channel: str
    alert: dict[str, T.Any]
    attempts: int
    last_error: str


class MonitoringTables:
    """``monitoring_metrics`` (long format, upserted: re-running a window replaces its rows),
    ``monitoring_alerts`` (which rule fired and was delivered for which window: the cooldown)
    and ``monitoring_alerts_undelivered`` (one row per alert and channel that refused it, kept
    until a later run delivers it), one set of rows per ``model_name``: several models share
    the tables. A ``monitoring_alerts`` of an earlier bikes has the same layout and is used
    as it is; the undelivered table is added beside it."""

    def __init__(self, store: Store, model_name: str = "bikes") -> None:
        self.store = store
        self.model_name = model_name
        self.metrics = _metrics_table(store.metadata)
        self.alerts = _alerts_table(store.metadata)
        self.undelivered = _undelivered_table(store.metadata)

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
                self.undelivered.create(connection, checkfirst=True)
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

    def fired(self, rule: str, start: dt.datetime, end: dt.datetime) -> bool:
        """Whether ``rule`` already fired for this window: delivered (the cooldown) or waiting
        in the undelivered table (the next run sends it again: never a second copy)."""
        where = {"rule": rule[:200], "window_start": start, "window_end": end}
        with self.store.engine.connect() as connection:
            for table in (self.alerts, self.undelivered):
                query = sa.select(sa.func.count()).where(
                    table.c.model_name == self.model_name,
                    *(table.c[name] == value for name, value in where.items()),
                )
                if connection.execute(query).scalar_one():
                    return True
        return False

    def record_delivered(self, rule: str, start: dt.datetime, end: dt.datetime) -> None:
        """The cooldown: written only once every channel took the alert."""
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
            connection.execute(insert, record)

    def record_undelivered(
        self,
        rule: str,
        start: dt.datetime,
        end: dt.datetime,
        channel: str,
        alert: dict[str, T.Any],
        error: str,
    ) -> None:
        """Keep an alert ``channel`` refused, or count one more refusal."""
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        insert = self._dialect().insert(self.undelivered)
        statement = insert.on_conflict_do_update(
            index_elements=["model_name", "rule", "window_start", "window_end", "channel"],
            set_={
                "attempts": self.undelivered.c.attempts + 1,
                "last_failed_at": insert.excluded.last_failed_at,
                "last_error": insert.excluded.last_error,
            },
        )
        record = {
            "model_name": self.model_name,
            "rule": rule[:200],
            "window_start": start,
            "window_end": end,
            "channel": channel[:200],
            "alert": json.dumps(alert, default=str),
            "attempts": 1,
            "first_failed_at": now,
            "last_failed_at": now,
            "last_error": redact(error)[:2000],
        }
        with self.store.engine.begin() as connection:
            connection.execute(statement, record)

    def clear_undelivered(
        self, rule: str, start: dt.datetime, end: dt.datetime, channel: str
    ) -> bool:
        """Forget a delivered alert's row; True when no other channel still waits for it."""
        table = self.undelivered
        same = (
            table.c.model_name == self.model_name,
            table.c.rule == rule[:200],
            table.c.window_start == start,
            table.c.window_end == end,
        )
        with self.store.engine.begin() as connection:
            connection.execute(table.delete().where(*same, table.c.channel == channel[:200]))
            left = connection.execute(sa.select(sa.func.count()).where(*same)).scalar_one()
        return not left

    def pending(self) -> list[Pending]:
        """This model's undelivered alerts, oldest window first."""
        table = self.undelivered
        query = (
            sa.select(table)
            .where(table.c.model_name == self.model_name)
            .order_by(table.c.window_start, table.c.rule, table.c.channel)
        )
        with self.store.engine.connect() as connection:
            rows = connection.execute(query).mappings().all()
        return [
            Pending(
                rule=row["rule"],
                start=row["window_start"],
                end=row["window_end"],
                channel=row["channel"],
                alert=json.loads(row["alert"]),
                attempts=int(row["attempts"]),
                last_error=row["last_error"],
            )
            for row in rows
        ]

    def read(self) -> pd.DataFrame:
        """This model's rows of ``monitoring_metrics``."""
        query = sa.select(self.metrics).where(self.metrics.c.model_name == self.model_name)
        with self.store.engine.connect() as connection:
            return pd.read_sql(query, connection)


class Channel(pdt.BaseModel, strict=True, frozen=True, extra="forbid"):
    """Where alerts go: ``log``, a ``webhook`` (JSON POST) or a ``slack`` incoming webhook.

    Webhook URLs carry secrets: give ``url_env``, the environment variable that holds it; the
    URL is never printed unredacted. A delivery that fails on the network, a 5xx or a 429 is
    tried ``retries`` more times, ``backoff`` seconds apart, doubling; a 4xx is final (a
    wrong URL does not heal). What still fails is the caller's to keep for the next run.
    Delivery is at least once: a channel that took an alert but answered too late gets it
    again.
    """

    KIND: T.Literal["log", "webhook", "slack"] = pdt.Field(
        default="log", description="log (a warning line), webhook (JSON POST) or slack."
    )
    url: str | None = pdt.Field(default=None, description="The webhook's URL (prefer url_env).")
    url_env: str | None = pdt.Field(
        default=None, description="The environment variable holding the webhook's URL."
    )
    timeout: float = pdt.Field(default=10.0, gt=0, description="HTTP timeout, seconds.")
    retries: int = pdt.Field(
        default=2,
        ge=0,
        description="Further attempts after a failed delivery within one run (network error, "
        "5xx, 429); what still fails is kept and sent again on the next run.",
    )
    backoff: float = pdt.Field(
        default=1.0, ge=0, description="Seconds before the first retry, doubled for each next."
    )

    @pdt.model_validator(mode="after")
    def _needs_an_address(self) -> Channel:
        if self.KIND != "log" and not self.url and not self.url_env:
            raise ValueError(f"a {self.KIND} channel needs url or url_env")
        return self

    @property
    def key(self) -> str:
        """The channel's name in the undelivered table: stable across runs, no secret in it
        (``url_env`` by name, a literal URL by a hash)."""
        if self.KIND == "log":
            return "log"
        if self.url_env:
            return f"{self.KIND}:env:{self.url_env}"
        digest = hashlib.sha256(str(self.url).encode()).hexdigest()[:16]
        return f"{self.KIND}:url:{digest}"

    @property
    def name(self) -> str:
        """The channel for people: its kind and its variable or redacted URL."""
        if self.KIND == "log":
            return "log"
        where = f"${self.url_env}" if self.url_env else redact_url(str(self.url))
        return f"{self.KIND} {where}"

    def resolved_url(self) -> str:
        """The webhook's URL; ``InputError`` when its variable is unset."""
        url = self.url or (os.environ.get(self.url_env) if self.url_env else None)
        if not url:
            raise InputError(
                f"alert channel {self.KIND}: environment variable {self.url_env} is not set"
            )
        return url

    def deliver(self, alerts: list[dict[str, T.Any]]) -> str | None:
        """Send ``alerts`` in one message; None when delivered, else why not (redacted)."""
        if not alerts:
            return None
        if self.KIND == "log":
            log_alerts(alerts)
            return None
        import httpx  # only a webhook channel that has alerts to send needs it

        url = self.resolved_url()
        if self.KIND == "slack":
            lines = [f"*[{a['severity']}]* {a['message']}" for a in alerts]
            payload: dict[str, T.Any] = {"text": "bikes monitoring\n" + "\n".join(lines)}
        else:
            payload = {"source": "bikes", "alerts": alerts}
        delay = self.backoff
        for attempt in range(1, self.retries + 2):
            try:
                response = httpx.post(url, json=payload, timeout=self.timeout)
            except httpx.HTTPError as error:
                failure, again = f"{type(error).__name__}: {first_line(error)}", True
            else:
                if response.is_success:
                    return None
                code = response.status_code
                failure, again = f"HTTP {code} {response.reason_phrase}", code >= 500 or code == 429
            failure = redact(failure)  # httpx quotes the URL, secret path and all
            if not again or attempt > self.retries:
                logger.error(
                    "Alert channel {} failed ({} attempt(s)): {}", self.name, attempt, failure
                )
                return failure
            logger.warning(
                "Alert channel {} failed ({}): retry {} of {} in {:g} s",
                self.name,
                failure,
                attempt,
                self.retries,
                delay,
            )
            time.sleep(delay)
            delay *= 2
        return None  # unreachable: the last attempt returns above


def log_alerts(alerts: T.Sequence[T.Mapping[str, T.Any]]) -> None:
    """The log channel: one warning line for the run, each alert at debug level.

    A backfill fires many alerts (one per rule, column and window); eighteen warning lines
    bury the story, and the results JSON and the ``monitoring_alerts`` table keep every one.
    Written in tqdm's external write mode, so no progress bar is drawn through the lines."""
    from tqdm import tqdm

    with tqdm.external_write_mode():
        if len(alerts) == 1:
            logger.warning("ALERT [{severity}] {message}", **alerts[0])
            return
        logger.warning(alert_summary(alerts))
        for alert in alerts:
            logger.debug("ALERT [{severity}] {message}", **alert)


def alert_summary(alerts: T.Sequence[T.Mapping[str, T.Any]]) -> str:
    """``ALERTS: 18 fired (3 critical, 15 warning): performance_degradation x10, ...``: counts
    by severity, then by check (most first), where the details are."""
    severities = collections.Counter(str(alert["severity"]) for alert in alerts)
    checks = collections.Counter(str(alert.get("check", alert.get("rule"))) for alert in alerts)
    return (
        f"ALERTS: {len(alerts)} fired "
        f"({', '.join(f'{n} {severity}' for severity, n in severities.most_common())}): "
        f"{', '.join(f'{check} x{n}' for check, n in checks.most_common())}; each in the "
        "results JSON, the monitoring_alerts table and the debug log"
    )
