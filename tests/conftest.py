"""Shared fixtures: real data splits, a real MLflow SQLite store, one trained model per session."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import subprocess
import sys
import time
import typing as T
import uuid
from pathlib import Path

import httpx
import mlflow
import numpy as np
import pandas as pd
import pytest

from bikes.io.services import LoggerService, MlflowService
from bikes.jobs.data import DataJob
from bikes.jobs.promotion import PromotionJob
from bikes.jobs.training import TrainingJob

REPO = Path(__file__).resolve().parents[1]
HOUR_CSV = REPO / "data" / "hour.csv"
BIKES_CONTRACT = REPO / "confs" / "bikes-contract.yaml"
GIBRALTAR_CONTRACT = REPO / "confs" / "examples" / "gibraltar-contract.yaml"
FAST_MODEL = {"KIND": "HistGradientBoosting", "max_iter": 60, "log_target": True}


@pytest.fixture(scope="session")
def splits_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default train/test/production parquet splits, derived once from the real CSV."""
    directory = tmp_path_factory.mktemp("splits")
    with DataJob.model_validate(
        {"source": str(HOUR_CSV), "contract": str(BIKES_CONTRACT), "output_dir": str(directory)}
    ) as job:
        job.run()
    return directory


@pytest.fixture(scope="session")
def train_frame(splits_dir: Path) -> pd.DataFrame:
    return pd.read_parquet(splits_dir / "train.parquet")


@pytest.fixture(scope="session")
def test_frame(splits_dir: Path) -> pd.DataFrame:
    return pd.read_parquet(splits_dir / "test.parquet")


@pytest.fixture(scope="session")
def mlflow_service(tmp_path_factory: pytest.TempPathFactory) -> MlflowService:
    """A real MLflow tracking store and registry in a SQLite file of the session's own."""
    directory = tmp_path_factory.mktemp("mlflow")
    for variable in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_RUN_ID"):
        os.environ.pop(variable, None)
    return MlflowService(
        tracking_uri=f"sqlite:///{directory / 'mlflow.db'}",
        artifact_root=str(directory / "mlartifacts"),
    )


@pytest.fixture(scope="session")
def services(mlflow_service: MlflowService) -> dict[str, T.Any]:
    """Keyword arguments that point any job at the session's MLflow store."""
    return {"mlflow_service": mlflow_service, "logger_service": LoggerService(level="WARNING")}


@pytest.fixture(scope="session")
def champion(splits_dir: Path, services: dict[str, T.Any]) -> dict[str, T.Any]:
    """One model trained, registered and promoted to champion for the whole session."""
    training = TrainingJob.model_validate(
        {
            "inputs": {"path": str(splits_dir / "train.parquet")},
            "contract": str(BIKES_CONTRACT),
            "model": FAST_MODEL,
            **services,
        }
    )
    with training as job:
        trained = job.run()
    # No gate has run in this store yet: force, as a first set-up would.
    with PromotionJob(version=int(trained["model_version"]), force=True, **services) as job:
        job.run()
    return trained


@pytest.fixture(scope="session")
def gibraltar_splits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The second example's train/test/production parquet (a classification, not bikes)."""
    from bikes.examples import gibraltar

    directory = tmp_path_factory.mktemp("gibraltar")
    gibraltar.write_splits(directory)
    return directory


@pytest.fixture(scope="session")
def classifier(gibraltar_splits: Path, services: dict[str, T.Any]) -> dict[str, T.Any]:
    """A classifier with a string feature and a text label, registered as `weather`,
    @champion: trained once per session from the contract alone."""
    training = TrainingJob.model_validate(
        {
            "inputs": {"path": str(gibraltar_splits / "train.parquet")},
            "contract": str(GIBRALTAR_CONTRACT),
            "model": {"max_iter": 40},
            "registered_model": "weather",
            "run_name": "training-weather",
            **services,
        }
    )
    with training as job:
        trained = job.run()
    promotion = PromotionJob.model_validate(
        {
            "registered_model": "weather",
            "version": int(trained["model_version"]),
            "force": True,
            **services,
        }
    )
    with promotion as job:
        job.run()
    return trained


