"""The CLI, in process for its branches and as real subprocesses end to end."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import typing as T
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from bikes import scripts
from tests.conftest import REPO, clean_environment, new_workspace, run_bikes


def test_schema_lists_every_job_kind(capsys: pytest.CaptureFixture[str]) -> None:
    assert scripts.main(["--schema"]) == scripts.EXIT_OK
    schema = json.loads(capsys.readouterr().out)
    kinds = set(schema["properties"]["job"]["discriminator"]["mapping"])
    assert kinds == {
        "DataJob",
        "TrainingJob",
        "EvaluationsJob",
        "PromotionJob",
        "InferenceJob",
        "ServingJob",
        "TrafficJob",
        "MonitoringJob",
        "RetrainingJob",
        "ExportJob",
    }


def test_no_config_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert scripts.main([]) == scripts.EXIT_INPUT
    assert "give at least one CONFIG" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("yaml", "extras", "culprit"),
    [
        ("job:\n  KIND: Nope\n", [], "job: Input tag 'Nope' found using 'KIND'"),
        (
            "job:\n  KIND: TrainingJob\n  validation_share: high\n",
            [],
            "job.validation_share: Input should be a valid number",
        ),
        (
            "job:\n  KIND: TrainingJob\n",
            ["job.model.max_iter=abc"],
            "job.model.max_iter: Input should be a valid integer",
        ),
        (
            "job:\n  KIND: PromotionJob\n  colour: red\n",
            [],
            "job.colour: Extra inputs are not permitted",
        ),
        ("job:\n  KIND: TrainingJob\n  inputs: {}\n", [], "job.inputs.path: Field required"),
        ("jobs: {}\n", [], "job: Field required"),
        ("job:\n  KIND: TrainingJob\n", [], "job.contract: Field required"),
        (
            "job:\n  KIND: TrainingJob\n  contract: {task: regresion, target: y}\n",
            [],
            "job.contract.task: Input should be 'regression' or 'classification'",
        ),
        (
            "job:\n  KIND: TrainingJob\n  contract: {target: y, colour: red}\n",
            [],
            "job.contract.colour: Extra inputs are not permitted",
        ),
        (
            "job:\n  KIND: TrainingJob\n  contract: no/such/contract.yaml\n",
            [],
            "no/such/contract.yaml: config file not found",
        ),
    ],
)
def test_config_errors_name_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], yaml: str, extras: list[str], culprit: str
) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(yaml)
    argv = [str(config)] + [item for extra in extras for item in ("-e", extra)]
    assert scripts.main(argv) == scripts.EXIT_INPUT
    assert culprit in capsys.readouterr().err


def test_missing_config_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert scripts.main([str(tmp_path / "absent.yaml")]) == scripts.EXIT_INPUT
    assert "absent.yaml: config file not found" in capsys.readouterr().err


def test_job_input_error_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], services: dict[str, T.Any]
) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        f"job:\n  KIND: TrainingJob\n  inputs: {{path: {tmp_path}/none.parquet}}\n"
        f"  contract: {{target: cnt}}\n"
    )
    tracking = services["mlflow_service"].tracking_uri
    argv = [str(config), "-e", f"job.mlflow_service.tracking_uri={tracking}"]
    assert scripts.main(argv) == scripts.EXIT_INPUT
    assert "none.parquet: parquet file not found" in capsys.readouterr().err


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A fresh working directory with the repo's configs and data, as a new user has."""
    return new_workspace(tmp_path_factory.mktemp("workspace")), clean_environment()


