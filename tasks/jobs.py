"""The jobs, one task each, the deployment gate, and the demo that chains them."""

import contextlib
import signal
import subprocess
import sys
import time
import typing as T
import urllib.request

from invoke.context import Context
from invoke.tasks import task

GATE_BLOCKED = 3  # bikes' exit code when the evaluation gate blocks a candidate
MONTHLY_BACKFILL = (
    "job.current.start=2012-07-01",
    "job.current.end=2013-01-01",
    "job.current.step=MS",
)


def _job(c: Context, config: str, extras: tuple[str, ...] = (), warn: bool = False) -> int:
    overrides = " ".join(f"-e {extra}" for extra in extras)
    result = c.run(f"bikes {config} {overrides}".strip(), warn=warn)
    return int(result.exited) if result is not None else 0


@task
def data(c: Context) -> None:
    """Derive the train, test and production parquet splits from data/hour.csv."""
    _job(c, "confs/data.yaml")


@task(iterable=["extra"])
def train(c: Context, extra: list[str] | None = None) -> None:
    """Train and register a model (e.g. `invoke train -e job.alias=challenger`)."""
    _job(c, "confs/training.yaml", tuple(extra or ()))


@task(iterable=["extra"])
def evaluate(c: Context, extra: list[str] | None = None) -> None:
    """The evaluation gate alone: exit 0 lets the candidate through, exit 3 blocks it."""
    _job(c, "confs/evaluations.yaml", tuple(extra or ()))


@task(iterable=["extra"])
def promote(c: Context, extra: list[str] | None = None) -> None:
    """Move the champion alias (to the newest version unless -e job.version=N)."""
    _job(c, "confs/promotion.yaml", tuple(extra or ()))


@task
def infer(c: Context) -> None:
    """Predict the production split with the champion into outputs/predictions.parquet."""
    _job(c, "confs/inference.yaml")


@task(iterable=["extra"])
def gate(c: Context, training: str = "confs/training.yaml", extra: list[str] | None = None) -> None:
    """Train a challenger, evaluate it against the champion, promote it on pass (CI's gate)."""
    _job(c, training, ("job.alias=challenger", *(extra or ())))
    _job(c, "confs/evaluations.yaml", ("job.promote_on_pass=true",))


@task
def demo(c: Context) -> None:
    """End to end on the embedded SQLite MLflow: a model passes the gate, a worse one is blocked."""
    data(c)
    print("\n== 1. A first model through the gate (no champion yet: absolute thresholds) ==")
    gate(c)
    infer(c)
    print("\n== 2. A worse challenger (a shallow forest): the gate must block it ==")
    _job(c, "confs/examples/shallow-forest.yaml")
    code = _job(c, "confs/evaluations.yaml", warn=True)
    if code != GATE_BLOCKED:
        raise SystemExit(f"expected the gate to block the shallow forest (exit 3), got {code}")
    c.run("bikes confs/promotion.yaml", warn=True)  # refused: that version failed the gate
    print("\n== 3. Serve the champion and replay production traffic, labels a day late ==")
    with _serving(c):
        traffic(c)
    print("\n== 4. Monitor production month by month against the training reference ==")
    _job(c, "confs/monitoring.yaml", MONTHLY_BACKFILL)
    print(
        "\nDone. The champion kept its place; batch predictions are in "
        "outputs/predictions.parquet, live ones (with labels) in predictions.db; monitoring in "
        "outputs/monitoring.html and outputs/monitoring.json (and the monitoring_metrics table).\n"
        "Browse runs, the gate's verdict tables, the report and the registry with "
        "`uv run invoke mlflow` (http://127.0.0.1:5000)."
    )


@contextlib.contextmanager
def _serving(c: Context, url: str = "http://127.0.0.1:8000") -> T.Iterator[None]:
    """The serving job in the background for the length of a block, then SIGTERM (drains)."""
    server = subprocess.Popen([sys.executable, "-m", "bikes", "confs/serving.yaml"])
    try:
        deadline = time.monotonic() + 120
        while True:
            if server.poll() is not None:
                raise SystemExit(f"the prediction service exited with {server.returncode}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("the prediction service did not start") from None
                time.sleep(0.5)
        yield
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=120)


@task(iterable=["extra"])
def monitor(c: Context, extra: list[str] | None = None) -> None:
    """Monitor the captured predictions (`-e job.current.step=MS ...` for a backfill)."""
    _job(c, "confs/monitoring.yaml", tuple(extra or ()))


@task(iterable=["extra"])
def serve(c: Context, extra: list[str] | None = None) -> None:
    """Serve @champion on http://127.0.0.1:8000, capturing into predictions.db (Ctrl-C stops)."""
    _job(c, "confs/serving.yaml", tuple(extra or ()))


@task(iterable=["extra"])
def traffic(c: Context, extra: list[str] | None = None) -> None:
    """Replay the production split against the running service, labels a day later."""
    _job(c, "confs/traffic.yaml", tuple(extra or ()))