@pytest.fixture(scope="session")
def foreign_regressor(
    services: dict[str, T.Any], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, T.Any]:
    """A regression model bikes did not train: a make_regression table with a string column,
    fitted by plain scikit-learn, logged by MLflow and registered as `sales-forecast`
    @champion. No bikes tags: no contract, no reference data. Its tables are written beside:
    `train` (with the model's own predictions, for a monitoring reference), `test` and
    `production` (the last third, with a shift in `a`)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.datasets import make_regression
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    x, y = make_regression(n_samples=1500, n_features=3, noise=10.0, random_state=7)
    shops = np.random.default_rng(7).choice(["north", "south", "east"], size=len(y))
    frame = pd.DataFrame(x, columns=["a", "b", "c"]).assign(shop=shops)
    frame["sales"] = y + np.where(shops == "north", 25.0, 0.0)
    frame["day"] = pd.date_range("2024-01-01", periods=len(frame), freq="h")
    features = ["a", "b", "c", "shop"]
    train, test, production = frame.iloc[:900], frame.iloc[900:1200], frame.iloc[1200:].copy()
    production["a"] = production["a"] + 1.5  # the world moved
    model = Pipeline(
        [
            (
                "encode",
                ColumnTransformer(
                    [("shop", OneHotEncoder(handle_unknown="ignore"), ["shop"])],
                    remainder="passthrough",
                ),
            ),
            ("ridge", Ridge()),
        ]
    ).fit(train[features], train["sales"])
    directory = tmp_path_factory.mktemp("foreign")
    reference = train.assign(prediction=model.predict(train[features]))
    paths = {"train": directory / "train.parquet"}
    reference.to_parquet(paths["train"])
    for name, part in (("test", test), ("production", production)):
        paths[name] = directory / f"{name}.parquet"
        part.reset_index(drop=True).to_parquet(paths[name])
    with started(services["mlflow_service"]) as service, mlflow.start_run(run_name="elsewhere"):
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            signature=mlflow.models.infer_signature(
                train[features], model.predict(train[features])
            ),
            registered_model_name="sales-forecast",
        )
        version = str(info.registered_model_version)
        service.client().set_registered_model_alias("sales-forecast", "champion", version)
    return {"name": "sales-forecast", "version": version, "paths": paths}


@contextlib.contextmanager
def started(service: MlflowService) -> T.Iterator[MlflowService]:
    """Point MLflow at the session's store for a block of direct MLflow calls."""
    service.start()
    try:
        yield service
    finally:
        service.stop()


def clean_environment() -> dict[str, str]:
    """This process's environment without MLFLOW_* variables: a subprocess under test points
    at the store its test chooses, whatever the caller's shell says."""
    return {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}


def serving_command(
    port: int, store_uri: str, spool_path: Path, tracking_uri: str, *extras: str
) -> list[str]:
    """The ``bikes`` serving job as a real process: its port, store, spool and MLflow store,
    then ``extras`` (``key=value`` overrides, each given with ``-e``)."""
    settings = [
        f"job.port={port}",
        f"job.store_uri={store_uri}",
        f"job.spool_path={spool_path}",
        f"job.mlflow_service.tracking_uri={tracking_uri}",
        *extras,
    ]
    overrides = [part for setting in settings for part in ("-e", setting)]
    return [sys.executable, "-m", "bikes", str(REPO / "confs" / "serving.yaml"), *overrides]


def new_workspace(directory: Path) -> Path:
    """A working directory with the repo's configs and raw data, as a new user has."""
    (directory / "data").mkdir()
    (directory / "data" / "hour.csv").symlink_to(HOUR_CSV)
    (directory / "confs").symlink_to(REPO / "confs")
    return directory