def test_cli_end_to_end_in_subprocesses(workspace: tuple[Path, dict[str, str]]) -> None:
    cwd, env = workspace
    steps = [
        ["confs/data.yaml"],
        ["confs/training.yaml", "-e", "job.model.max_iter=40", "-e", "job.alias=challenger"],
        ["confs/evaluations.yaml", "-e", "job.bootstrap.resamples=20"],  # promotes on pass
        ["confs/inference.yaml"],
    ]
    for step in steps:
        done = run_bikes(step, cwd, env)
        assert done.returncode == 0, done.stderr
        assert "Traceback" not in done.stderr
    predictions = pd.read_parquet(cwd / "outputs" / "predictions.parquet")
    assert len(predictions) == 4376
    assert set(predictions["model_version"]) == {"1"}
    assert (cwd / "mlflow.db").is_file()
    assert any((cwd / "mlartifacts").iterdir())
    # A worse challenger: the gate exits 3 (CI stops), and promotion refuses it too.
    assert run_bikes(["confs/examples/shallow-forest.yaml"], cwd, env).returncode == 0
    blocked = run_bikes(["confs/evaluations.yaml", "-e", "job.bootstrap.resamples=20"], cwd, env)
    assert blocked.returncode == 3, blocked.stderr
    assert "bikes: gate failed: candidate models:/bikes/2 blocked" in blocked.stderr
    refused = run_bikes(["confs/promotion.yaml"], cwd, env)
    assert refused.returncode == 2
    assert "validation_status is failed" in refused.stderr


def test_cli_exit_codes_in_subprocesses(workspace: tuple[Path, dict[str, str]]) -> None:
    cwd, env = workspace
    bad = run_bikes(["confs/training.yaml", "-e", "job.inputs.path=missing.parquet"], cwd, env)
    assert bad.returncode == 2
    assert (
        bad.stderr.strip().splitlines()[-1]
        == "bikes: error: missing.parquet: parquet file not found"
    )
    assert "Traceback" not in bad.stderr


def test_mlflow_run_entry_point(workspace: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    cwd, env = workspace
    tracking = f"sqlite:///{tmp_path / 'projects.db'}"
    mlflow.set_tracking_uri(tracking)
    try:
        mlflow.create_experiment("bikes", artifact_location=(tmp_path / "artifacts").as_uri())
    finally:
        mlflow.set_tracking_uri(None)
    splits = cwd / "data" / "splits" / "train.parquet"
    assert splits.is_file()  # written by the end-to-end test above
    # `mlflow run` runs the entry point in the project's directory: paths must be absolute.
    config = tmp_path / "training.yaml"
    config.write_text(
        f"job:\n  KIND: TrainingJob\n  inputs: {{path: {splits}}}\n  model: {{max_iter: 30}}\n"
        f"  contract: {REPO / 'confs' / 'bikes-contract.yaml'}\n"
    )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mlflow",
            "run",
            str(REPO),
            "-P",
            f"conf_file={config}",
            "--env-manager",
            "local",
            "--experiment-name",
            "bikes",
        ],
        cwd=cwd,
        env={**env, "MLFLOW_TRACKING_URI": tracking},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    mlflow.set_tracking_uri(tracking)
    try:
        runs = mlflow.search_runs(experiment_names=["bikes"])
        versions = mlflow.MlflowClient().search_model_versions("name = 'bikes'")
    finally:
        mlflow.set_tracking_uri(None)
    assert list(runs["status"]) == ["FINISHED"]
    assert [v.run_id for v in versions] == list(runs["run_id"])


