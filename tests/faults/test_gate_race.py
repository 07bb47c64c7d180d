"""Concurrent gates: two, then five ``bikes confs/evaluations.yaml`` processes with
``promote_on_pass``, each with its own candidate, all started at once against one champion.

The alias may move only by compare-and-set: a gate promotes only if the champion is still the
version it compared against, else it exits 5 and nothing moves. So the promotions that
happened form one chain from the starting champion to the final one, each link a candidate
that beat the champion it replaced. Counted as promotions: acknowledged (gates that exited 0),
stored (links of that chain), lost (acknowledged, overwritten by another), duplicated (two
promotions against the same champion), stored_unacknowledged (the alias moved by a gate that
did not exit 0).
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import subprocess
import sys
import typing as T
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.metrics import root_mean_squared_error

from bikes.core.gate import VALIDATION_RUN_TAG
from bikes.core.models import GradientBoostingConfig
from tests.conftest import BIKES_CONTRACT, clean_environment, new_workspace, started
from tests.faults.harness import Counts, report

pytestmark = pytest.mark.faults

NAME = "faults-gate"
FEATURES = [
    "season",
    "yr",
    "mnth",
    "hr",
    "holiday",
    "weekday",
    "workingday",
    "weathersit",
    "temp",
    "atemp",
    "hum",
    "windspeed",
]
# Boosting iterations: more is better on the test split here (RMSE 204, 180, 154, 110, ...),
# so every candidate of a round beats any champion a previous round can have left.
CHAMPION_ITERATIONS = 3
ROUNDS = ((5, 8), (15, 20, 25, 30, 40))
GATE_TIMEOUT = 600.0  # seconds, for a round: five gates share two cores


@dataclasses.dataclass
class Registry:
    """The registered versions of NAME and each one's RMSE on the test split (ours, computed
    here, not the gate's)."""

    champion: str
    rounds: list[list[str]]
    rmse: dict[str, float]
    tracking_uri: str
    test_path: Path


@pytest.fixture(scope="module")
def gate_registry(
    services: dict[str, T.Any], train_frame: pd.DataFrame, splits_dir: Path
) -> Registry:
    """Small gradient-boosted models (a fraction of a second each), registered as versions
    of NAME in the session's MLflow store; the weakest is @champion."""
    test = pd.read_parquet(splits_dir / "test.parquet")
    rmse: dict[str, float] = {}
    versions: dict[int, str] = {}
    features = train_frame.loc[:, FEATURES]
    with started(services["mlflow_service"]) as service:
        for iterations in (CHAMPION_ITERATIONS, *(i for r in ROUNDS for i in r)):
            model = HistGradientBoostingRegressor(max_iter=iterations, random_state=0)
            model.fit(features, train_frame["cnt"])
            with mlflow.start_run(run_name=f"{NAME}-{iterations}"):
                info = mlflow.sklearn.log_model(
                    model,
                    name="model",
                    registered_model_name=NAME,
                    pip_requirements=["scikit-learn"],  # no environment inference: fast
                    skops_trusted_types=list(GradientBoostingConfig.skops_trusted_types),
                    signature=mlflow.models.infer_signature(features, model.predict(features)),
                )
            version = str(info.registered_model_version)
            versions[iterations] = version
            rmse[version] = float(
                root_mean_squared_error(test["cnt"], model.predict(test.loc[:, FEATURES]))
            )
        champion = versions[CHAMPION_ITERATIONS]
        service.client().set_registered_model_alias(NAME, "champion", champion)
    return Registry(
        champion=champion,
        rounds=[[versions[i] for i in r] for r in ROUNDS],
        rmse=rmse,
        tracking_uri=services["mlflow_service"].tracking_uri,
        test_path=splits_dir / "test.parquet",
    )


@dataclasses.dataclass(frozen=True)
class Gate:
    version: str
    code: int
    output: str


