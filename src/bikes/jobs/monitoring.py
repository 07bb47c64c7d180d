"""Watch production: each window against the reference, to JSON, MLflow, a table and alerts."""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import itertools
import json
import operator
import time
import typing as T

import pandas as pd
import pydantic as pdt
from loguru import logger
from tqdm import tqdm

from bikes.core.comparison import Slicing
from bikes.core.contract import Contract
from bikes.core.errors import (
    AlertDeliveryError,
    ContractError,
    InputError,
    MonitoringFindingError,
)
from bikes.core.monitoring import (
    STATUSES,
    DriftSettings,
    Monitor,
    PerformanceSettings,
    ReferenceOrigin,
    long_rows,
)
from bikes.core.redaction import redact
from bikes.core.reference import HELD_OUT_TAG
from bikes.io import registry, reports
from bikes.io.contracts import CONTRACT_DESCRIPTION, ContractSpec, resolve_contract
from bikes.io.datasets import ParquetReader, check_writable, write_text
from bikes.io.lake import LakeReader
from bikes.io.mlflow_worker import LoggedMetric
from bikes.io.monitoring import (
    ChampionReference,
    Channel,
    MonitoringTables,
    StoreReader,
    Window,
)
from bikes.io.spark import SparkSettings
from bikes.io.store import Store, configured_uri
from bikes.jobs.base import Job, Locals

if T.TYPE_CHECKING:
    from bikes.spark.job import SparkWindow
    from bikes.spark.monitoring import SparkMonitor

COMPARISONS = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
}


class AlertRule(pdt.BaseModel, strict=True, frozen=True, extra="forbid"):
    """Fire when a window's ``check`` on ``column`` (``*``: any) compares true to ``threshold``."""

    check: str = pdt.Field(
        description="A check of the monitoring_metrics rows: status, dataset_drift_share, "
        "drift_score, performance_degradation, rejected_share, missing_share, label_coverage..."
    )
    column: str = pdt.Field(default="*", description="The row's column; * matches any.")
    comparison: T.Literal[">", ">=", "<", "<=", "=="] = pdt.Field(
        default=">=", description="How the row's value compares to threshold to fire."
    )
    threshold: float = pdt.Field(description="The value compared with.")
    severity: T.Literal["info", "warning", "critical"] = pdt.Field(
        default="warning", description="Carried to the channels."
    )

    @property
    def key(self) -> str:
        return f"{self.check}:{self.column}{self.comparison}{self.threshold:g}"

    def matches(self, row: dict[str, T.Any]) -> bool:
        return bool(
            row["check"] == self.check
            and (self.column == "*" or row["column"] == self.column)
            and COMPARISONS[self.comparison](row["value"], self.threshold)
        )


# status 2 is detected, 3 no_data: both alert.
DEFAULT_RULES = [
    AlertRule(check="status", comparison=">=", threshold=2, severity="critical"),
    AlertRule(check="dataset_drift_share", threshold=0.5, severity="warning"),
]


