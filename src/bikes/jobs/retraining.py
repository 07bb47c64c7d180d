"""Close the loop: retrain on what production labelled, gate against the champion, promote.

The training rows are the capture store's labelled predictions over a window (features joined
with their labels), optionally after the original training table. The newest ``holdout`` of
those labels is never trained on: the gate judges the new version against ``@champion`` on
them (plus, by default, the gate config's own test rows), so the verdict is about rows
neither model saw. Training and the gate are the training and evaluations jobs themselves,
run from their configs: the same model, contract, thresholds, bootstrap and promotion rule.

The new version carries its lineage (``retrain_window_start``, ``retrain_window_end``,
``retrain_rows``, ``retrain_trigger``, ``retrain_monitoring_run_id``); the training and gate
runs are nested under a ``retraining`` run that holds the results. A blocked gate exits 3,
a champion moved meanwhile exits 5, as for the evaluations job. The prediction service picks
a promoted champion up by polling its alias (``serving.poll_interval``).

Triggers: a schedule (``docker/crontab``), by hand (``invoke retrain``), or a monitoring
finding (``MonitoringJob.on_finding: retrain``, through ``retrain_on_finding``, with a
cooldown kept as a tag of the registered model so one drift episode retrains once).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import typing as T
from pathlib import Path

import mlflow
import omegaconf as oc
import pandas as pd
import pydantic as pdt
import sqlalchemy as sa
from loguru import logger
from mlflow.entities import RunStatus
from mlflow.models.evaluation.validation import ModelValidationFailedException
from mlflow.tracking import MlflowClient

from bikes.core.contract import Contract, as_naive_utc
from bikes.core.errors import ConfigError, InputError, PromotionConflictError, first_line
from bikes.core.gate import VALIDATION_RUN_TAG
from bikes.core.redaction import redact
from bikes.io import registry
from bikes.io.configs import load_config
from bikes.io.datasets import ParquetReader, ParquetWriter, check_writable, write_text
from bikes.io.services import MlflowService
from bikes.io.store import DEFAULT_STORE_URI, Store, StoreSchema, StoreUri, open_store
from bikes.jobs.base import Job, Locals
from bikes.jobs.evaluations import EvaluationsJob
from bikes.jobs.training import TrainingJob

if T.TYPE_CHECKING:
    from bikes.jobs.monitoring import MonitoringJob

Trigger = T.Literal["schedule", "finding", "manual"]

# Tags of the new model version (and of its training run): where its rows came from.
WINDOW_START_TAG = "retrain_window_start"
WINDOW_END_TAG = "retrain_window_end"
ROWS_TAG = "retrain_rows"
TRIGGER_TAG = "retrain_trigger"
MONITORING_RUN_TAG = "retrain_monitoring_run_id"
RETRAINING_RUN_TAG = "retraining_run_id"
STORE_ROWS_TAG = "retrain_store_rows"
HOLDOUT_ROWS_TAG = "retrain_holdout_rows"
TRAINING_DATA_TAG = "retrain_training_data"
# On the registered model: the last retraining a monitoring finding started (the cooldown).
LAST_FINDING_TAG = "retrain_last_finding"
ROW_FILES = ("train.parquet", "gate.parquet")  # in rows_dir: what training and the gate read
PARENT_RUN_TAG = "mlflow.parentRunId"  # MLflow's own: the UI nests a run under its parent


def _job_config(value: T.Any) -> T.Any:
    """A job config given as the path of a YAML file (its ``job`` mapping), or inline; an
    inline mapping may name the file it extends with ``config`` (its keys win)."""
    if isinstance(value, str):
        value = {"config": value}
    if not isinstance(value, dict) or "config" not in value:
        return value
    path = value["config"]
    if not isinstance(path, str):
        raise ValueError(f"config: the path of a YAML file, not {path!r}")
    try:
        loaded = load_config(path)
    except ConfigError as error:
        raise ValueError(str(error)) from None
    base = loaded.get("job", loaded)
    if not isinstance(base, oc.DictConfig):
        raise ValueError(f"{path}: its job must be a mapping")
    rest = {key: item for key, item in value.items() if key != "config"}
    merged = oc.OmegaConf.merge(base, oc.OmegaConf.create(rest))
    return oc.OmegaConf.to_container(merged, resolve=True)


TrainingSpec = T.Annotated[TrainingJob, pdt.BeforeValidator(_job_config)]
EvaluationsSpec = T.Annotated[EvaluationsJob, pdt.BeforeValidator(_job_config)]


def _duration(value: str, key: str, allow_zero: bool = False) -> pd.Timedelta:
    try:
        duration = pd.Timedelta(value)
    except ValueError:
        raise ValueError(f"{key}: {value!r} is not a duration (90D, 12h, 2W...)") from None
    if duration < pd.Timedelta(0) or (duration == pd.Timedelta(0) and not allow_zero):
        raise ValueError(f"{key}: {value!r} must be {'0 or ' if allow_zero else ''}positive")
    return duration


class RetrainWindow(pdt.BaseModel, strict=False, frozen=True, extra="forbid"):
    """Which labelled store rows to learn from, by event time: ``[start, end)``, or the
    ``last`` span before ``end``; ``end`` defaults to just after the newest labelled row."""

    start: dt.datetime | None = pdt.Field(
        default=None, description="First event time (inclusive). Default: the oldest row."
    )
    end: dt.datetime | None = pdt.Field(
        default=None,
        description="Last event time (exclusive). Default: just after the newest labelled row.",
    )
    last: str | None = pdt.Field(
        default=None,
        description="A span before end (90D, 26W...), instead of start. Default: every "
        "labelled row before end.",
    )

    @pdt.field_validator("start", "end")
    @classmethod
    def _naive_utc(cls, moment: dt.datetime | None) -> dt.datetime | None:
        """The store's event times are naive UTC: an aware bound is converted, so it compares."""
        return as_naive_utc(moment)

    @pdt.field_validator("last")
    @classmethod
    def _positive(cls, value: str | None) -> str | None:
        if value is not None:
            _duration(value, "last")
        return value

    @pdt.model_validator(mode="after")
    def _one_start(self) -> RetrainWindow:
        if self.start is not None and self.last is not None:
            raise ValueError("give start or last, not both")
        if self.start is not None and self.end is not None and self.start >= self.end:
            raise ValueError(f"start {self.start} is not before end {self.end}")
        return self


