"""The closed loop against a frozen champion: July to December 2012, month by month.

A champion is trained on the bike data up to the end of June 2012 and promoted. Then each
month of the second half of 2012 is served and captured (predictions into a capture store,
labels a day later), and at each month start from August the loop runs: the RetrainingJob
itself (``confs/retraining.yaml`` with this workspace's files), in process, against a
temporary MLflow SQLite store and a temporary capture store. It retrains on what is labelled
so far, gates the new version against ``@champion`` on the newest labels it did not train on,
and promotes it on pass. The loop's champion serves the month; the frozen champion is scored
on the same rows.

Printed: the RMSE of both for each month and their means, what each retraining did, and each
gate decision judged on the month that followed: the new version against the champion it was
gated against, a paired bootstrap of RMSE(new) - RMSE(champion). A promotion whose whole
interval is above 0 was wrong (the benchmark then exits 1); a block whose whole interval is
below 0 missed a gain.

    uv run python benchmarks/loop.py                       # the shipped retraining config
    uv run python benchmarks/loop.py -e job.holdout=14D    # any override of it
    uv run python benchmarks/loop.py --json loop.json

The champion trained on every row up to June, so the gate's usual test split (April to June)
is in its training data and in every retrained model's: judging on it would compare in-sample
fits. The loop here gates on its holdout alone (``job.gate_on_test_split=false``).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import itertools
import json
import os
import sys
import tempfile
import time
import typing as T
import uuid
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
MONTHS = pd.date_range("2012-07-01", "2013-01-01", freq="MS")
LABEL_DELAY = pd.Timedelta("1D")
SPLITS = {
    "train": {"start": "2011-01-01", "end": "2012-06-30"},
    "production": {"start": "2012-07-01", "end": "2012-12-31"},
}


def main() -> int:
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument(
        "-e",
        "--extras",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override of confs/retraining.yaml, e.g. job.window.last=180D (repeatable)",
    )
    cli.add_argument("--resamples", type=int, default=1000, help="bootstrap of the check")
    cli.add_argument("--json", type=Path, help="write the results here too")
    args = cli.parse_args()
    for name in [k for k in os.environ if k.startswith("MLFLOW_") or k == "BIKES_STORE_URI"]:
        del os.environ[name]  # this benchmark's own stores, whatever the shell points at
    with tempfile.TemporaryDirectory(prefix="bikes-loop-") as directory, _inside(Path(directory)):
        results = run(Path(directory), args.extras, args.resamples)
    print(report(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    return 1 if any(check["worse"] for check in results["checks"]) else 0


@contextlib.contextmanager
def _inside(directory: Path) -> T.Iterator[None]:
    """A workspace as a user has: the repo's configs and raw data, in the working directory."""
    (directory / "confs").symlink_to(REPO / "confs")
    (directory / "data").mkdir()
    (directory / "data" / "hour.csv").symlink_to(REPO / "data" / "hour.csv")
    before = Path.cwd()
    os.chdir(directory)
    try:
        yield
    finally:
        os.chdir(before)