class MonitoringJob(Job):
    """Compare production windows (``current``) with a ``reference`` and report everywhere.

    Any contract: the watched columns are the contract's features (the reference model's own
    contract by default, or every other column of a parquet reference), drift and quality
    follow each feature's kind, performance the task's metrics.
    """

    KIND: T.Literal["MonitoringJob"] = "MonitoringJob"

    registered_model: str = pdt.Field(
        default="bikes",
        description="The model monitored: the store rows of this model_name, the default "
        "reference models:/<registered_model>@champion, and the model_name of the "
        "monitoring_metrics rows.",
    )
    contract: ContractSpec | None = pdt.Field(
        default=None,
        description=CONTRACT_DESCRIPTION + " With a parquet reference and no contract: every "
        "column that is not target, prediction, score, timestamp or id is a feature.",
    )
    reference: ChampionReference | ParquetReader | LakeReader = pdt.Field(
        default_factory=ChampionReference,
        discriminator="KIND",
        description="The baseline: a registered version's reference data (ChampionReference: "
        "drift against its training rows, performance against its held_out_performance "
        "record, else its in-sample fit, flagged optimistic) or any parquet table "
        "(ParquetReader) with the features, and, for performance, the target and prediction "
        "columns, or captured rows of the parquet lake (LakeReader, e.g. a past period).",
    )
    current: StoreReader | ParquetReader | LakeReader = pdt.Field(
        default_factory=StoreReader,
        discriminator="KIND",
        description="Production: windows of the capture store (StoreReader), of the parquet "
        "lake bikes confs/export.yaml writes (LakeReader: windows by event time, as the "
        "store's; monitoring at scale reads it, not the store) or one parquet table "
        "(ParquetReader; its window spans the contract's timestamp column).",
    )
    columns: list[str] | None = pdt.Field(
        default=None,
        description="Watch only these columns (each must be in the reference). Default: "
        "every feature of the contract.",
    )
    drift: DriftSettings = pdt.Field(default=DriftSettings(), description="Drift decisions.")
    slicing: Slicing | None = pdt.Field(
        default=None,
        description="Segments scored separately with the watched metric: the contract's "
        "segments by default; hour_column adds hour bands. Its metric and "
        "max_relative_regression are the gate's, unused here.",
    )
    performance: PerformanceSettings = pdt.Field(
        default=PerformanceSettings(),
        description="The watched metric (rmse for regression, f1 for classification by "
        "default) and the share it may worsen before the window is degraded (0.2).",
    )
    results_path: str = pdt.Field(
        default="outputs/monitoring.json", description="The results, JSON."
    )
    report_path: str = pdt.Field(default="outputs/monitoring.html", description="The HTML report.")
    metrics_store_uri: str | None = pdt.Field(
        default=None,
        description="Database of the monitoring_metrics table. Default: the current "
        "StoreReader's store; none for a parquet current.",
    )
    alerts: list[AlertRule] = pdt.Field(
        default_factory=lambda: list(DEFAULT_RULES),
        description="Rules on the monitoring_metrics rows of each window.",
    )
    channels: list[Channel] = pdt.Field(
        default_factory=lambda: [Channel()],
        description="Where fired alerts go. An alert a channel does not take is kept in "
        "monitoring_alerts_undelivered, sent again on the next run, listed in the results' "
        "alerts_undelivered, and exits 6 (unless a finding exits 4).",
    )
    fail_on: T.Literal["never", "potential", "detected"] = pdt.Field(
        default="never",
        description="Exit 4 when the status reaches this (statuses in order: no_detection, "
        "potential, detected, no_data: a window without rows stops any fail_on but never).",
    )
    run_name: str = pdt.Field(default="monitoring", description="The MLflow run's name.")
    engine: T.Literal["pandas", "spark"] = pdt.Field(
        default="pandas",
        description="pandas: each window in this process's memory. spark: the statistics as "
        "Spark aggregations over parquet (a file, folder or glob) or the lake, never collected "
        "(needs the spark extra and Java 17; see README, Scale out).",
    )
    spark: SparkSettings = pdt.Field(
        default=SparkSettings(),
        description="The spark engine's session: master, app_name and conf passed through.",
    )
    on_finding: T.Literal["none", "retrain"] = pdt.Field(
        default="none",
        description="retrain: a window whose status is detected starts the retraining job "
        "(job.retraining), at most once per retrain_cooldown; its outcome is in the "
        "retraining's results_path and on this run (tags retraining, retraining_run_id).",
    )
    retraining: str | dict[str, T.Any] = pdt.Field(
        default="confs/retraining.yaml",
        description="The retraining job's config for on_finding: retrain, a path or inline "
        "(config: <path> plus overrides); its store defaults to the current StoreReader's.",
    )
    retrain_cooldown: str = pdt.Field(
        default="7D",
        description="After a finding started a retraining, further findings wait this long "
        "(a pandas duration): one drift episode retrains once.",
    )

    @pdt.model_validator(mode="after")
    def _retraining_valid(self) -> T.Self:
        if self.on_finding == "retrain":  # the retraining's config fails now, not at a finding
            from bikes.jobs.retraining import check_cooldown, monitoring_retraining

            check_cooldown(self.retrain_cooldown)
            monitoring_retraining(self)
        return self

    # From the CLI, MLflow's import and store (about 4 s, most of this job's fixed cost) load in
    # the background while the reference and the first window are read and scored; ``run``
    # waits for them (``mlflow_service.ready()``) before its first write or MLflow call.
    waits_for_mlflow: T.ClassVar[bool] = True

    @property
    def mlflow_worker(self) -> bool:
        """MLflow may run in a worker process (``MlflowService.defer_start(worker=True)``):
        this job's only MLflow work is then the run it logs at its end. A champion reference
        (read through MLflow), a retraining on finding and the Spark engine keep it here."""
        return (
            not isinstance(self.reference, ChampionReference)
            and self.on_finding == "none"
            and self.engine == "pandas"
        )

    def run(self) -> Locals:
        self._check_channels()
        self._check_outputs()
        monitor, windows, count = self._prepared()
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        results = []
        fired: list[Fired] = []
        tags = {"model_name": self.registered_model}
        progress = tqdm(
            windows, total=count, desc="monitoring windows", unit="window", disable=count < 2
        )
        scored = (
            (window, monitor.window(window.frame, window.start, window.end, now, window.rejected))
            for window in progress
        )
        first = list(itertools.islice(scored, 1))  # scored while MLflow starts
        self.mlflow_service.ready()  # an unusable MLflow store fails here, before any write
        tables = self._tables()
        metrics: list[LoggedMetric] = []
        with self.mlflow_service.run(self.run_name, tags) as run:
            for step, (window, result) in enumerate(itertools.chain(first, scored)):
                result["model_name"] = self.registered_model
                _warn(result)
                rows = long_rows(result)
                result["alerts"] = self._alerts(rows, window.start, window.end, tables, fired)
                if tables is not None and window.start is not None and window.end is not None:
                    tables.write(window.start, window.end, result["model_version"], rows)
                metrics.extend(_metrics(rows, step))
                progress.set_postfix_str(f"{str(window.start)[:10]} {result['status']}")
                results.append(result)
            undelivered = self._deliver(fired, tables)
            document = self._document(results)
            document["alerts_undelivered"] = undelivered
            render = functools.partial(
                reports.render,
                results,
                monitor.detectors,
                monitor.window_shares,
                title=f"{self.registered_model} monitoring",
                compared=reports.Compared(
                    reference=monitor.origin.name,
                    reference_rows=monitor.reference_rows,
                    reference_period=monitor.reference_period,
                    contract=monitor.contract,
                    contract_source="from the job's config"
                    if self.contract is not None
                    else "the model version's own",
                ),
            )
            # Every window's metrics and the run's tags in one log_batch (a SQL store writes it
            # as two transactions, where a call per window and one for the tags were one
            # each: a backfill's commits no longer grow with its windows, 10-30 ms apiece on
            # SQLite), logged while this thread renders and writes the results and the
            # report: by a thread whose commits wait on the disk without holding the GIL, or
            # by the MLflow worker process (from the CLI: see ``mlflow_worker``).
            run.log(
                metrics,
                {"status": document["status"], "alerts_undelivered": str(len(undelivered))},
            )
            path = write_text(
                self.results_path, redact(json.dumps(document, indent=2, default=str))
            )
            report = write_text(self.report_path, redact(render()))
            run_id = run.finish([(str(path), "monitoring"), (str(report), "monitoring")])
        logger.success(
            "Monitoring {} of {}: {} window(s), results in {}, report in {}",
            document["status"],
            self.registered_model,
            len(results),
            path,
            report,
        )
        retraining = self._retrain_on_finding(results, run_id)
        if retraining and retraining.get("status") != "no_finding":  # the report tells it too
            write_text(self.report_path, redact(render(retraining=retraining)))
            self.mlflow_service.client().log_artifact(run_id, str(report), "monitoring")
        self._fail_if_asked(document["status"])
        self._fail_if_undelivered(undelivered)
        return {
            "run_id": run_id,
            "status": document["status"],
            "results": document,
            "retraining": retraining,
        }

    def _prepared(
        self,
    ) -> tuple[Monitor | SparkMonitor, T.Iterable[Window | SparkWindow], int]:
        """The monitor and the windows (and how many): pandas frames, or with ``engine:
        spark`` Spark DataFrames judged by aggregations (PySpark imported only then)."""
        if self.engine == "spark":
            from bikes.spark.job import prepare

            return prepare(self)
        monitor = self._monitor()
        windows, count = self._windows(monitor.contract)
        return monitor, windows, count

    def _retrain_on_finding(self, results: list[dict[str, T.Any]], run_id: str) -> Locals | None:
        if self.on_finding == "none":
            return None
        from bikes.jobs.retraining import retrain_on_finding

        return retrain_on_finding(self, [result["status"] for result in results], run_id)

    def _monitor(self) -> Monitor:
        """The monitor, built here so the raw reference frame is freed as soon as it exists."""
        reference, contract, origin = self._reference()
        source = origin.name
        contract.check_kinds(reference, source)
        if contract.target is not None and contract.target not in reference.columns:
            raise ContractError(
                f"job.contract.target: {contract.target!r} is not a column of {source}"
            )
        if contract.target is None:
            logger.info("No target in the contract: no performance, no target drift")
        if contract.prediction not in reference.columns:
            logger.warning(
                "{}: no {!r} column: no reference performance, no prediction drift",
                source,
                contract.prediction,
            )
        columns = self._columns(reference, contract, source)
        logger.info(
            "Watching {} column(s) of {} ({}): {}",
            len(columns),
            self.registered_model,
            contract.task,
            ", ".join(columns),
        )
        monitor = Monitor(
            reference,
            contract,
            columns,
            self.drift,
            self._slicing(contract),
            self.performance,
            origin,
        )
        _log_reference_performance(monitor)
        return monitor

    def _reference(self) -> tuple[pd.DataFrame, Contract, ReferenceOrigin]:
        """The reference table, the contract it is read with, and where it came from: a
        version's training rows (in-sample) with its held-out record, or a parquet table."""
        if isinstance(self.reference, ChampionReference):
            client = self.mlflow_service.client()
            ref = registry.resolve(client, self.reference.uri(self.registered_model))
            contract = resolve_contract(client, ref, self.contract)
            frame = self.reference.read(client, ref)
            record = self.reference.held_out(client, ref)
            origin = ReferenceOrigin(
                name=f"the reference data of {ref.uri}",
                in_sample=True,
                held_out=record,
                held_out_rows=None if record is None else self.reference.held_out_rows(record),
            )
            return frame, contract, origin
        if isinstance(self.reference, LakeReader):  # captured rows: the store's column names
            frame = _contract_names(
                self.reference.read(self.registered_model), self.contract or Contract()
            )
        else:
            frame = self.reference.read()
        contract = (self.contract or Contract()).with_columns(frame)
        return frame, contract, ReferenceOrigin(name=self.reference.source)

    def _columns(self, reference: pd.DataFrame, contract: Contract, source: str) -> list[str]:
        """The contract's features by default; ``job.columns`` may narrow (or name others).
        Every watched column must be in the reference: without it nothing can be compared."""
        if self.columns is not None:
            missing = [column for column in self.columns if column not in reference.columns]
            if missing:
                raise InputError(f"job.columns: {', '.join(missing)} not in {source}")
            return list(self.columns)
        missing = [c for c in contract.feature_names if c not in reference.columns]
        if missing:
            raise ContractError(
                f"job.contract.features: {', '.join(missing)} not in {source} (name the "
                "columns to watch in job.columns, or fix the contract)"
            )
        return contract.feature_names

    def _slicing(self, contract: Contract) -> Slicing:
        """The contract's segments unless ``job.slicing.columns`` says others, plus hour
        bands when ``job.slicing.hour_column`` is set."""
        slicing = self.slicing or Slicing()
        return slicing.model_copy(
            update={
                "columns": list(contract.segments) if slicing.columns is None else slicing.columns
            }
        )

    def _windows(self, contract: Contract) -> tuple[T.Iterable[Window], int]:
        """The windows (read lazily from a store) and how many there are."""
        if isinstance(self.current, StoreReader | LakeReader):  # the lake has the store's names
            count = len(self.current.bounds())
            names = {"prediction": contract.prediction}
            if contract.target is not None:
                names["target"] = contract.target
            windows = (
                dataclasses.replace(w, frame=w.frame.rename(columns=names))
                for w in self.current.windows(self.registered_model)
            )
            return windows, count
        frame = self.current.read()
        timestamp = contract.timestamp
        if timestamp is None or timestamp not in frame.columns:
            return [Window(None, None, frame)], 1
        times = pd.to_datetime(frame[timestamp])
        frame = frame.assign(**{timestamp: times}).rename(columns={timestamp: "event_time"})
        return [Window(times.min().to_pydatetime(), times.max().to_pydatetime(), frame)], 1

    def _tables(self) -> MonitoringTables | None:
        uri = self.metrics_store_uri
        if uri is None and isinstance(self.current, StoreReader):
            return _created(MonitoringTables(self.current.store(), self.registered_model))
        if uri is None:
            return None
        return _created(MonitoringTables(Store(configured_uri(uri)), self.registered_model))

    def _alerts(
        self,
        rows: list[dict[str, T.Any]],
        start: T.Any,
        end: T.Any,
        tables: MonitoringTables | None,
        fired: list[Fired],
    ) -> list[dict[str, T.Any]]:
        """The alerts this window fires (appended to ``fired`` for ``_deliver``); a rule that
        already fired for this window, delivered or still waiting, does not fire again."""
        alerts = []
        for rule in self.alerts:
            for row in rows:
                if not rule.matches(row):
                    continue
                key = f"{rule.key}:{row['column']}"
                if (
                    tables is not None
                    and start is not None
                    and end is not None
                    and tables.fired(key, start, end)
                ):
                    continue  # cooldown: this rule already fired for this window
                alert = {
                    "rule": rule.key,
                    "severity": rule.severity,
                    "model_name": self.registered_model,
                    "check": row["check"],
                    "column": row["column"],
                    "value": row["value"],
                    "message": f"{self.registered_model}: {row['check']} on {row['column']} "
                    f"= {row['value']:.4g} [{row['status']}] "
                    f"({rule.comparison} {rule.threshold:g}) for window {start} .. {end}",
                }
                alerts.append(alert)
                fired.append(Fired(key, start, end, alert))
        return alerts

    def _deliver(
        self, fired: list[Fired], tables: MonitoringTables | None
    ) -> list[dict[str, T.Any]]:
        """Send this run's alerts, and those earlier runs could not deliver, once per channel;
        write the cooldown of what every channel took and keep the rest for the next run.

        Returns what stays undelivered (for the results and the exit code). Without a metrics
        table (a parquet current and no ``metrics_store_uri``) nothing can be kept: an
        undelivered alert is reported, and lost to the next run.
        """
        channels = list({channel.key: channel for channel in self.channels}.values())
        pending = tables.pending() if tables is not None else []
        known = {channel.key for channel in channels}
        orphans = [p for p in pending if p.channel not in known]
        if orphans:
            logger.warning(
                "{} undelivered alert(s) wait for channel(s) no longer configured ({}): kept in "
                "monitoring_alerts_undelivered; delete those rows to forget them",
                len(orphans),
                ", ".join(sorted({p.channel for p in orphans})),
            )
        errors = {}
        for channel in channels:
            retried = [p.alert for p in pending if p.channel == channel.key]
            errors[channel.key] = channel.deliver([f.alert for f in fired] + retried)
        undelivered = []
        failed = [(c, str(errors[c.key])) for c in channels if errors[c.key] is not None]
        for alert in fired:
            keep = tables if alert.start is not None and alert.end is not None else None
            if keep is not None and not failed:
                keep.record_delivered(alert.key, alert.start, alert.end)
            for channel, error in failed:
                if keep is not None:
                    keep.record_undelivered(
                        alert.key, alert.start, alert.end, channel.key, alert.alert, error
                    )
                undelivered.append(
                    _undelivered(alert.alert, alert.start, alert.end, channel, 1, error)
                )
        for waiting in pending:
            owner = next((c for c in channels if c.key == waiting.channel), None)
            if owner is None or tables is None:
                continue
            problem = errors[owner.key]
            if problem is None:
                if tables.clear_undelivered(waiting.rule, waiting.start, waiting.end, owner.key):
                    tables.record_delivered(waiting.rule, waiting.start, waiting.end)
                continue
            tables.record_undelivered(
                waiting.rule, waiting.start, waiting.end, owner.key, waiting.alert, problem
            )
            undelivered.append(
                _undelivered(
                    waiting.alert, waiting.start, waiting.end, owner, waiting.attempts + 1, problem
                )
            )
        if undelivered and tables is None:
            logger.warning(
                "{} alert(s) undelivered and not kept for the next run: no metrics table (set "
                "job.metrics_store_uri)",
                len(undelivered),
            )
        for alert in fired:
            alert.alert["delivered"] = not failed
        return undelivered

    def _check_outputs(self) -> None:
        """The output paths and the store, before anything is read, computed or written: a
        bad one used to fail after the metrics and alert rows (exit 1, a traceback), and a
        store never created was created empty. Window and step are checked with the config."""
        check_writable(self.results_path, "job.results_path")
        check_writable(self.report_path, "job.report_path")
        if isinstance(self.current, StoreReader):
            store = self.current.store()
            try:
                store.check_captured()
            except InputError as error:
                raise InputError(f"job.current.uri: {error}") from None
            finally:
                store.dispose()

    def _check_channels(self) -> None:
        """Each webhook's variable is set: checked before anything is computed or written."""
        for channel in self.channels:
            if channel.KIND != "log":
                channel.resolved_url()

    def _fail_if_undelivered(self, undelivered: list[dict[str, T.Any]]) -> None:
        """Exit 6 for alerts no channel took. A finding that exits 4 (``fail_on``) is raised
        first and wins: the results JSON lists the undelivered alerts either way."""
        if not undelivered:
            return
        channels = sorted({u["channel"] for u in undelivered})
        raise AlertDeliveryError(
            f"{len(undelivered)} alert(s) not delivered to {', '.join(channels)} "
            f"({undelivered[0]['error']}); kept in monitoring_alerts_undelivered and sent again "
            "on the next run"
        )

    def _document(self, results: list[dict[str, T.Any]]) -> dict[str, T.Any]:
        worst = max((STATUSES.index(r["status"]) for r in results), default=0)
        if len(results) == 1:
            return results[0]
        return {"status": STATUSES[worst], "model_name": self.registered_model, "windows": results}

    def _fail_if_asked(self, status: str) -> None:
        if self.fail_on != "never" and STATUSES.index(status) >= STATUSES.index(self.fail_on):
            raise MonitoringFindingError(
                f"monitoring status {status} (job.fail_on: {self.fail_on})"
            )


