from __future__ import annotations

import contextlib
import dataclasses
import subprocess
import sys
import threading
import time
import typing as T
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from loguru import logger
from mlflow.models.evaluation.validation import ModelValidationFailedException
from mlflow.tracking import MlflowClient
from sklearn.tree import DecisionTreeRegressor

from bikes import scripts
from bikes.core.errors import InputError, PromotionConflictError
from bikes.core.gate import VALIDATION_CHAMPION_TAG, VALIDATION_STATUS_TAG
from bikes.io import registry
from bikes.io.contracts import load_contract
from bikes.io.services import LoggerService, MlflowService
from bikes.jobs.evaluations import EvaluationsJob
from bikes.jobs.promotion import PromotionJob
from tests.conftest import BIKES_CONTRACT, clean_environment, postgres_database, started

CONTRACT = load_contract(str(BIKES_CONTRACT))


def test_alias_moves_to_the_asked_version_and_back(
    champion: dict[str, T.Any], services: dict[str, T.Any]
) -> None:
    version = int(champion["model_version"])
    with PromotionJob(alias="staging", version=version, force=True, **services) as job:
        first = job.run()
    assert first == {"model_version": str(version), "previous_version": None, "alias": "staging"}
    with PromotionJob(alias="staging", force=True, **services) as job:  # newest version
        second = job.run()
    assert int(second["model_version"]) >= version
    assert second["previous_version"] == str(version)


def test_unknown_version_is_refused(champion: dict[str, T.Any], services: dict[str, T.Any]) -> None:
    with (
        PromotionJob(version=999, **services) as job,
        pytest.raises(InputError, match="no version 999"),
    ):
        job.run()


def test_unvalidated_version_is_refused_unless_forced(
    champion: dict[str, T.Any], services: dict[str, T.Any]
) -> None:
    version = int(champion["model_version"])
    job = PromotionJob(alias="refused", version=version, **services)
    with job, pytest.raises(InputError, match="validation_status is unset, not passed"):
        job.run()
    with job:
        client = services["mlflow_service"].client()
        assert "refused" not in client.get_registered_model("bikes").aliases


# -- compare-and-set: concurrent gates --------------------------------------------------------
RACE_ROWS = 800
CHAMPION_NOISE = 40.0  # each model predicts truth + noise * z: its RMSE is noise * rms(z)
GATE_THRESHOLDS = "{root_mean_squared_error: {threshold: 100, min_relative_change: 0.01}}"


@dataclasses.dataclass
class Registry:
    """A real MLflow tracking store and registry of the test's own, SQLite or PostgreSQL."""

    uri: str
    artifacts: Path
    rows: Path
    frame: pd.DataFrame
    z: np.ndarray

    @property
    def service(self) -> MlflowService:
        return MlflowService(tracking_uri=self.uri, artifact_root=str(self.artifacts))

    def client(self) -> MlflowClient:
        return MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)

    def register(self, name: str, noise: float) -> str:
        """A tree that predicts the gate's rows as truth + noise * z: weaker as noise grows,
        in every row and so in every segment."""
        features = self.frame.loc[:, CONTRACT.feature_names]
        target = self.frame[CONTRACT.require_target("test")].to_numpy(float) + noise * self.z
        model = DecisionTreeRegressor(random_state=0).fit(features, target)
        with started(self.service), mlflow.start_run(run_name=f"register-{noise:g}"):
            info = mlflow.sklearn.log_model(
                model,
                name="model",
                registered_model_name=name,
                signature=mlflow.models.infer_signature(features, model.predict(features)),
                skops_trusted_types=["sklearn.tree._tree.Tree"],
            )
        return str(info.registered_model_version)

    def champion_of(self, name: str) -> str:
        return str(self.client().get_model_version_by_alias(name, "champion").version)

    def tags(self, name: str, version: str) -> dict[str, str]:
        return dict(self.client().get_model_version(name, version).tags)


