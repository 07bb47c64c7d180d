"""The jobs, one task each, the deployment gate, and the demo that chains them."""

import contextlib
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import typing as T
import urllib.request
from pathlib import Path

from invoke.context import Context
from invoke.tasks import task

from tasks.tracking import MLFLOW_PORT_VARIABLE
from tasks.tracking import mlflow_port as ui_port

GATE_BLOCKED = 3  # bikes' exit code when the evaluation gate blocks a candidate
# The prediction service's port for `invoke demo`, `serve` and `traffic`: the option, else this
# environment variable, else confs/serving.yaml's 8000 (the tasks pass it with -e job.port=N,
# and job.url=http://127.0.0.1:N for the traffic).
PORT_VARIABLE = "BIKES_PORT"
DEFAULT_PORT = 8000
PORT_HELP = f"the prediction service's port (default: ${PORT_VARIABLE}, else {DEFAULT_PORT})"


def extra_help(example: str = "job.run_name=nightly") -> str:
    """An -e option's help: a bikes config override, with an example for the task's job."""
    return f"a config override KEY=VALUE, as bikes -e takes it (repeatable), e.g. {example}"


MONTHLY_BACKFILL = (
    "job.current.start=2012-07-01",
    "job.current.end=2013-01-01",
    "job.current.step=MS",
)
# The demo's loop: production in two parts, so a retrained champion can serve the second.
LOOP_DIR = "data/splits/loop"
# Demand grows by 30% from October (more docks, the same weather): a change in the world
# that only labels show, and only retraining can follow.
DEMAND_GROWTH = (
    "job.perturbations=[{column: cnt, kind: scale, value: 1.3, start: '2012-10-01T00:00:00'}]"
)
UNTIL_NOVEMBER = (
    "job.current.start=2012-07-01",
    "job.current.end=2012-12-01",
    "job.current.step=MS",
    "job.results_path=outputs/monitoring-until-november.json",
)
DECEMBER = (
    "job.current.start=2012-12-01",
    "job.current.end=2013-01-01",
    "job.results_path=outputs/monitoring-december.json",
    "job.report_path=outputs/monitoring-december.html",
)
RETRAINING_RESULTS = "outputs/retraining.json"
# The labels up to November (a demo run before left December's in the store too), and a short
# cooldown, so that the demo retrains each time it is run (cron keeps 7D).
RETRAIN_ON_FINDING = (
    "job.on_finding=retrain",
    "job.retraining={config: confs/retraining.yaml, window: {end: '2012-12-01T00:00:00'}}",
    "job.retrain_cooldown=1s",
)


def serving_port(port: int = 0) -> int:
    """The prediction service's port: the option, else BIKES_PORT, else 8000."""
    if port:
        return int(port)
    return int(os.environ.get(PORT_VARIABLE) or DEFAULT_PORT)


def _port_overrides(key: str, port: int, value: str = "{port}") -> tuple[str, ...]:
    """``key=value`` for an explicit port or BIKES_PORT; nothing otherwise (the config's own
    value, which a user's -e may also set, stays in force)."""
    if not port and not os.environ.get(PORT_VARIABLE):
        return ()
    return (f"{key}={value.format(port=serving_port(port))}",)


def _job(c: Context, config: str, extras: tuple[str, ...] = (), warn: bool = False) -> int:
    overrides = " ".join(f"-e {shlex.quote(extra)}" for extra in extras)
    result = c.run(f"bikes {config} {overrides}".strip(), warn=warn)
    return int(result.exited) if result is not None else 0


@task
def data(c: Context) -> None:
    """Derive the train, test and production parquet splits from data/hour.csv."""
    _job(c, "confs/data.yaml")


@task(iterable=["extra"], help={"extra": extra_help("job.alias=challenger")})
def train(c: Context, extra: list[str] | None = None) -> None:
    """Train and register a model (e.g. `invoke train -e job.alias=challenger`)."""
    _job(c, "confs/training.yaml", tuple(extra or ()))


@task(iterable=["extra"], help={"extra": extra_help("job.promote_on_pass=true")})
def evaluate(c: Context, extra: list[str] | None = None) -> None:
    """The evaluation gate alone: exit 0 lets the candidate through, exit 3 blocks it."""
    _job(c, "confs/evaluations.yaml", tuple(extra or ()))


@task(iterable=["extra"], help={"extra": extra_help("job.version=3")})
def promote(c: Context, extra: list[str] | None = None) -> None:
    """Move the champion alias (to the newest version unless -e job.version=N)."""
    _job(c, "confs/promotion.yaml", tuple(extra or ()))


@task
def infer(c: Context) -> None:
    """Predict the production split with the champion into outputs/predictions.parquet."""
    _job(c, "confs/inference.yaml")