@dataclasses.dataclass(frozen=True)
class Fired:
    """An alert fired in this run: its cooldown key (rule and column) and window."""

    key: str
    start: T.Any
    end: T.Any
    alert: dict[str, T.Any]


def _undelivered(
    alert: dict[str, T.Any], start: T.Any, end: T.Any, channel: Channel, attempts: int, error: str
) -> dict[str, T.Any]:
    """One line of the results' ``alerts_undelivered``: no URL, only the channel's name."""
    return {
        "rule": alert["rule"],
        "column": alert["column"],
        "severity": alert["severity"],
        "window_start": start,
        "window_end": end,
        "channel": channel.name,
        "runs_attempted": attempts,
        "error": error,
        "message": alert["message"],
    }


def _log_reference_performance(monitor: Monitor | SparkMonitor) -> None:
    """Say where the reference performance comes from; warn when it is the in-sample fit."""
    source = monitor.reference_source
    if monitor.target is None or monitor.reference_performance is None:
        return
    figure = monitor.reference_performance.get(monitor.metric)
    if source["optimistic"]:
        logger.warning(
            "Reference performance: {}: {} (set the version's {} tag: bikes training and the "
            "gate write it)",
            source["source"],
            source["note"],
            HELD_OUT_TAG,
        )
    else:
        logger.info(
            "Reference performance {}={}: {} ({})",
            monitor.metric,
            "n/a" if figure is None else f"{figure:.4g}",
            source["source"],
            source["note"],
        )