def _help() -> str:
    done = subprocess.run(
        [sys.executable, "-m", "bikes", "--help"],
        env=clean_environment(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _section(text: str, title: str) -> list[str]:
    """The indented lines under ``title`` in the help's epilog."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(title))
    body = []
    for line in lines[start + 1 :]:
        if not line.startswith("  "):
            break
        body.append(line.strip())
    return body


def test_help_lists_every_job_kind_with_a_line_each() -> None:
    from bikes.settings import JOB_MODULES  # what the CLI dispatches on

    listed = {line.split()[0]: line.split(maxsplit=1)[1] for line in _section(_help(), "jobs")}
    assert set(listed) == set(JOB_MODULES)
    assert all(len(description) > 20 for description in listed.values())


def test_help_lists_the_exit_codes_the_readme_documents() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    documented = {int(code) for code in re.findall(r"^\| (\d) \| ", readme, flags=re.M)}
    listed = {int(line.split()[0]): line for line in _section(_help(), "exit codes")}
    assert set(listed) == documented == set(range(8))
    # The codes a script branches on say what they mean.
    assert "gate" in listed[3]
    assert "monitoring" in listed[4]
    assert "champion moved" in listed[5]


# Each step runs after the ones above it in one fresh process: sys.modules only grows, so
# MLflow absent after a step means that step imported it no more than the steps before it did.
LIGHT_IMPORTS = [
    "import bikes.scripts",
    "from bikes import scripts; scripts.parser().format_help()",
    # A monitoring job's module: MLflow loads in the background while the job reads and
    # scores (MlflowService.start_in_background), so the module itself must not import it.
    "import bikes.jobs.monitoring",
    "import bikes.jobs.training",  # the same, while both models are fitted
    # A config error is answered without MLflow (its import took seconds per typo).
    "assert scripts.main(['no-such-config.yaml']) == scripts.EXIT_INPUT",
]


def test_the_cli_and_the_monitoring_job_import_mlflow_only_when_a_job_needs_it() -> None:
    steps = "".join(f"{code}\nprint('mlflow' in sys.modules)\n" for code in LIGHT_IMPORTS)
    done = subprocess.run(
        [sys.executable, "-c", f"import sys\n{steps}"],
        env=clean_environment(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    imported = dict(zip(LIGHT_IMPORTS, done.stdout.split(), strict=True))
    assert imported == dict.fromkeys(LIGHT_IMPORTS, "False")


def test_mlflow_started_in_the_background_still_fails_the_job_before_any_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], train_frame: pd.DataFrame
) -> None:
    """From the CLI, training loads MLflow while it fits (``defer_start``); a tracking server
    that does not answer is still exit 2 naming it, and the job logs no model anywhere."""
    train_frame.head(300).to_parquet(tmp_path / "train.parquet")
    config = tmp_path / "training.yaml"
    config.write_text(
        f"job:\n  KIND: TrainingJob\n  inputs: {{path: {tmp_path / 'train.parquet'}}}\n"
        f"  contract: {REPO / 'confs' / 'bikes-contract.yaml'}\n  model: {{max_iter: 5}}\n"
        "  mlflow_service: {tracking_uri: 'http://127.0.0.1:9', timeout: 1}\n"
    )
    assert scripts.main([str(config)]) == scripts.EXIT_INPUT
    err = capsys.readouterr().err
    assert "bikes: error: MLflow tracking at http://127.0.0.1:9: unreachable within 1 s" in err
    assert "Fitting a HistGradientBoosting regression on 300 rows" in err  # it did fit first


def test_a_bugs_traceback_is_shown_with_its_credentials_redacted() -> None:
    """A bug (any exception not a ``BikesError``) exits 1 with its traceback, and a URL in it
    keeps its server but loses its password, like every other line the CLI prints. The bug
    is injected into a real ``bikes`` process: the data job's ``run`` raises."""
    probe = (
        "import sys\nfrom bikes import scripts\nfrom bikes.jobs.data import DataJob\n"
        "def broken(self):\n"
        "    raise RuntimeError('no answer from postgresql://bikes:s3cret@db.internal/capture')\n"
        "DataJob.run = broken\n"
        "sys.argv = ['bikes', sys.argv[1]]\n"
        "sys.exit(scripts.main())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, str(REPO / "confs" / "data.yaml")],
        cwd=REPO,  # the config names its contract by a relative path
        env=clean_environment(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == scripts.EXIT_UNEXPECTED == 1, done.stderr[-3000:]
    assert "Traceback (most recent call last)" in done.stderr
    assert "in broken" in done.stderr  # the frames are there, not only the message
    assert "RuntimeError: no answer from postgresql://bikes:***@db.internal/capture" in (
        done.stderr
    )
    assert "s3cret" not in done.stderr