def _race(registry: Registry, versions: list[str], workspace: Path) -> list[Gate]:
    """One gate process per candidate, all started before any is waited for."""
    running = []
    for version in versions:
        log = workspace / f"gate-{version}.log"
        with log.open("wb") as out:
            command = [
                sys.executable,
                "-m",
                "bikes",
                "confs/evaluations.yaml",
                "-e",
                f"job.registered_model={NAME}",
                "-e",
                f"job.candidate_uri=models:/{NAME}/{version}",
                "-e",
                f"job.inputs.path={registry.test_path}",
                "-e",
                f"job.contract={BIKES_CONTRACT}",
                "-e",
                f"job.mlflow_service.tracking_uri={registry.tracking_uri}",
                "-e",
                f"job.run_name={NAME}-{version}",
                "-e",
                "job.bootstrap.resamples=30",
                "-e",
                "job.thresholds.root_mean_squared_error.threshold=1000",  # relative change only
                "-e",
                "job.thresholds.r2_score.threshold=0",
                "-e",
                "job.slicing.max_relative_regression=10",
                "-e",
                "job.promote_on_pass=true",
            ]
            process = subprocess.Popen(
                command, cwd=workspace, env=clean_environment(), stdout=out, stderr=out
            )
        running.append((version, process, log))
    gates = []
    for version, process, log in running:
        try:
            code = process.wait(timeout=GATE_TIMEOUT)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=60)
        gates.append(Gate(version, code, log.read_text(errors="replace")))
    return gates


def _judge(
    registry: Registry, start: str, gates: list[Gate], client: T.Any
) -> tuple[Counts, list[str], str, dict[str, str]]:
    """The counts, the chain of champions from ``start``, the final champion, and the
    champion each gate compared against."""
    compared = {}
    for gate in gates:
        run_id = client.get_model_version(NAME, gate.version).tags.get(VALIDATION_RUN_TAG)
        compared[gate.version] = (
            client.get_run(run_id).data.tags.get("baseline_version") if run_id else None
        )
    winners = {g.version: compared[g.version] for g in gates if g.code == 0}
    chain, left = [start], dict(winners)
    while True:
        following = [v for v, against in left.items() if against == chain[-1]]
        if len(following) != 1:
            break
        chain.append(following[0])
        del left[following[0]]
    final = str(client.get_model_version_by_alias(NAME, "champion").version)
    by_champion = collections.Counter(winners.values())
    linked = len(chain) - 1 if chain[-1] == final else 0
    counts = Counts(
        acknowledged=len(winners),
        stored=linked,
        lost=len(winners) - linked,
        duplicated=sum(n - 1 for n in by_champion.values()),
        unacknowledged=int(final not in chain),
    )
    return counts, chain, final, compared


@pytest.mark.parametrize("gates", [2, 5])
def test_concurrent_gates_never_leave_a_weaker_champion(
    gates: int,
    gate_registry: Registry,
    services: dict[str, T.Any],
    tmp_path: Path,
) -> None:
    candidates = gate_registry.rounds[[len(r) for r in ROUNDS].index(gates)]
    (tmp_path / "workspace").mkdir()
    workspace = new_workspace(tmp_path / "workspace")
    with started(services["mlflow_service"]) as service:
        client = service.client()
        start = str(client.get_model_version_by_alias(NAME, "champion").version)
        assert all(gate_registry.rmse[c] < gate_registry.rmse[start] for c in candidates)
        raced = _race(gate_registry, candidates, workspace)
        counts, chain, final, compared = _judge(gate_registry, start, raced, client)
        aliases = {g.version: client.get_model_version(NAME, g.version).aliases for g in raced}
    codes = {g.version: g.code for g in raced}
    rmse = {v: round(gate_registry.rmse[v], 1) for v in {start, *candidates}}
    line = report(
        f"{gates} concurrent gates",
        counts,
        exits=codes,
        compared_against=compared,
        chain=chain,
        rmse=rmse,
    )
    outputs = "\n".join(
        f"--- gate {g.version} (exit {g.code}) ---\n{g.output[-2500:]}" for g in raced
    )
    assert set(codes.values()) <= {0, 3, 5}, line + "\n" + outputs
    assert counts == Counts(len(chain) - 1, len(chain) - 1, 0, 0, 0), line + "\n" + outputs
    assert final == chain[-1] != start, line
    for replaced, winner in itertools.pairwise(chain):
        assert gate_registry.rmse[winner] < gate_registry.rmse[replaced], line  # never weaker
    losers = [g for g in raced if g.code == 5]
    assert losers, f"no gate lost the race: it was not a race\n{line}"
    for loser in losers:
        assert "bikes: promotion refused" in loser.output, line + "\n" + loser.output[-2500:]
        assert aliases[loser.version] == [], line  # nothing moved to it