def _warn(result: dict[str, T.Any]) -> None:
    """What a person must not miss in the log: a window without rows, a feature gone."""
    window = f"{result['window']['start']} .. {result['window']['end']}"
    quality = result["data_quality"]
    if result["status"] == "no_data":
        logger.warning(
            "Window {}: no rows ({} rejected): status no_data", window, quality["rejected_rows"]
        )
    if quality["missing_columns"]:
        logger.warning(
            "Window {}: feature(s) {} missing from the current data (reported as "
            "missing_column, not scored for drift)",
            window,
            ", ".join(quality["missing_columns"]),
        )


def _contract_names(frame: pd.DataFrame, contract: Contract) -> pd.DataFrame:
    """Captured rows (the store's or the lake's) with the contract's prediction and target."""
    names = {"prediction": contract.prediction}
    if contract.target is not None:
        names["target"] = contract.target
    return frame.rename(columns=names)


def _created(tables: MonitoringTables) -> MonitoringTables:
    tables.create()
    return tables


def _metric_name(row: dict[str, T.Any]) -> str:
    column = "".join(ch if ch.isalnum() or ch in "_-." else "_" for ch in row["column"])
    return row["check"] if column == "_" else f"{row['check']}.{column}"


def _metrics(rows: list[dict[str, T.Any]], step: int) -> list[LoggedMetric]:
    """A window's MLflow metrics (one per name: the last row of a name wins, as a dict of
    them did), stamped now: ``mlflow.log_metrics`` made the same, one call per window. Plain
    tuples: the job in worker mode never imports MLflow."""
    stamp = int(time.time() * 1000)
    values = {_metric_name(row): row["value"] for row in rows}
    return [LoggedMetric(name, value, stamp, step) for name, value in values.items()]