@contextlib.contextmanager
def _registry(kind: str, directory: Path, test_frame: pd.DataFrame) -> T.Iterator[Registry]:
    rows = directory / "rows.parquet"
    frame = test_frame.iloc[:RACE_ROWS].reset_index(drop=True)
    frame.to_parquet(rows)
    z = np.random.default_rng(12).standard_normal(len(frame))
    with contextlib.ExitStack() as stack:
        if kind == "sqlite":
            uri = f"sqlite:///{directory / 'mlflow.db'}"
        else:
            uri = stack.enter_context(postgres_database("bikes_promotion"))
        registry_ = Registry(uri, directory / "mlartifacts", rows, frame, z)
        # The experiment first, with local artifacts: a database store would default to ./mlruns.
        registry_.client().create_experiment(
            "bikes", artifact_location=registry_.artifacts.as_uri()
        )
        yield registry_


@pytest.fixture(scope="module")
def race_registry(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    test_frame: pd.DataFrame,
) -> T.Iterator[Registry]:
    """One per backend (``indirect`` parameter), shared by that backend's races."""
    kind = request.param
    with _registry(kind, tmp_path_factory.mktemp(f"race-{kind}"), test_frame) as made:
        yield made


def _gate_config(registry_: Registry, name: str, directory: Path) -> Path:
    config = directory / f"gate-{name}.yaml"
    config.write_text(
        "job:\n  KIND: EvaluationsJob\n"
        f"  inputs: {{path: '{registry_.rows}'}}\n"
        f"  contract: '{BIKES_CONTRACT}'\n"
        f"  registered_model: {name}\n"
        "  promote_on_pass: true\n"
        "  bootstrap: {resamples: 20}\n"
        f"  thresholds: {GATE_THRESHOLDS}\n"
        f"  mlflow_service: {{tracking_uri: '{registry_.uri}', artifact_root: '{registry_.artifacts}'}}\n"
    )
    return config


def _race(
    registry_: Registry, name: str, noises: list[float], directory: Path
) -> tuple[str, dict[str, float], dict[str, int], dict[str, str]]:
    """Champion and candidates registered; every candidate's gate started at once while the
    test holds the registry's promotion lock, released only once every gate has judged (so
    all compared against the same champion, as gates overlapping in time do). Returns the
    champion, each candidate's noise, exit code and stderr, by version."""
    champion = registry_.register(name, CHAMPION_NOISE)
    registry_.client().set_registered_model_alias(name, "champion", champion)
    candidates = {registry_.register(name, noise): noise for noise in noises}
    config = _gate_config(registry_, name, directory)
    processes: dict[str, subprocess.Popen[str]] = {}
    logs: dict[str, Path] = {}
    with contextlib.ExitStack() as files:
        with registry.promotion_lock(registry_.uri, f"{name}@champion"):
            for version in candidates:
                logs[version] = directory / f"{name}-{version}.err"
                processes[version] = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "bikes",
                        str(config),
                        "-e",
                        f"job.candidate_uri=models:/{name}/{version}",
                    ],
                    cwd=directory,
                    env=clean_environment(),
                    stdout=subprocess.DEVNULL,
                    stderr=files.enter_context(logs[version].open("w")),
                    text=True,
                )
            deadline = time.monotonic() + 600
            while not all(
                process.poll() is not None or VALIDATION_STATUS_TAG in registry_.tags(name, version)
                for version, process in processes.items()
            ):
                assert time.monotonic() < deadline, "the gates did not judge within 600 s"
                time.sleep(0.5)
            # Every gate has judged (or failed): none could promote while the lock was held.
            assert registry_.champion_of(name) == champion
        codes = {version: process.wait(timeout=600) for version, process in processes.items()}
    errors = {version: path.read_text() for version, path in logs.items()}
    return champion, candidates, codes, errors


def _rmse(registry_: Registry, noise: float) -> float:
    return float(noise * np.sqrt(np.mean(registry_.z**2)))