def run(directory: Path, extras: list[str], resamples: int) -> dict[str, T.Any]:
    import mlflow

    from bikes.io.configs import merge_configs
    from bikes.io.contracts import load_contract
    from bikes.io.services import LoggerService, MlflowService
    from bikes.io.store import Store
    from bikes.jobs.data import DataJob
    from bikes.jobs.retraining import RetrainingJob

    services: dict[str, T.Any] = {
        "mlflow_service": MlflowService(
            tracking_uri=f"sqlite:///{directory / 'mlflow.db'}",
            artifact_root=str(directory / "mlartifacts"),
        ),
        "logger_service": LoggerService(level="WARNING"),
    }
    contract = load_contract("confs/bikes-contract.yaml")
    features, target = contract.feature_names, str(contract.target)
    with DataJob.model_validate(
        {"contract": "confs/bikes-contract.yaml", "splits": SPLITS, **services}
    ) as job:
        job.run()
    store_uri = f"sqlite:///{directory / 'predictions.db'}"
    store = Store(store_uri)
    store.create()
    settings = merge_configs(
        [REPO / "confs" / "retraining.yaml"],
        [
            f"job.store.uri={store_uri}",
            "job.training.inputs.path=data/splits/train.parquet",
            "job.gate_on_test_split=false",
            f"job.results_path={directory / 'retraining.json'}",
            "job.trigger=schedule",
            *extras,
        ],
    )["job"]
    settings.pop("KIND", None)
    config = RetrainingJob.model_validate({**settings, **services})

    started = time.perf_counter()
    champion = _train_champion(config, services)
    production = pd.read_parquet("data/splits/production.parquet")
    models: dict[str, T.Any] = {}
    client = services["mlflow_service"].client()

    def predict(version: str, rows: pd.DataFrame) -> np.ndarray:
        if version not in models:
            with _mlflow(services["mlflow_service"]):
                models[version] = mlflow.pyfunc.load_model(f"models:/bikes/{version}")
        return np.asarray(models[version].predict(rows[features]), dtype=float)

    months: list[dict[str, T.Any]] = []
    retrainings: list[dict[str, T.Any]] = []
    captured: list[tuple[str, dt.datetime, float]] = []
    serving = champion
    for start, end in itertools.pairwise(MONTHS):
        if start > MONTHS[0]:
            _label(store, captured, start)
            outcome = _retrain(config, start, services)
            retrainings.append(outcome)
            serving = str(client.get_model_version_by_alias("bikes", "champion").version)
        rows = production[(production["timestamp"] >= start) & (production["timestamp"] < end)]
        rows = rows.reset_index(drop=True)
        loop, frozen = predict(serving, rows), predict(champion, rows)
        captured += _capture(store, rows, loop, serving, features)
        truth = rows[target].to_numpy(dtype=float)
        months.append(
            {
                "month": start.strftime("%Y-%m"),
                "rows": len(rows),
                "frozen_rmse": _rmse(truth, frozen),
                "loop_rmse": _rmse(truth, loop),
                "loop_version": serving,
                "truth": truth,
                "predictions": {serving: loop},
            }
        )
    store.dispose()
    checks = _checks(months, retrainings, predict, production, resamples)
    for month in months:
        del month["truth"], month["predictions"]
    frozen_mean = float(np.mean([m["frozen_rmse"] for m in months]))
    loop_mean = float(np.mean([m["loop_rmse"] for m in months]))
    return {
        "config": {k: v for k, v in settings.items() if k not in ("training", "evaluations")},
        "extras": extras,
        "champion_version": champion,
        "months": months,
        "mean": {
            "frozen_rmse": frozen_mean,
            "loop_rmse": loop_mean,
            "cut": 1 - loop_mean / frozen_mean,
        },
        "retrainings": retrainings,
        "checks": checks,
        "seconds": time.perf_counter() - started,
    }


@contextlib.contextmanager
def _mlflow(service: T.Any) -> T.Iterator[None]:
    service.start()
    try:
        yield
    finally:
        service.stop()


def _train_champion(config: T.Any, services: dict[str, T.Any]) -> str:
    """The frozen champion: the retraining's own training config on the rows up to June."""
    from bikes.jobs.promotion import PromotionJob

    training = config.training.model_copy(update={**services, "run_name": "champion"})
    with training as job:
        version = str(job.run()["model_version"])
    with PromotionJob(version=int(version), force=True, **services) as job:
        job.run()
    return version


def _capture(
    store: T.Any, rows: pd.DataFrame, predictions: np.ndarray, version: str, features: list[str]
) -> list[tuple[str, dt.datetime, float]]:
    """A month as the service captures it; returns (id, event time, label) to label later."""
    ids = [uuid.uuid4().hex for _ in range(len(rows))]
    events = rows["timestamp"].dt.to_pydatetime().tolist()
    store.write_predictions(
        [
            {
                "prediction_id": ids[i],
                "event_time": events[i],
                "received_time": events[i],
                "model_name": "bikes",
                "model_version": version,
                "latency_ms": 1.0,
                "inputs": inputs,
                "prediction": float(predictions[i]),
            }
            for i, inputs in enumerate(rows[features].to_dict(orient="records"))
        ]
    )
    labels = rows["cnt"].astype(float).tolist()
    return [(ids[i], events[i], labels[i]) for i in range(len(rows))]


def _label(store: T.Any, captured: list[tuple[str, dt.datetime, float]], now: pd.Timestamp) -> None:
    """The labels that have arrived by ``now``: a day after their event (kept idempotent)."""
    due = [(i, e, y) for i, e, y in captured if e + LABEL_DELAY <= now]
    store.write_labels(
        [{"prediction_id": i, "label_time": e + LABEL_DELAY, "target": y} for i, e, y in due]
    )


def _retrain(config: T.Any, now: pd.Timestamp, services: dict[str, T.Any]) -> dict[str, T.Any]:
    """The RetrainingJob as cron runs it at the month start: a blocked gate is an outcome, and
    so are too few labels (exit 2 from the CLI: nothing trained)."""
    from bikes.core.errors import BikesError

    started = time.perf_counter()
    try:
        with config as job:
            document, error = job.retrain()
    except BikesError as refused:
        reason = str(refused).splitlines()[0][:300]
        return {
            "at": now.strftime("%Y-%m-%d"),
            "status": "not run",
            "version": None,
            "rows": {},
            "holdout_rows": 0,
            "verdicts": [],
            "reason": reason,
            "seconds": time.perf_counter() - started,
        }
    return {
        "at": now.strftime("%Y-%m-%d"),
        "status": document["status"],
        "version": document.get("model_version"),
        "window": document["window"],
        "rows": document["rows"],
        "holdout_rows": document["holdout"]["rows"],
        "verdicts": document.get("verdicts", []),
        "reason": None if error is None else str(error).splitlines()[0][:300],
        "seconds": time.perf_counter() - started,
    }