class CaptureStore(pdt.BaseModel, strict=True, frozen=True, extra="forbid"):
    """The capture store the prediction service writes: predictions and their labels."""

    uri: StoreUri = DEFAULT_STORE_URI
    schema_name: StoreSchema = None

    def open(self) -> Store:
        return open_store(self.uri, self.schema_name)


class RetrainingJob(Job):
    """Retrain on the store's labelled rows, register ``@challenger`` with its lineage, gate
    it against ``@champion`` on rows it did not train on, promote it when the gate passes."""

    KIND: T.Literal["RetrainingJob"] = "RetrainingJob"

    store: CaptureStore = pdt.Field(
        default=CaptureStore(), description="Where the labelled production rows are."
    )
    window: RetrainWindow = pdt.Field(
        default=RetrainWindow(), description="The event-time window of labelled rows used."
    )
    holdout: str = pdt.Field(
        default="7D",
        description="The newest span of the window's labelled rows (7D...) kept out of "
        "training and given to the gate; 0D: none (the gate's test rows only).",
    )
    min_rows: int = pdt.Field(
        default=100,
        ge=1,
        description="Labelled store rows the training part must hold at least, else the job "
        "fails (exit 2) without training.",
    )
    deduplicate: bool = pdt.Field(
        default=True,
        description="Keep one row per event time and inputs (the latest captured): a replayed "
        "or retried request does not count twice.",
    )
    include_training_data: bool = pdt.Field(
        default=True,
        description="Train on the original training table (training.inputs) too, before the "
        "store's rows.",
    )
    training: TrainingSpec = pdt.Field(
        default="confs/training.yaml",  # a path, validated
        validate_default=True,
        description="The training job's config: the path of its YAML file, or inline (config: "
        "<path> plus keys that override it). Its model, contract, validation and registered "
        "model are used; inputs is the original training table; alias is the gate's "
        "challenger alias; services are this job's.",
    )
    evaluations: EvaluationsSpec = pdt.Field(
        default="confs/evaluations.yaml",  # a path, validated
        validate_default=True,
        description="The gate's config, a path or inline (config: <path> plus overrides): "
        "thresholds, bootstrap, slicing, promote_on_pass. Its inputs are its test rows; the "
        "candidate is the new version.",
    )
    gate_on_test_split: bool = pdt.Field(
        default=True,
        description="Add the gate config's inputs (its test split) to the holdout rows it "
        "judges on; false: the holdout alone.",
    )
    trigger: Trigger = pdt.Field(
        default="manual",
        description="What started this retraining (tagged on the version): schedule, finding "
        "or manual.",
    )
    monitoring_run_id: str | None = pdt.Field(
        default=None, description="The monitoring run whose finding triggered it, if any."
    )
    results_path: str = pdt.Field(
        default="outputs/retraining.json", description="What happened, JSON."
    )
    rows_dir: str = pdt.Field(
        default="outputs/retraining",
        description="Where the latest retraining's rows are written (train.parquet, "
        "gate.parquet), read by its training and gate jobs; each MLflow run keeps its copy.",
    )
    run_name: str = pdt.Field(default="retraining", description="The MLflow run's name.")

    @pdt.field_validator("holdout")
    @classmethod
    def _holdout(cls, value: str) -> str:
        _duration(value, "holdout", allow_zero=True)
        return value

    @pdt.model_validator(mode="after")
    def _one_model(self) -> RetrainingJob:
        trained, gated = self.training.registered_model, self.evaluations.registered_model
        if trained != gated:
            raise ValueError(
                f"training.registered_model ({trained}) and evaluations.registered_model "
                f"({gated}) differ: the gate must judge the model that was retrained"
            )
        if not self.gate_on_test_split and pd.Timedelta(self.holdout) == pd.Timedelta(0):
            raise ValueError("holdout is 0 and gate_on_test_split is false: nothing to gate on")
        return self

    @property
    def registered_model(self) -> str:
        return self.training.registered_model

    def run(self) -> Locals:
        document, error = self.retrain()
        if error is not None:
            raise error  # blocked: exit 3; the champion moved meanwhile: exit 5
        return document

    def retrain(self) -> tuple[Locals, Exception | None]:
        """Train, register, gate; the results, and the gate's refusal (blocked, or a promotion
        conflict) for the caller to raise or report. Anything else is raised here, after the
        ``retraining`` run has ended ``FAILED``."""
        check_writable(self.results_path, "job.results_path")
        for name in ROW_FILES:
            check_writable(Path(self.rows_dir) / name, "job.rows_dir")
        contract = self.training.contract
        train, holdout = self._split(self._labelled_rows(contract), contract)
        original = self._original_rows(contract) if self.include_training_data else None
        client = self.mlflow_service.client()
        parent = client.create_run(
            _experiment_id(self.mlflow_service),
            run_name=self.run_name,
            tags={"model_name": self.registered_model, TRIGGER_TAG: self.trigger},
        ).info.run_id
        outcome: dict[str, T.Any] = {"status": "failed"}
        try:
            lineage = self._lineage(train, holdout, original, contract, parent)
            folder = Path(self.rows_dir)
            trained = self._train(train, original, lineage, folder)
            outcome = self._gate(trained, holdout, contract, folder, client, parent)
        finally:
            document = self._document(outcome, train, holdout, original, contract, parent)
            self._finish(client, parent, document)
        return document, outcome.get("error")

    # -- rows -------------------------------------------------------------------------------------
    def _labelled_rows(self, contract: Contract) -> pd.DataFrame:
        """The window's labelled store rows as a training table: the contract's timestamp,
        features and target, oldest first."""
        target = contract.require_target("retraining")
        timestamp = contract.timestamp or "timestamp"
        store = self.store.open()
        try:
            store.check_captured()
            start, end = self._bounds(store)
            frame = store.read(model_name=self.registered_model, start=start, end=end)
        except sa.exc.SQLAlchemyError as error:
            raise InputError(
                f"job.store: {store.safe_uri} unreadable ({first_line(error)})"
            ) from None
        finally:
            store.dispose()
        frame = frame[frame["target"].notna()]
        if frame.empty:
            raise InputError(
                f"job.store: no labelled rows of model {self.registered_model!r} in "
                f"{_span(start, end)}: nothing to retrain on"
            )
        missing = [name for name in contract.feature_names if name not in frame.columns]
        if missing:
            raise InputError(
                f"job.store: the captured inputs lack feature(s) {', '.join(missing)} of the "
                "training contract"
            )
        if self.deduplicate:
            keys = ["event_time", *contract.feature_names]
            frame = frame.drop_duplicates(subset=keys, keep="last")
        labels = frame["target"]
        if not contract.is_classification:
            labels = pd.to_numeric(labels, errors="raise").astype(float)
        return pd.DataFrame(
            {
                timestamp: pd.to_datetime(frame["event_time"]).astype("datetime64[ns]"),
                **{name: frame[name] for name in contract.feature_names},
                target: labels,
            }
        ).reset_index(drop=True)

    def _bounds(self, store: Store) -> tuple[dt.datetime | None, dt.datetime | None]:
        window = self.window
        end = window.end
        if end is None and window.last is not None:
            newest = newest_labelled(store, self.registered_model)
            if newest is None:
                return None, None  # nothing labelled at all: read (nothing) and say so
            end = newest + dt.timedelta(microseconds=1)
        start = window.start
        if window.last is not None and end is not None:
            start = (pd.Timestamp(end) - pd.Timedelta(window.last)).to_pydatetime()
        return start, end

    def _split(self, rows: pd.DataFrame, contract: Contract) -> tuple[pd.DataFrame, pd.DataFrame]:
        """The training part and the holdout: the newest ``holdout`` of labelled rows."""
        times = rows[contract.timestamp or "timestamp"]
        cut = times.max() - pd.Timedelta(self.holdout)
        train, holdout = rows[times <= cut], rows[times > cut]
        if len(train) < self.min_rows:
            raise InputError(
                f"job.min_rows: {len(train)} labelled store row(s) to train on "
                f"({_span(times.min(), cut)}, after a holdout of {self.holdout}), fewer than "
                f"{self.min_rows}: wait for more labels, or widen job.window"
            )
        return train.reset_index(drop=True), holdout.reset_index(drop=True)

    # -- training ---------------------------------------------------------------------------------
    def _original_rows(self, contract: Contract) -> pd.DataFrame:
        """The original training table (``training.inputs``): timestamp, features, target."""
        frame = self.training.inputs.read()
        target = contract.require_target("retraining")
        columns = [c for c in (contract.timestamp, *contract.feature_names, target) if c]
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise InputError(
                f"job.training.inputs: {self.training.inputs.source} lacks column(s) "
                f"{', '.join(missing)}"
            )
        frame = frame.loc[:, columns]
        if not contract.is_classification:
            frame = frame.assign(**{target: frame[target].astype(float)})
        return frame

    def _lineage(
        self,
        train: pd.DataFrame,
        holdout: pd.DataFrame,
        original: pd.DataFrame | None,
        contract: Contract,
        parent: str,
    ) -> dict[str, str]:
        """The new version's tags: the window it learnt from, its rows, what started it."""
        times = train[contract.timestamp or "timestamp"]
        tags = {
            WINDOW_START_TAG: str(_iso(times.min())),
            WINDOW_END_TAG: str(_iso(times.max())),
            ROWS_TAG: str(len(train) + (0 if original is None else len(original))),
            STORE_ROWS_TAG: str(len(train)),
            HOLDOUT_ROWS_TAG: str(len(holdout)),
            TRIGGER_TAG: self.trigger,
            RETRAINING_RUN_TAG: parent,
        }
        if original is not None:
            tags[TRAINING_DATA_TAG] = self.training.inputs.source
        if self.monitoring_run_id:
            tags[MONITORING_RUN_TAG] = self.monitoring_run_id
        return tags

    def _train(
        self,
        train: pd.DataFrame,
        original: pd.DataFrame | None,
        lineage: dict[str, str],
        folder: Path,
    ) -> Locals:
        """The training job itself on these rows, its version the gate's challenger."""
        table = train if original is None else pd.concat([original, train], ignore_index=True)
        path = ParquetWriter(path=str(folder / ROW_FILES[0])).write(table)
        logger.info(
            "Retraining {} on {} rows: {} labelled store rows {} .. {}{}",
            self.registered_model,
            len(table),
            len(train),
            lineage[WINDOW_START_TAG],
            lineage[WINDOW_END_TAG],
            "" if original is None else f", after {len(original)} of {lineage[TRAINING_DATA_TAG]}",
        )
        tags = {**self.training.tags, **lineage, PARENT_RUN_TAG: lineage[RETRAINING_RUN_TAG]}
        training = self.training.model_copy(
            update={
                "inputs": ParquetReader(path=str(path)),
                "alias": self.evaluations.challenger_alias,
                "tags": tags,
                "run_name": f"{self.run_name}-training",
                "mlflow_service": self.mlflow_service,
                "logger_service": self.logger_service,
            }
        )
        trained = training.run()
        ref = registry.ModelRef(self.registered_model, str(trained["model_version"]), None)
        registry.set_tags(self.mlflow_service.client(), ref, lineage)
        return trained

    # -- the gate ---------------------------------------------------------------------------------
    def _gate(
        self,
        trained: Locals,
        holdout: pd.DataFrame,
        contract: Contract,
        folder: Path,
        client: MlflowClient,
        parent: str,
    ) -> dict[str, T.Any]:
        """The evaluations job on the holdout (and its test rows): its verdict, and the error
        to raise once the results are written (blocked: exit 3, conflict: exit 5)."""
        version = str(trained["model_version"])
        rows = self._gate_rows(holdout, contract)
        path = ParquetWriter(path=str(folder / ROW_FILES[1])).write(rows)
        gate = self.evaluations.model_copy(
            update={
                "inputs": ParquetReader(path=str(path)),
                "targets": None,
                "candidate_uri": f"models:/{self.registered_model}/{version}",
                "run_name": f"{self.run_name}-gate",
                "mlflow_service": self.mlflow_service,
                "logger_service": self.logger_service,
            }
        )
        outcome: dict[str, T.Any] = {
            "model_version": version,
            "training_run_id": trained["run_id"],
            "validation_metrics": trained.get("metrics", {}),
            "gate_rows": len(rows),
        }
        try:
            result = gate.run()
        except ModelValidationFailedException as error:
            run_id = registry.version_tag(
                client, registry.ModelRef(self.registered_model, version, None), VALIDATION_RUN_TAG
            )
            outcome |= {"status": "blocked", "verdict": "failed", "promoted": False}
            outcome |= {"evaluations_run_id": run_id, "reason": str(error), "error": error}
        except PromotionConflictError as error:
            outcome |= {"status": "conflict", "verdict": "passed", "promoted": False}
            outcome |= {"reason": str(error), "error": error}
        else:
            promoted = bool(result.get("promoted")) and result.get("verdict") != "skipped"
            outcome |= {
                "status": "promoted" if promoted else "passed",
                "verdict": result.get("verdict", "passed"),
                "promoted": promoted,
                "evaluations_run_id": result["run_id"],
                "champion_version": result.get("champion_version"),
                "verdicts": result.get("verdicts", []),
            }
        gate_run = outcome.get("evaluations_run_id")
        if gate_run:
            client.set_tag(gate_run, PARENT_RUN_TAG, parent)
            client.set_tag(gate_run, RETRAINING_RUN_TAG, parent)
        return outcome

    def _gate_rows(self, holdout: pd.DataFrame, contract: Contract) -> pd.DataFrame:
        """The holdout, then the gate config's own rows (its inputs, targets joined)."""
        parts = [holdout] if len(holdout) else []
        if self.gate_on_test_split:
            test = self.evaluations.inputs.read()
            if self.evaluations.targets is not None:
                target = contract.require_target("retraining")
                labels = self.evaluations.targets.read()
                column = target if target in labels.columns else labels.columns[0]
                test = test.assign(**{target: labels[column].to_numpy()})
            parts.append(test.loc[:, [c for c in holdout.columns if c in test.columns]])
        if not parts:
            raise InputError(
                "job.holdout: no holdout rows and job.gate_on_test_split is false: nothing to "
                "gate on"
            )
        return pd.concat(parts, ignore_index=True)

    # -- results ----------------------------------------------------------------------------------
    def _document(
        self,
        outcome: dict[str, T.Any],
        train: pd.DataFrame,
        holdout: pd.DataFrame,
        original: pd.DataFrame | None,
        contract: Contract,
        parent: str,
    ) -> dict[str, T.Any]:
        """What happened, for people and tools: the results file and the run's artifact."""
        timestamp = contract.timestamp or "timestamp"
        trained, held = train[timestamp], holdout[timestamp]
        return {
            "status": outcome.get("status", "failed"),
            "model_name": self.registered_model,
            "trigger": self.trigger,
            "monitoring_run_id": self.monitoring_run_id,
            "window": {"start": _iso(trained.min()), "end": _iso(trained.max())},
            "holdout": {"start": _iso(held.min()), "end": _iso(held.max()), "rows": len(held)},
            "rows": {
                "store": len(train),
                "training_data": 0 if original is None else len(original),
                "total": len(train) + (0 if original is None else len(original)),
            },
            "training_data": None if original is None else self.training.inputs.source,
            "run_id": parent,
            **{key: value for key, value in outcome.items() if key not in ("status", "error")},
        }

    def _finish(self, client: MlflowClient, parent: str, document: dict[str, T.Any]) -> None:
        """The results in the ``retraining`` run and the results file; the run ends FAILED
        unless the new version passed."""
        text = redact(json.dumps(document, indent=2, default=str))
        write_text(self.results_path, text)
        client.log_text(parent, text, "retraining/retraining.json")
        for key in ("status", "model_version", "verdict", "evaluations_run_id", "training_run_id"):
            if document.get(key) is not None:
                client.set_tag(parent, key, str(document[key]))
        client.log_metric(parent, "retrain_store_rows", float(document["rows"]["store"]))
        client.log_metric(parent, "retrain_holdout_rows", float(document["holdout"]["rows"]))
        client.log_metric(parent, "promoted", float(bool(document.get("promoted"))))
        ok = document["status"] in ("promoted", "passed")
        client.set_terminated(
            parent, RunStatus.to_string(RunStatus.FINISHED if ok else RunStatus.FAILED)
        )
        (logger.success if ok else logger.error)(
            "Retraining {}: {}{} (results in {})",
            self.registered_model,
            document["status"],
            f", version {document['model_version']}" if document.get("model_version") else "",
            self.results_path,
        )