def run_bikes(
    args: list[str], cwd: Path, env: dict[str, str], timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """The CLI as a user runs it: a fresh process, its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "bikes", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def wait_until_up(
    url: str, process: subprocess.Popen[T.Any], output: T.Callable[[], str], timeout: float
) -> None:
    """Poll ``url`` until it answers 200; fail with the server's output if it exits first.

    Each poll waits up to 30 s: a refused connection returns at once, and a server that has
    accepted but answers slowly (a loaded machine) is up, not to be given up on."""
    deadline = time.monotonic() + timeout
    while True:
        assert process.poll() is None, output()[-3000:]
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=30).status_code == 200:
                return
        assert time.monotonic() < deadline, f"{url} did not answer within {timeout:g} s"
        time.sleep(0.2)


POSTGRES_URI = os.environ.get(
    "BIKES_TEST_POSTGRES_URI", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


@contextlib.contextmanager
def postgres_store(create: bool = True) -> T.Iterator[T.Any]:
    """A Store on the machine's real PostgreSQL, in a schema of the test's own, dropped after.

    ``create=False``: the schema only, without the store's tables."""
    import sqlalchemy as sa

    from bikes.io.store import Store

    schema = f"bikes_test_{uuid.uuid4().hex[:12]}"
    store = Store(POSTGRES_URI, schema=schema)
    if create:
        store.create()
    else:
        with store.engine.begin() as connection:
            connection.execute(sa.schema.CreateSchema(schema))
    try:
        yield store
    finally:
        with store.engine.begin() as connection:
            connection.execute(sa.schema.DropSchema(schema, cascade=True))
        store.dispose()


@contextlib.contextmanager
def postgres_database(prefix: str) -> T.Iterator[str]:
    """A database of its own on the machine's real PostgreSQL (its URI), dropped after."""
    import sqlalchemy as sa

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(POSTGRES_URI, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield sa.make_url(POSTGRES_URI).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> T.Iterator[T.Any]:
    """An empty capture store on SQLite, then on the machine's real PostgreSQL."""
    from bikes.io.store import Store

    if request.param == "sqlite":
        created = Store(f"sqlite:///{tmp_path / 'predictions.db'}")
        created.create()
        yield created
        created.dispose()
    else:
        with postgres_store() as created:
            yield created


@pytest.fixture(scope="session")
def production_store(
    champion: dict[str, T.Any],
    services: dict[str, T.Any],
    splits_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> str:
    """The production split as the service would have captured it (model_name bikes), 80%
    labelled."""
    from bikes.io.contracts import load_contract
    from bikes.io.store import Store

    contract = load_contract(str(BIKES_CONTRACT))
    timestamp, target = str(contract.timestamp), str(contract.target)
    frame = pd.read_parquet(splits_dir / "production.parquet")
    features = frame.loc[:, contract.feature_names]
    with started(services["mlflow_service"]):
        model = mlflow.pyfunc.load_model(f"models:/bikes/{champion['model_version']}")
    predictions = np.asarray(model.predict(features), dtype=float).tolist()
    uri = f"sqlite:///{tmp_path_factory.mktemp('monitoring') / 'predictions.db'}"
    store = Store(uri)
    store.create()
    ids = [uuid.uuid4().hex for _ in range(len(frame))]
    events = frame[timestamp].dt.to_pydatetime().tolist()
    store.write_predictions(
        [
            {
                "prediction_id": ids[i],
                "event_time": events[i],
                "received_time": events[i] + dt.timedelta(seconds=1),
                "model_name": "bikes",
                "model_version": champion["model_version"],
                "latency_ms": 5.0 + (i % 10),
                "inputs": inputs,
                "prediction": predictions[i],
            }
            for i, inputs in enumerate(features.to_dict(orient="records"))
        ]
    )
    labelled = np.random.default_rng(0).random(len(frame)) < 0.8
    targets = frame[target].astype(float).tolist()
    store.write_labels(
        [
            {
                "prediction_id": ids[i],
                "label_time": dt.datetime(2013, 1, 1),
                "target": targets[i],
            }
            for i in np.flatnonzero(labelled)
        ]
    )
    store.dispose()
    return uri


# Slowest files first. `--dist loadfile --no-loadscope-reorder` (tasks/checks.py) hands test
# files to workers in collection order, the next one when a worker runs low; in the default
# (written) order a 3-minute file could start last on one worker while the other idles. Ordered
# by the seconds each took in a measured run (tests/durations.json), longest first, a greedy
# longest-processing-time schedule: the tail is a short file. Files not in the JSON (new ones)
# follow, in their collection order. Every worker sorts the same collection the same way, as
# xdist requires. Within a file the written order stands (a stable sort). Only under xdist: a
# serial run keeps the written order.
DURATIONS = Path(__file__).with_name("durations.json")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("dist", "no") == "no" and not hasattr(config, "workerinput"):
        return
    import json

    try:
        seconds: dict[str, float] = json.loads(DURATIONS.read_text())
    except FileNotFoundError:
        return
    files = list(dict.fromkeys(item.nodeid.split("::", 1)[0] for item in items))
    known = sorted((f for f in files if f in seconds), key=lambda f: -seconds[f])
    rank = {f: i for i, f in enumerate([*known, *(f for f in files if f not in seconds)])}
    items.sort(key=lambda item: rank[item.nodeid.split("::", 1)[0]])


# Per-file wall time, opt in: ``BIKES_DURATIONS=path uv run invoke tests``. Under xdist the
# controller sees every worker's reports, so ``path`` gets each file's seconds (setup + call +
# teardown of its tests, module and session fixtures built for it included), in the format of
# tests/durations.json (copy it there to refresh the order), and ``path.timeline.json`` each
# file's worker and first start / last stop (seconds from the first test): which worker idled
# at the end.
_FILE_TIMES: dict[str, dict[str, T.Any]] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if not os.environ.get("BIKES_DURATIONS"):
        return
    path = report.nodeid.split("::", 1)[0]
    entry = _FILE_TIMES.setdefault(
        path, {"seconds": 0.0, "start": report.start, "stop": report.stop, "worker": ""}
    )
    entry["seconds"] += report.duration
    entry["start"] = min(entry["start"], report.start)
    entry["stop"] = max(entry["stop"], report.stop)
    node = getattr(report, "node", None)  # the xdist worker, on the controller
    if node is not None:
        entry["worker"] = str(node.gateway.id)


def pytest_sessionfinish(session: pytest.Session) -> None:
    target = os.environ.get("BIKES_DURATIONS")
    if not target or hasattr(session.config, "workerinput") or not _FILE_TIMES:
        return
    import json

    seconds = {path: round(entry["seconds"], 1) for path, entry in _FILE_TIMES.items()}
    Path(target).write_text(json.dumps(seconds, indent=1, sort_keys=True) + "\n")
    first = min(entry["start"] for entry in _FILE_TIMES.values())
    timeline = {
        path: {
            "worker": entry["worker"],
            "start": round(entry["start"] - first, 1),
            "stop": round(entry["stop"] - first, 1),
            "seconds": round(entry["seconds"], 1),
        }
        for path, entry in sorted(_FILE_TIMES.items(), key=lambda item: item[1]["start"])
    }
    Path(f"{target}.timeline.json").write_text(json.dumps(timeline, indent=1) + "\n")
