"""The ``bikes`` command: configs -> settings -> ``job.run()``, and the one place exit codes live.

Exit codes: 0 success; 2 a config or input error (the message names the key, file or column);
3 the evaluation gate blocked the candidate (CI must stop the deploy); 4 monitoring found
drift or degradation at or above ``job.fail_on``; 5 the champion moved while the gate ran
(nothing was promoted); 6 alerts fired but could not be delivered (they are retried on the
next run); 7 the service stopped with acknowledged rows it could not keep; 1 anything
unexpected (a bug: the traceback is shown).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import traceback
import typing as T

import pydantic as pdt
from loguru import logger

from bikes.core.errors import BikesError

if T.TYPE_CHECKING:
    from bikes.io.mlflow_worker import MlflowWorker

EXIT_OK = 0
EXIT_UNEXPECTED = 1
EXIT_INPUT = 2
EXIT_GATE = 3
EXIT_MONITORING = 4
EXIT_CONFLICT = 5
EXIT_UNDELIVERED = 6
EXIT_CAPTURE_LOSS = 7

# What ``bikes --help`` lists; a test checks the kinds against ``bikes.settings.JOB_MODULES``.
# Written out rather than read from the job classes: importing them all costs seconds (MLflow,
# scikit-learn, FastAPI), and help must be instant.
JOBS: dict[str, str] = {
    "DataJob": "split the raw hourly CSV into train, test and production parquet files",
    "TrainingJob": "fit, validate on the latest rows, refit on all, register the model",
    "EvaluationsJob": "the gate: a candidate against the champion on the test split",
    "PromotionJob": "point an alias (champion) at a version the gate passed",
    "InferenceJob": "score a parquet file with a registered version",
    "ServingJob": "the HTTP prediction service, capturing what it answers",
    "TrafficJob": "send a table to the service as live traffic, then its labels",
    "MonitoringJob": "production windows against the reference: drift, quality, alerts",
    "RetrainingJob": "retrain on captured labels, gate against the champion, promote",
    "ExportJob": "move captured predictions and labels into a parquet lake, incrementally",
}
EXIT_CODES: dict[int, str] = {
    EXIT_OK: "success",
    EXIT_UNEXPECTED: "unexpected error, a bug (the traceback is shown)",
    EXIT_INPUT: "config or input error (the message names the key, file or column)",
    EXIT_GATE: "the evaluation gate blocked the candidate (CI must stop the deploy)",
    EXIT_MONITORING: "monitoring found drift or degradation at or above job.fail_on",
    EXIT_CONFLICT: "the champion moved while the gate ran (nothing was promoted)",
    EXIT_UNDELIVERED: "alerts fired but were not delivered (retried on the next run)",
    EXIT_CAPTURE_LOSS: "the service stopped with acknowledged rows it could not keep",
}


def _epilog() -> str:
    jobs = "\n".join(f"  {kind:<15} {line}" for kind, line in JOBS.items())
    codes = "\n".join(f"  {code}  {meaning}" for code, meaning in sorted(EXIT_CODES.items()))
    return (
        f"jobs (the config's job.KIND; examples in confs/):\n{jobs}\n\n"
        f"exit codes:\n{codes}\n\n"
        "examples:\n"
        "  bikes confs/training.yaml -e job.run_name=nightly\n"
        "  BIKES_JOB__RUN_NAME=nightly bikes confs/training.yaml   (environment override)\n"
        "  bikes --schema   (every job's settings, as JSON schema)"
    )


def parser() -> argparse.ArgumentParser:
    cli = argparse.ArgumentParser(
        prog="bikes",
        description="Run a bikes job from YAML configs, merged left to right.",
        epilog=_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cli.add_argument("configs", nargs="*", metavar="CONFIG", help="YAML config file(s)")
    cli.add_argument(
        "-e",
        "--extras",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="OmegaConf dot-list override, e.g. job.model.max_iter=100 (repeatable)",
    )
    cli.add_argument("--schema", action="store_true", help="print the settings' JSON schema")
    return cli


def main(argv: T.Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    merged, spawned = _early_mlflow_worker(args.configs, args.extras, args.schema)
    # Heavy imports (MLflow, sklearn) wait until we know there is work to do.
    from bikes.settings import main_settings

    if args.schema:
        print(json.dumps(main_settings().model_json_schema(), indent=2))
        return EXIT_OK
    if not args.configs:
        parser().print_usage(sys.stderr)
        print("bikes: error: give at least one CONFIG (or --schema)", file=sys.stderr)
        return EXIT_INPUT
    from bikes.core.redaction import redact  # a message may quote a URL: no secret printed
    from bikes.io.services import redacted_output

    try:
        settings = _settings(args.configs, args.extras, merged)
        if getattr(settings.job, "waits_for_mlflow", False):
            # MLflow (about 4 s to import and open) loads while the job reads and computes.
            # A job whose only MLflow work is its run (``mlflow_worker``): in another process,
            # the one spawned above if there is one.
            worker = getattr(settings.job, "mlflow_worker", False)
            settings.job.mlflow_service.defer_start(
                getattr(settings.job, "mlflow_warm_up", ()),
                worker=(spawned or True) if worker else False,
            )
            spawned = spawned if not worker else None  # the service's now
        with redacted_output(), settings.job as job:
            job.run()
    except Exception as error:
        outcome = _expected(error)
        if outcome is None and argv is not None:
            raise  # a bug, in a caller's process: the exception is theirs
        if outcome is None:
            # A bug: the traceback is the report, redacted like every other line (an
            # exception's text or a local in it may quote a URL with its password).
            logger.remove()
            print(redact(traceback.format_exc()), end="", file=sys.stderr)
            return EXIT_UNEXPECTED
        code, prefix = outcome
        logger.remove()
        print(f"bikes: {prefix}: {redact(str(error))}", file=sys.stderr)
        return code
    finally:
        if spawned is not None:  # spawned for a job that turned out not to want it
            spawned.close()
        if argv is None:  # the process's own command line: it exits next
            _exiting()
    return EXIT_OK


def _early_mlflow_worker(
    configs: T.Sequence[str], extras: T.Sequence[str], schema: bool
) -> tuple[dict[str, T.Any] | None, MlflowWorker | None]:
    """The merged config, and the MLflow worker process (``bikes.io.mlflow_worker``) spawned
    now when the config looks like a job that logs through one: it imports MLflow (about 2 s)
    while this process loads the job's modules, not after. A hint read from the raw config
    (the job's ``mlflow_worker`` decides: a wrong guess costs a process, not a result); a
    config that does not merge is reported by ``_settings``."""
    if schema or not configs:
        return None, None
    from bikes.io.configs import merge_configs

    try:
        merged = merge_configs(configs, extras)
    except Exception:  # read again, and reported, by _settings
        return None, None
    job = merged.get("job")
    if not isinstance(job, dict) or job.get("KIND") != "MonitoringJob":
        return merged, None
    reference = job.get("reference")
    if (
        not isinstance(reference, dict)
        or reference.get("KIND") not in ("ParquetReader", "LakeReader")
        or job.get("on_finding", "none") != "none"
        or job.get("engine", "pandas") != "pandas"
    ):
        return merged, None
    from bikes.io.mlflow_worker import MlflowWorker

    service = job.get("mlflow_service")
    configured = service.get("tracking_uri") if isinstance(service, dict) else None
    uri = os.environ.get("MLFLOW_TRACKING_URI") or configured or "sqlite:///mlflow.db"
    return merged, MlflowWorker(uri if isinstance(uri, str) else None)


def _exiting() -> None:
    """The process ends next, so its objects need no more garbage collection: frozen, they
    spare the interpreter's final collections over all that MLflow, pandas and scipy loaded
    (0.5-1.5 s of every run, measured on 2 cores). Exit handlers and module teardown still
    run. Only for the command line: a caller in process (tests) keeps collecting."""
    gc.freeze()


def _expected(error: Exception) -> tuple[int, str] | None:
    """The exit code and message prefix of an expected failure; None for a bug. The most
    specific class comes first: each of these is a ``BikesError``, which alone means exit 2.
    MLflow's gate failure can only come from a job that loaded MLflow: it is looked up among
    the loaded modules, so a config error answers without importing MLflow (seconds)."""
    from bikes.core.errors import (
        AlertDeliveryError,
        CaptureLossError,
        MonitoringFindingError,
        PromotionConflictError,
    )

    outcomes: list[tuple[type[Exception], int, str]] = [
        (MonitoringFindingError, EXIT_MONITORING, "monitoring"),
        (PromotionConflictError, EXIT_CONFLICT, "promotion refused"),
        (AlertDeliveryError, EXIT_UNDELIVERED, "alerts undelivered"),
        (CaptureLossError, EXIT_CAPTURE_LOSS, "capture lost rows"),
        (BikesError, EXIT_INPUT, "error"),
    ]
    validation = sys.modules.get("mlflow.models.evaluation.validation")
    if validation is not None:
        outcomes.append((validation.ModelValidationFailedException, EXIT_GATE, "gate failed"))
    for kind, code, prefix in outcomes:
        if isinstance(error, kind):
            return code, prefix
    return None


def _settings(
    configs: T.Sequence[str], extras: T.Sequence[str], merged: dict[str, T.Any] | None = None
) -> T.Any:
    from bikes.core.errors import ConfigError
    from bikes.io.configs import merge_configs
    from bikes.settings import settings_for

    if merged is None:
        merged = merge_configs(configs, extras)
    job = merged.get("job")
    kind = job.get("KIND") if isinstance(job, dict) else None
    try:
        return settings_for(kind if isinstance(kind, str) else None).model_validate(merged)
    except pdt.ValidationError as error:
        raise ConfigError(describe_validation_error(error, merged)) from None


def describe_validation_error(error: pdt.ValidationError, data: T.Any = None) -> str:
    """One line per problem, each starting with the dotted key path at fault."""
    lines = []
    for problem in error.errors(include_url=False):
        location = ".".join(_key_path(problem["loc"], data))
        got = repr(problem.get("input"))
        got = got if len(got) <= 80 else got[:77] + "..."
        lines.append(f"{location}: {problem['msg']} (got {got})")
    return "invalid config:\n  " + "\n  ".join(lines)


def _key_path(location: tuple[int | str, ...], data: T.Any) -> list[str]:
    """The config keys of an error location, without the union tags pydantic inserts."""
    keys: list[str] = []
    node = data
    for part in location:
        if isinstance(node, dict) and part not in node and _is_kind(part):
            continue  # ``job.TrainingJob.x``: the tag names the union member, not a key.
        keys.append(str(part))
        node = node.get(part) if isinstance(node, dict) else None
    return keys


def _is_kind(part: int | str) -> bool:
    """Config keys are snake_case; union tags (``KIND`` values) are CamelCase class names."""
    return isinstance(part, str) and part[:1].isupper() and part != "KIND"