def newest_labelled(store: Store, model_name: str) -> dt.datetime | None:
    """The event time of the newest labelled prediction of a model, None when none is."""
    p, lab = store.predictions, store.labels
    query = (
        sa.select(sa.func.max(p.c.event_time))
        .select_from(p.join(lab, p.c.prediction_id == lab.c.prediction_id))
        .where(p.c.model_name == model_name)
    )
    with store.engine.connect() as connection:
        newest = connection.execute(query).scalar_one_or_none()
    if isinstance(newest, str):  # SQLite's text, when the driver does not parse it
        newest = dt.datetime.fromisoformat(newest)
    return T.cast(dt.datetime | None, newest)


def _iso(moment: T.Any) -> str | None:
    return None if moment is None or pd.isna(moment) else pd.Timestamp(moment).isoformat()


def _span(start: T.Any, end: T.Any) -> str:
    first = "the first row" if start is None else str(start)
    last = "the last row" if end is None else str(end)
    return f"{first} .. {last}"


def _experiment_id(service: MlflowService) -> str:
    """The experiment the job's runs go to (``mlflow run`` chooses it in the environment)."""
    chosen = os.environ.get("MLFLOW_EXPERIMENT_ID")
    if chosen:
        return chosen
    experiment = mlflow.get_experiment_by_name(service.experiment_name)
    if experiment is None:
        raise InputError(f"MLflow experiment {service.experiment_name!r} does not exist")
    return str(experiment.experiment_id)


