"""The MLflow UI on the local SQLite store."""

from invoke.context import Context
from invoke.tasks import task


@task
def mlflow(c: Context, host: str = "127.0.0.1", port: int = 5000) -> None:
    """Serve the MLflow UI and registry for mlflow.db, bound to loopback by default."""
    c.run(
        f"mlflow server --backend-store-uri sqlite:///mlflow.db "
        f"--artifacts-destination ./mlartifacts --host {host} --port {port}",
        pty=True,
    )
