"""The jobs, one task each, and the demo that chains them."""

from invoke.context import Context
from invoke.tasks import task


def _job(c: Context, config: str, extras: tuple[str, ...] = ()) -> None:
    overrides = " ".join(f"-e {extra}" for extra in extras)
    c.run(f"bikes {config} {overrides}".strip())


@task
def data(c: Context) -> None:
    """Derive the train, test and production parquet splits from data/hour.csv."""
    _job(c, "confs/data.yaml")


@task(iterable=["extra"])
def train(c: Context, extra: list[str] | None = None) -> None:
    """Train and register a model (e.g. `invoke train -e job.alias=challenger`)."""
    _job(c, "confs/training.yaml", tuple(extra or ()))


@task(iterable=["extra"])
def promote(c: Context, extra: list[str] | None = None) -> None:
    """Move the champion alias (to the newest version unless -e job.version=N)."""
    _job(c, "confs/promotion.yaml", tuple(extra or ()))


@task
def infer(c: Context) -> None:
    """Predict the production split with the champion into outputs/predictions.parquet."""
    _job(c, "confs/inference.yaml")


@task
def demo(c: Context) -> None:
    """Everything end to end on the embedded SQLite MLflow: data, train, promote, predict."""
    data(c)
    train(c)
    promote(c)
    infer(c)
    print(
        "\nDone. Predictions: outputs/predictions.parquet. "
        "Browse runs and the registry with `uv run invoke mlflow` (http://127.0.0.1:5000)."
    )