@task(
    iterable=["extra"],
    help={
        "training": "the training config the challenger comes from",
        "extra": extra_help("job.model.max_iter=100") + ", for the training job",
    },
)
def gate(c: Context, training: str = "confs/training.yaml", extra: list[str] | None = None) -> None:
    """Train a challenger, evaluate it against the champion, promote it on pass (CI's gate)."""
    _job(c, training, ("job.alias=challenger", *(extra or ())))
    _job(c, "confs/evaluations.yaml", ("job.promote_on_pass=true",))


@task(
    help={
        "port": PORT_HELP,
        "mlflow-port": f"the port `invoke mlflow` is told to use at the end (default: "
        f"${MLFLOW_PORT_VARIABLE}, else 5000); the demo itself needs no MLflow server",
    }
)
def demo(c: Context, port: int = 0, mlflow_port: int = 0) -> None:
    """End to end on a local SQLite MLflow: gate, serve, replay, monitor, retrain.

    A model passes the gate, a worse one is blocked, production drifts, and the loop retrains,
    gates and promotes a model that serves better."""
    port = serving_port(port)
    _check_port_free(port)  # before ten minutes of work, not after
    data(c)
    print("\n== 1. A first model through the gate (no champion yet: absolute thresholds) ==")
    _job(c, "confs/training.yaml", ("job.alias=challenger",))
    code = _job(c, "confs/evaluations.yaml", ("job.promote_on_pass=true",), warn=True)
    if code == GATE_BLOCKED:
        # A second run of the demo: the champion is the first run's retrained model, trained
        # on more rows than this one, and the gate rightly keeps it.
        print("The champion of an earlier demo run is better than this model: it stays champion")
    elif code != 0:
        raise SystemExit(f"the gate exited {code}")
    infer(c)
    print("\n== 2. A worse challenger (a shallow forest): the gate must block it ==")
    _job(c, "confs/examples/shallow-forest.yaml")
    code = _job(c, "confs/evaluations.yaml", warn=True)
    if code != GATE_BLOCKED:
        raise SystemExit(f"expected the gate to block the shallow forest (exit 3), got {code}")
    c.run("bikes confs/promotion.yaml", warn=True)  # refused: that version failed the gate
    print("\n== 3. Serve the champion; replay July to November, labels a day late ==")
    print("(from October a new docking network brings 30% more rentals at the same weather)")
    _split_production()
    with _serving(c, port) as url:
        champion = _served_version(url)
        until_november = [f"job.inputs.path={LOOP_DIR}/until_november.parquet", DEMAND_GROWTH]
        traffic(c, until_november, port=port)
        print("\n== 4. Monitor month by month; a finding starts retrain, gate, promote ==")
        Path(RETRAINING_RESULTS).unlink(missing_ok=True)
        _job(c, "confs/monitoring.yaml", (*UNTIL_NOVEMBER, *RETRAIN_ON_FINDING))
        retrained = _retraining_outcome()
        print("\n== 5. The service swaps the new champion in; December, monitored again ==")
        if retrained.get("promoted"):
            _wait_for_version(url, str(retrained["model_version"]))
        traffic(c, [f"job.inputs.path={LOOP_DIR}/december.parquet", DEMAND_GROWTH], port=port)
        _job(c, "confs/monitoring.yaml", DECEMBER)
    _print_loop(champion, retrained)
    ui = ui_port(mlflow_port)
    port_option = "" if ui == 5000 else f" --port {ui}"
    print(
        "\nDone. Batch predictions are in outputs/predictions.parquet, live ones (with labels) "
        "in predictions.db; monitoring in outputs/monitoring.html (July to November) and "
        "outputs/monitoring-december.html, their JSON beside (and the monitoring_metrics "
        "table), the loop in outputs/retraining.json.\n"
        "Browse runs (the retraining run holds its training and gate runs), the gate's verdict "
        "tables, the report and the registry (the new version's retrain_* tags) with "
        f"`uv run invoke mlflow{port_option}` (http://127.0.0.1:{ui})."
    )


def _split_production(before: str = "2012-12-01") -> None:
    """The production split in two: until November, and December."""
    import pandas as pd

    frame = pd.read_parquet("data/splits/production.parquet")
    Path(LOOP_DIR).mkdir(parents=True, exist_ok=True)
    early = frame["timestamp"] < pd.Timestamp(before)
    frame[early].to_parquet(f"{LOOP_DIR}/until_november.parquet", index=False)
    frame[~early].to_parquet(f"{LOOP_DIR}/december.parquet", index=False)


def _served_version(url: str) -> str:
    with urllib.request.urlopen(f"{url}/health", timeout=30) as answer:
        return str(json.load(answer)["model_version"])