@pytest.mark.parametrize(
    ("race_registry", "gates"),
    [("sqlite", 2), ("sqlite", 5), ("postgresql", 2)],
    indirect=["race_registry"],
)
def test_concurrent_gates_promote_one_candidate_and_the_others_exit_5(
    race_registry: Registry, gates: int, tmp_path: Path
) -> None:
    """Two, then five gates at once, all against the champion (noise 40): exactly one
    candidate that beat it becomes champion; every other one that passed exits 5 naming both
    versions, with its tags as evaluated; a candidate weaker than the champion exits 3. On a
    SQLite registry (file lock) and on PostgreSQL (advisory lock)."""
    name = f"race{gates}"
    noises = [30.0, 20.0] if gates == 2 else [35.0, 30.0, 25.0, 20.0, 60.0]
    champion, candidates, codes, errors = _race(race_registry, name, noises, tmp_path)
    passers = [v for v, noise in candidates.items() if noise < CHAMPION_NOISE]
    weaker = [v for v, noise in candidates.items() if noise > CHAMPION_NOISE]
    print({candidates[v]: codes[v] for v in candidates})
    winners = [v for v in passers if codes[v] == scripts.EXIT_OK]
    assert len(winners) == 1, (codes, errors)
    winner = winners[0]
    assert race_registry.champion_of(name) == winner
    assert _rmse(race_registry, candidates[winner]) < _rmse(race_registry, CHAMPION_NOISE)
    assert race_registry.tags(name, winner)[VALIDATION_CHAMPION_TAG] == champion
    for version in weaker:
        assert codes[version] == scripts.EXIT_GATE, errors[version]
        assert race_registry.tags(name, version).get(VALIDATION_STATUS_TAG) == "failed"
    for version in passers:
        tags = race_registry.tags(name, version)
        # as evaluated, promoted or not
        assert tags.get(VALIDATION_STATUS_TAG) == "passed", (codes[version], errors[version])
        assert tags[VALIDATION_CHAMPION_TAG] == champion
        if version == winner:
            continue
        assert codes[version] == scripts.EXIT_CONFLICT == 5, errors[version]
        assert (
            f"bikes: promotion refused: {name}@champion is now version {winner}, but the gate "
            f"compared models:/{name}/{version} against version {champion}: nothing moved"
        ) in errors[version]
    if gates == 2:
        # The loser re-runs its gate, as the message says, now against the winner: the
        # stronger of the two ends as champion, whichever won the race.
        (loser,) = [v for v in passers if v != winner]
        # The promotion job holds the gate to the champion it compared against, too.
        promotion = PromotionJob(
            registered_model=name,
            version=int(loser),
            mlflow_service=race_registry.service,
            logger_service=LoggerService(level="WARNING"),
        )
        with (
            promotion,
            pytest.raises(
                PromotionConflictError,
                match=rf"^{name}@champion is now version {winner}, but the gate compared "
                rf"models:/{name}/{loser} against version {champion}: nothing moved",
            ),
        ):
            promotion.run()
        assert race_registry.champion_of(name) == winner
        job = EvaluationsJob.model_validate(
            {
                "inputs": {"path": str(race_registry.rows)},
                "contract": str(BIKES_CONTRACT),
                "registered_model": name,
                "candidate_uri": f"models:/{name}/{loser}",
                "promote_on_pass": True,
                "bootstrap": {"resamples": 20},
                "thresholds": {
                    "root_mean_squared_error": {"threshold": 100, "min_relative_change": 0.01}
                },
                "mlflow_service": race_registry.service,
                "logger_service": LoggerService(level="WARNING"),
            }
        )
        stronger = min(passers, key=lambda v: candidates[v])
        with job:
            if loser == stronger:
                assert job.run()["champion_version"] == winner
            else:
                with pytest.raises(ModelValidationFailedException):
                    job.run()
        assert race_registry.champion_of(name) == stronger


