"""Watch production: each window against the reference, to JSON, MLflow, a table and alerts."""

from __future__ import annotations

import datetime as dt
import json
import operator
import typing as T

import mlflow
import pandas as pd
import pydantic as pdt
from loguru import logger
from tqdm import tqdm

from bikes.core import schemas
from bikes.core.comparison import Slicing
from bikes.core.errors import InputError, MonitoringFindingError
from bikes.core.monitoring import STATUSES, DriftSettings, Monitor, long_rows
from bikes.io import reports
from bikes.io.datasets import ParquetReader, write_text
from bikes.io.monitoring import (
    ChampionReference,
    Channel,
    MonitoringTables,
    StoreReader,
    Window,
)
from bikes.io.store import Store, configured_uri
from bikes.jobs.base import Job, Locals

COMPARISONS = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
}


class AlertRule(pdt.BaseModel, strict=True, frozen=True, extra="forbid"):
    """Fire when a window's ``check`` on ``column`` (``*``: any) compares true to ``threshold``."""

    check: str
    column: str = "*"
    comparison: T.Literal[">", ">=", "<", "<=", "=="] = ">="
    threshold: float
    severity: T.Literal["info", "warning", "critical"] = "warning"

    @property
    def key(self) -> str:
        return f"{self.check}:{self.column}{self.comparison}{self.threshold:g}"

    def matches(self, row: dict[str, T.Any]) -> bool:
        return bool(
            row["check"] == self.check
            and (self.column == "*" or row["column"] == self.column)
            and COMPARISONS[self.comparison](row["value"], self.threshold)
        )


DEFAULT_RULES = [
    AlertRule(check="status", comparison=">=", threshold=2, severity="critical"),
    AlertRule(check="dataset_drift_share", threshold=0.5, severity="warning"),
]