# -- the monitoring trigger ----------------------------------------------------------------------
def retraining_job(config: str | dict[str, T.Any], **settings: T.Any) -> RetrainingJob:
    """The retraining a monitoring job starts: ``config`` (a path, or inline) with
    ``settings`` on top; a bad config is a ``ConfigError`` naming ``job.retraining``'s keys."""
    loaded = _job_config(config if isinstance(config, dict) else {"config": config})
    try:
        return RetrainingJob.model_validate({**loaded, **settings})
    except pdt.ValidationError as error:
        problems = [
            f"job.retraining.{'.'.join(str(part) for part in problem['loc'])}: {problem['msg']}"
            for problem in error.errors(include_url=False)
        ]
        raise ConfigError("; ".join(problems)) from None
    except ValueError as error:
        raise ConfigError(f"job.retraining: {error}") from None


def check_cooldown(cooldown: str) -> None:
    """A monitoring job's ``retrain_cooldown``: a positive pandas duration."""
    try:
        _duration(cooldown, "job.retrain_cooldown")
    except ValueError as error:
        raise ConfigError(str(error)) from None


def retrain_on_finding(monitoring: MonitoringJob, statuses: T.Sequence[str], run_id: str) -> Locals:
    """Retrain when a monitoring window is ``detected``, unless a finding already started a
    retraining of this model within ``retrain_cooldown``: one drift episode retrains once.

    The trigger is remembered (a tag of the registered model) before the retraining starts, so
    one that fails or is blocked is not started again by every following monitoring run (run
    ``invoke retrain`` by hand for that). With a store as its current data, the monitoring
    job's store is the retraining's unless the retraining config names one. Returns the
    retraining's results (``status``: promoted, passed, blocked, conflict), or a ``status``
    of ``no_finding`` or ``cooldown``; a blocked gate or a promotion conflict is reported, not
    raised: the monitoring job keeps its own exit code.
    """
    model = monitoring.registered_model
    if "detected" not in statuses:
        return {"status": "no_finding"}
    client = monitoring.mlflow_service.client()
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    last = _last_finding(client, model)
    cooldown = monitoring.retrain_cooldown
    if last is not None and now - last["at"] < pd.Timedelta(cooldown):
        logger.info(
            "Finding on {}: no retraining, a finding started one at {} (monitoring run {}): "
            "cooldown {}",
            model,
            last["at"],
            last.get("monitoring_run_id"),
            cooldown,
        )
        client.set_tag(run_id, "retraining", "cooldown")
        return {"status": "cooldown", "last_trigger": last["at"].isoformat(), "cooldown": cooldown}
    job = monitoring_retraining(monitoring, run_id)
    client.set_registered_model_tag(
        model, LAST_FINDING_TAG, json.dumps({"at": now.isoformat(), "monitoring_run_id": run_id})
    )
    logger.warning("Finding on {}: retraining it (cooldown {})", model, cooldown)
    document, error = job.retrain()
    if error is not None:
        logger.error("Retraining {} not promoted: {}", model, first_line(error))
    client.set_tag(run_id, "retraining", str(document["status"]))
    client.set_tag(run_id, RETRAINING_RUN_TAG, str(document["run_id"]))
    return document