# -- the lock itself ----------------------------------------------------------------------------
@contextlib.contextmanager
def _bare_registry(kind: str, directory: Path) -> T.Iterator[tuple[str, MlflowClient]]:
    """A real registry with model ``m``, versions 1..3 (no artifacts needed), @champion 1."""
    with contextlib.ExitStack() as stack:
        if kind == "sqlite":
            uri = f"sqlite:///{directory / 'registry.db'}"
        else:
            uri = stack.enter_context(postgres_database("bikes_lock"))
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        client.create_registered_model("m")
        for _ in range(3):
            client.create_model_version("m", source=str(directory), run_id=None)
        client.set_registered_model_alias("m", "champion", "1")
        yield uri, client


def _waiting_on_the_lock(kind: str, uri: str, messages: list[str]) -> bool:
    if kind == "sqlite":
        return any("Waiting for the promotion lock" in m for m in messages)
    import sqlalchemy as sa

    engine = sa.create_engine(uri, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as connection:
            waiting = connection.execute(
                sa.text(
                    "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
                    "WHERE l.locktype = 'advisory' AND NOT l.granted AND d.datname = :name"
                ),
                {"name": sa.make_url(uri).database},
            ).scalar_one()
    finally:
        engine.dispose()
    return bool(waiting)


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_promote_waits_for_the_lock_then_refuses_a_champion_that_moved(
    kind: str, tmp_path: Path
) -> None:
    """A promotion queues behind the lock (seen waiting: the log line on SQLite, pg_locks on
    PostgreSQL); the champion moves meanwhile; once it gets the lock it re-checks, refuses,
    and moves nothing."""
    with _bare_registry(kind, tmp_path) as (uri, client):
        v3 = registry.ModelRef(name="m", version="3", run_id=None)
        outcome: dict[str, T.Any] = {}

        def promote() -> None:
            try:
                outcome["previous"] = registry.promote(client, v3, "champion", "1", uri)
            except PromotionConflictError as error:
                outcome["error"] = error

        messages: list[str] = []
        sink = logger.add(messages.append, level="INFO", format="{message}")
        try:
            with registry.promotion_lock(uri, "m@champion") as how:
                assert how == ("file" if kind == "sqlite" else "advisory")
                contender = threading.Thread(target=promote)
                contender.start()
                deadline = time.monotonic() + 60
                while not _waiting_on_the_lock(kind, uri, messages):
                    assert time.monotonic() < deadline, "the promotion never waited"
                    time.sleep(0.1)
                assert contender.is_alive()  # held back by the lock
                client.set_registered_model_alias("m", "champion", "2")  # another gate won
            contender.join(timeout=60)
        finally:
            logger.remove(sink)
        assert str(outcome["error"]) == (
            "m@champion is now version 2, but the gate compared models:/m/3 against version "
            "1: nothing moved; run the gate again to compare version 3 with the new champion"
        )
        assert str(client.get_model_version_by_alias("m", "champion").version) == "2"
        # Against the right champion it moves; promoting it again is a no-op, not a conflict.
        assert registry.promote(client, v3, "champion", "2", uri) == "2"
        assert registry.promote(client, v3, "champion", "2", uri) == "3"
        assert str(client.get_model_version_by_alias("m", "champion").version) == "3"


def test_a_first_deploy_conflicts_with_a_champion_set_meanwhile(tmp_path: Path) -> None:
    with _bare_registry("sqlite", tmp_path) as (uri, client):
        v1 = registry.ModelRef(name="m", version="1", run_id=None)
        assert registry.promote(client, v1, "prod", None, uri) is None
        v2 = registry.ModelRef(name="m", version="2", run_id=None)
        with pytest.raises(PromotionConflictError, match=r"against no version \(a first deploy\)"):
            registry.promote(client, v2, "prod", None, uri)
        assert str(client.get_model_version_by_alias("m", "prod").version) == "1"
        # A model that does not exist yet has no alias; any other registry error is raised.
        assert registry.alias_version(client, "nothing-here", "champion") is None


def test_an_http_registry_offers_no_lock() -> None:
    with registry.promotion_lock("http://127.0.0.1:5000", "m@champion") as how:
        assert how == "none"