def _checks(
    months: list[dict[str, T.Any]],
    retrainings: list[dict[str, T.Any]],
    predict: T.Any,
    production: pd.DataFrame,
    resamples: int,
) -> list[dict[str, T.Any]]:
    """Each gate decision, judged on the month that followed it: the new version against the
    champion it was gated against (paired bootstrap of the RMSE difference). A promoted
    version worse beyond noise is a wrong promotion; a blocked one better beyond noise, a
    missed gain."""
    from bikes.core.comparison import Bootstrap, paired_difference_interval
    from bikes.core.metrics import SklearnMetric

    metric = SklearnMetric(name="root_mean_squared_error", greater_is_better=False)
    by_month = {month["month"]: (before, month) for before, month in itertools.pairwise(months)}
    checks = []
    for retraining in retrainings:
        if retraining["version"] is None or retraining["at"][:7] not in by_month:
            continue
        before, month = by_month[retraining["at"][:7]]
        new, old = str(retraining["version"]), before["loop_version"]
        start = pd.Timestamp(month["month"] + "-01")
        rows = production[
            (production["timestamp"] >= start)
            & (production["timestamp"] < start + pd.offsets.MonthBegin(1))
        ].reset_index(drop=True)
        candidate, baseline = predict(new, rows), predict(old, rows)
        interval = paired_difference_interval(
            metric, month["truth"], candidate, baseline, Bootstrap(resamples=resamples)
        )
        promoted = retraining["status"] == "promoted"
        checks.append(
            {
                "month": month["month"],
                "new": new,
                "champion": old,
                "promoted": promoted,
                "new_rmse": _rmse(month["truth"], candidate),
                "champion_rmse": _rmse(month["truth"], baseline),
                "difference": interval.difference,
                "low": interval.low,
                "high": interval.high,
                "worse": bool(promoted and interval.low > 0),
                "missed": bool(not promoted and interval.high < 0),
            }
        )
    return checks


def _rmse(truth: np.ndarray, predictions: np.ndarray) -> float:
    return float(np.sqrt(np.mean((truth - predictions) ** 2)))


def report(results: dict[str, T.Any]) -> str:
    lines = [
        f"Closed loop, July to December 2012 ({results['seconds']:.0f} s; overrides: "
        f"{' '.join(results['extras']) or 'none'})",
        "",
        "month     rows  frozen RMSE  loop RMSE  change  loop version  retraining at month start",
    ]
    by_month = {r["at"][:7]: r for r in results["retrainings"]}
    for month in results["months"]:
        retraining = by_month.get(month["month"])
        what = "-"
        if retraining is not None:
            what = (
                f"v{retraining['version']} {retraining['status']}"
                if retraining["version"]
                else retraining["status"]
            )
            what += f" ({retraining['rows'].get('store', 0)} labelled rows"
            what += f", {retraining['holdout_rows']} held out)"
        change = month["loop_rmse"] / month["frozen_rmse"] - 1
        lines.append(
            f"{month['month']}  {month['rows']:>5}  {month['frozen_rmse']:>11.1f}  "
            f"{month['loop_rmse']:>9.1f}  {change:>+6.1%}  {'v' + month['loop_version']:>12}  "
            f"{what}"
        )
    mean = results["mean"]
    lines.append(
        f"mean            {mean['frozen_rmse']:>11.1f}  {mean['loop_rmse']:>9.1f}  "
        f"{-mean['cut']:>+6.1%}"
    )
    lines += [
        "",
        "Each gate decision on the month that followed: RMSE of the new version and of the "
        "champion it was gated against, their difference and its 95% paired bootstrap interval",
    ]
    for check in results["checks"]:
        if check["promoted"]:
            verdict = "promoted, WORSE beyond noise" if check["worse"] else "promoted, not worse"
        else:
            verdict = "blocked, a missed gain" if check["missed"] else "blocked, not better"
        lines.append(
            f"  {check['month']}: v{check['new']} {check['new_rmse']:.1f} vs v{check['champion']} "
            f"{check['champion_rmse']:.1f}: {check['difference']:+.1f} "
            f"[{check['low']:+.1f}, {check['high']:+.1f}] {verdict}"
        )
    wrong = sum(check["worse"] for check in results["checks"])
    lines.append(f"Promotions worse beyond noise the month after: {wrong}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