def monitoring_retraining(monitoring: MonitoringJob, run_id: str = "") -> RetrainingJob:
    """The retraining job a monitoring job's finding starts (validated with the monitoring
    config, so a bad one fails before any window is read)."""
    settings: dict[str, T.Any] = {
        "trigger": "finding",
        "monitoring_run_id": run_id or None,
        "mlflow_service": monitoring.mlflow_service,
        "logger_service": monitoring.logger_service,
    }
    config = monitoring.retraining
    named = isinstance(config, dict) and "store" in config
    current = monitoring.current
    if not named and getattr(current, "KIND", None) == "StoreReader":
        reader = T.cast(T.Any, current)
        settings["store"] = CaptureStore(uri=reader.uri, schema_name=reader.schema_name)
    job = retraining_job(config, **settings)
    if job.registered_model != monitoring.registered_model:
        raise ConfigError(
            f"job.retraining: retrains {job.registered_model!r}, but this job monitors "
            f"{monitoring.registered_model!r}"
        )
    return job


def _last_finding(client: MlflowClient, model_name: str) -> dict[str, T.Any] | None:
    tags: dict[str, str] = client.get_registered_model(model_name).tags
    text = tags.get(LAST_FINDING_TAG)
    if not text:
        return None
    try:
        value = json.loads(text)
        return {**value, "at": dt.datetime.fromisoformat(value["at"])}
    except (ValueError, KeyError, TypeError):
        logger.warning("{}: tag {} unreadable ({!r}): ignored", model_name, LAST_FINDING_TAG, text)
        return None
