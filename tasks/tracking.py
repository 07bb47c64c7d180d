"""The MLflow UI on the local SQLite store."""

import os
import sys

from invoke.context import Context
from invoke.exceptions import Exit
from invoke.tasks import task

from tasks.processes import run_group

MLFLOW_PORT_VARIABLE = "BIKES_MLFLOW_PORT"
DEFAULT_MLFLOW_PORT = 5000


def mlflow_port(port: int = 0) -> int:
    """The MLflow UI's port: the option, else BIKES_MLFLOW_PORT, else 5000."""
    if port:
        return int(port)
    return int(os.environ.get(MLFLOW_PORT_VARIABLE) or DEFAULT_MLFLOW_PORT)


@task(
    help={
        "host": "address to bind (default 127.0.0.1: loopback only)",
        "port": f"port to listen on (default: ${MLFLOW_PORT_VARIABLE}, else 5000)",
        "store": "backend store URI: runs and registry (default sqlite:///mlflow.db)",
        "artifacts": "where proxied artifacts live (default ./mlartifacts)",
        "grace": "seconds the server and its workers get to exit once stopped, then SIGKILL",
    }
)
def mlflow(
    c: Context,
    host: str = "127.0.0.1",
    port: int = 0,
    store: str = "sqlite:///mlflow.db",
    artifacts: str = "./mlartifacts",
    grace: int = 20,
) -> None:
    """Serve the MLflow UI and registry for mlflow.db, bound to loopback by default.

    The server runs in a process group of its own: Ctrl-C or SIGTERM to this task stops the
    server, its uvicorn workers and its job runner, all of them, within ``grace`` seconds."""
    # `python -m mlflow`: the environment running the task, whatever PATH says.
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        store,
        "--artifacts-destination",
        artifacts,
        "--host",
        host,
        "--port",
        str(mlflow_port(port)),
    ]
    code = run_group(command, grace=float(grace))
    if code > 0:
        raise Exit(code=code)