class MonitoringJob(Job):
    """Compare production windows (``current``) with a ``reference`` and report everywhere."""

    KIND: T.Literal["MonitoringJob"] = "MonitoringJob"

    reference: ChampionReference | ParquetReader = pdt.Field(
        default_factory=ChampionReference, discriminator="KIND"
    )
    current: StoreReader | ParquetReader = pdt.Field(
        default_factory=StoreReader, discriminator="KIND"
    )
    columns: list[str] | None = None
    drift: DriftSettings = DriftSettings()
    slicing: Slicing = Slicing()
    performance_threshold: float = pdt.Field(default=0.2, gt=0)  # RMSE up 20%: degraded
    results_path: str = "outputs/monitoring.json"
    report_path: str = "outputs/monitoring.html"
    metrics_store_uri: str | None = None  # default: the current reader's store, else none
    alerts: list[AlertRule] = pdt.Field(default_factory=lambda: list(DEFAULT_RULES))
    channels: list[Channel] = pdt.Field(default_factory=lambda: [Channel()])
    fail_on: T.Literal["never", "potential", "detected"] = "never"
    run_name: str = "monitoring"

    def run(self) -> Locals:
        windows = self._windows()
        monitor = self._monitor(windows)
        tables = self._tables()
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        results = []
        with mlflow.start_run(run_name=self.run_name) as run:
            progress = tqdm(
                windows, desc="monitoring windows", unit="window", disable=len(windows) < 2
            )
            for step, (start, end, frame) in enumerate(progress):
                result = monitor.window(frame, start, end, now)
                rows = long_rows(result)
                result["alerts"] = self._alerts(rows, start, end, tables)
                if tables is not None and start is not None and end is not None:
                    tables.write(start, end, result["model_version"], rows)
                mlflow.log_metrics({_metric_name(r): r["value"] for r in rows}, step=step)
                progress.set_postfix_str(f"{str(start)[:10]} {result['status']}")
                results.append(result)
            document = self._document(results)
            path = write_text(self.results_path, json.dumps(document, indent=2, default=str))
            report = write_text(
                self.report_path, reports.render(results, monitor.detectors, monitor.latest_shares)
            )
            mlflow.log_artifact(str(path), artifact_path="monitoring")
            mlflow.log_artifact(str(report), artifact_path="monitoring")
            mlflow.set_tag("status", document["status"])
        logger.success(
            "Monitoring {}: {} window(s), results in {}, report in {}",
            document["status"],
            len(results),
            path,
            report,
        )
        self._fail_if_asked(document["status"])
        return {"run_id": run.info.run_id, "status": document["status"], "results": document}

    def _monitor(self, windows: list[Window]) -> Monitor:
        """The monitor, built here so the raw reference frame is freed as soon as it exists."""
        reference = self._reference()
        columns = self._columns(reference, windows)
        return Monitor(reference, columns, self.drift, self.slicing, self.performance_threshold)

    def _reference(self) -> pd.DataFrame:
        if isinstance(self.reference, ChampionReference):
            return self.reference.read(self.mlflow_service.client())
        return self.reference.read()

    def _windows(self) -> list[Window]:
        if isinstance(self.current, StoreReader):
            return self.current.windows()
        frame = self.current.read()
        times = frame[schemas.TIMESTAMP] if schemas.TIMESTAMP in frame.columns else None
        frame = frame.rename(columns={schemas.TIMESTAMP: "event_time"})
        if times is None:
            return [(None, None, frame)]
        return [(times.min().to_pydatetime(), times.max().to_pydatetime(), frame)]

    def _columns(self, reference: pd.DataFrame, windows: list[Window]) -> list[str]:
        """The contract's features present in both by default; ``job.columns`` may name any."""

        def in_both(column: str) -> bool:
            return column in reference.columns and all(
                column in frame.columns or frame.empty for _, _, frame in windows
            )

        if self.columns is None:
            return [column for column in schemas.FEATURE_NAMES if in_both(column)]
        missing = [column for column in self.columns if not in_both(column)]
        if missing:
            raise InputError(
                f"job.columns: {', '.join(missing)} not in both reference and current data"
            )
        return list(self.columns)

    def _tables(self) -> MonitoringTables | None:
        uri = self.metrics_store_uri
        if uri is None and isinstance(self.current, StoreReader):
            return _created(MonitoringTables(self.current.store()))
        if uri is None:
            return None
        return _created(MonitoringTables(Store(configured_uri(uri))))

    def _alerts(
        self,
        rows: list[dict[str, T.Any]],
        start: T.Any,
        end: T.Any,
        tables: MonitoringTables | None,
    ) -> list[dict[str, T.Any]]:
        fired = []
        for rule in self.alerts:
            for row in rows:
                if not rule.matches(row):
                    continue
                if (
                    tables is not None
                    and start is not None
                    and end is not None
                    and not tables.first_firing(f"{rule.key}:{row['column']}", start, end)
                ):
                    continue  # cooldown: this rule already fired for this window
                fired.append(
                    {
                        "rule": rule.key,
                        "severity": rule.severity,
                        "check": row["check"],
                        "column": row["column"],
                        "value": row["value"],
                        "message": f"{row['check']} on {row['column']} = {row['value']:.4g} "
                        f"[{row['status']}] "
                        f"({rule.comparison} {rule.threshold:g}) for window {start} .. {end}",
                    }
                )
        for channel in self.channels:
            channel.send(fired)
        return fired

    def _document(self, results: list[dict[str, T.Any]]) -> dict[str, T.Any]:
        worst = max((STATUSES.index(r["status"]) for r in results), default=0)
        if len(results) == 1:
            return results[0]
        return {"status": STATUSES[worst], "windows": results}

    def _fail_if_asked(self, status: str) -> None:
        if self.fail_on != "never" and STATUSES.index(status) >= STATUSES.index(self.fail_on):
            raise MonitoringFindingError(
                f"monitoring status {status} (job.fail_on: {self.fail_on})"
            )


def _created(tables: MonitoringTables) -> MonitoringTables:
    tables.create()
    return tables


def _metric_name(row: dict[str, T.Any]) -> str:
    column = "".join(ch if ch.isalnum() or ch in "_-." else "_" for ch in row["column"])
    return row["check"] if column == "_" else f"{row['check']}.{column}"