def _wait_for_version(url: str, version: str, timeout: float = 180) -> None:
    """The service polls its alias (serving.poll_interval): wait until it serves ``version``."""
    deadline = time.monotonic() + timeout
    while _served_version(url) != version:
        if time.monotonic() > deadline:
            raise SystemExit(f"the service did not swap in version {version} in {timeout:g} s")
        time.sleep(2)
    print(f"The service now answers with version {version}")


def _retraining_outcome() -> dict[str, T.Any]:
    path = Path(RETRAINING_RESULTS)
    if not path.is_file():
        print("No retraining: monitoring found nothing detected (or the cooldown held)")
        return {}
    outcome: dict[str, T.Any] = json.loads(path.read_text(encoding="utf-8"))
    return outcome


def _print_loop(champion: str, retrained: dict[str, T.Any]) -> None:
    """RMSE month by month from outputs/monitoring-*.json: before and after the loop."""
    lines = ["", "month     version  rows  rmse    status"]
    for name in ("monitoring-until-november.json", "monitoring-december.json"):
        path = Path("outputs") / name
        if not path.is_file():
            continue
        document = json.loads(path.read_text(encoding="utf-8"))
        for window in document.get("windows", [document]):
            rmse = ((window.get("performance") or {}).get("current") or {}).get("rmse")
            lines.append(
                f"{str(window['window']['start'])[:7]}   {window.get('model_version')!s:>7}  "
                f"{window['window']['rows']:>4}  "
                f"{rmse if rmse is None else f'{float(rmse):6.1f}'}  {window['status']}"
            )
    print("\n".join(lines))
    if retrained:
        print(
            f"Retraining ({retrained.get('trigger')}): version {retrained.get('model_version')} "
            f"on {retrained.get('rows', {}).get('total')} rows, gate {retrained.get('verdict')}, "
            f"{'promoted' if retrained.get('promoted') else 'not promoted'} "
            f"(champion was version {champion})"
        )


def _check_port_free(port: int, host: str = "127.0.0.1") -> None:
    """Refuse a port something already listens on: the demo would otherwise wait for a
    service that cannot bind, or, worse, replay its traffic into someone else's."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(2)
        if probe.connect_ex((host, port)) == 0:
            raise SystemExit(
                f"port {port} on {host} is in use: choose another with "
                f"`invoke demo --port N` or {PORT_VARIABLE}=N"
            )


@contextlib.contextmanager
def _serving(c: Context, port: int = DEFAULT_PORT, timeout: float = 120) -> T.Iterator[str]:
    """The serving job in the background on ``port`` for the length of a block, then SIGTERM
    (it drains its capture); a SIGTERM to the demo itself stops the service too."""
    _check_port_free(port)
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "bikes", "confs/serving.yaml", "-e", f"job.port={port}"]
    )
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if server.poll() is not None:
                raise SystemExit(f"the prediction service exited with {server.returncode}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit(f"the prediction service did not start on {url}") from None
                time.sleep(0.5)
        yield url
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=30)
        signal.signal(signal.SIGTERM, previous)


def _exit_on_sigterm(signum: int, _frame: T.Any) -> None:
    """SIGTERM as an exception: the ``finally`` that stops the service runs."""
    raise SystemExit(128 + signum)


@task(iterable=["extra"], help={"extra": extra_help("job.current.step=MS")})
def monitor(c: Context, extra: list[str] | None = None) -> None:
    """Monitor the captured predictions (`-e job.current.step=MS ...` for a backfill)."""
    _job(c, "confs/monitoring.yaml", tuple(extra or ()))


@task(iterable=["extra"], help={"extra": extra_help("job.window.last=90D")})
def retrain(c: Context, extra: list[str] | None = None) -> None:
    """The closed loop by hand: retrain on the store's labels, gate, promote on pass.

    The gate compares with @champion; exit 3 when it blocks (`-e job.window.last=90D ...`)."""
    _job(c, "confs/retraining.yaml", tuple(extra or ()))


@task(iterable=["extra"], help={"extra": extra_help("job.poll_interval=5"), "port": PORT_HELP})
def serve(c: Context, extra: list[str] | None = None, port: int = 0) -> None:
    """Serve @champion on 127.0.0.1:8000 (or --port), capturing into predictions.db.

    Ctrl-C stops it."""
    _job(c, "confs/serving.yaml", (*_port_overrides("job.port", port), *(extra or ())))


@task(
    iterable=["extra"],
    help={"extra": extra_help("job.label_share=0.5"), "port": PORT_HELP},
)
def traffic(c: Context, extra: list[str] | None = None, port: int = 0) -> None:
    """Replay the production split against the running service, labels a day later."""
    url = _port_overrides("job.url", port, "http://127.0.0.1:{port}")
    _job(c, "confs/traffic.yaml", (*url, *(extra or ())))
