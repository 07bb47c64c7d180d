"""docker/compose.yaml: valid for Compose, loopback-only ports, secrets from .env only, and
container commands that are the same entry points the tests run."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import typing as T
from pathlib import Path

import yaml

from bikes import scripts
from tests.conftest import REPO

DOCKER = REPO / "docker"
COMPOSE = DOCKER / "compose.yaml"
ENV_EXAMPLE = DOCKER / ".env.example"


def _compose() -> dict[str, T.Any]:
    return T.cast(dict[str, T.Any], yaml.safe_load(COMPOSE.read_text()))


def _compose_config(env_file: Path) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("docker-compose")
    assert tool, "Debian's docker-compose is installed by .ci/run"
    return subprocess.run(
        [tool, "--env-file", str(env_file), "-f", str(COMPOSE), "config"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_docker_compose_validates_the_file(tmp_path: Path) -> None:
    """Debian's docker-compose (installed by .ci/run) parses, interpolates and validates the
    file against the Compose schema; no Docker engine is needed for ``config``."""
    done = _compose_config(ENV_EXAMPLE)
    assert done.returncode == 0, done.stderr
    resolved = yaml.safe_load(done.stdout)
    assert set(resolved["services"]) == {
        "postgres",
        "mlflow",
        "service",
        "scheduler",
        "prometheus",
        "grafana",
    }
    assert "change-me" in resolved["services"]["service"]["environment"]["BIKES_STORE_URI"]
    empty = tmp_path / "empty.env"
    empty.write_text("")
    missing = _compose_config(empty)
    assert missing.returncode != 0  # no password, no stack
    assert "POSTGRES_PASSWORD" in missing.stderr


def test_every_port_binds_loopback_and_secrets_come_from_the_environment() -> None:
    compose = _compose()
    published = [
        (name, port)
        for name, service in compose["services"].items()
        for port in service.get("ports", [])
    ]
    assert len(published) == 5
    for name, port in published:
        assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
    text = COMPOSE.read_text()
    for name, service in compose["services"].items():
        environment = service.get("environment", {})
        for key, value in environment.items():
            if "PASSWORD" in key:
                assert str(value).startswith("${"), f"{name}: {key} is not read from .env"
        for value in [*environment.values(), *service.get("command", [])]:
            for secret in re.findall(r"://[^:/@\s]+:([^@\s]+)@", str(value)):
                assert secret.startswith("${"), f"{name}: a password written into {value}"
    variables = set(re.findall(r"\$\{([A-Z_]+)", text))
    example = {
        line.split("=", 1)[0]
        for line in ENV_EXAMPLE.read_text().splitlines()
        if "=" in line and not line.startswith("#")
    }
    assert variables <= example, f"not in .env.example: {variables - example}"
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", str(DOCKER / ".env")], cwd=REPO, check=False
    )
    assert ignored.returncode == 0, "docker/.env must never be committed"


def test_containers_run_the_cli_with_configs_that_exist() -> None:
    """The service and the scheduler's crontab call ``bikes`` with repo configs that parse."""
    compose = _compose()
    service = compose["services"]["service"]["command"]
    assert service[0] == "confs/serving.yaml"
    assert "job.host=0.0.0.0" in service
    crontab = [
        line
        for line in (DOCKER / "crontab").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert crontab
    for line in [" ".join(["* * * * *", "bikes", *service]), *crontab]:
        fields = line.split(None, 5)
        assert len(fields) == 6, line  # five schedule fields, then the command
        command = shlex.split(fields[5])
        assert command[0] == "bikes", line
        args = scripts.parser().parse_args(command[1:])
        for config in args.configs:
            assert (REPO / config).is_file(), config
        settings = scripts._settings([str(REPO / c) for c in args.configs], args.extras)
        assert settings.job.KIND in {"ServingJob", "MonitoringJob", "RetrainingJob"}
    dockerfile = (DOCKER / "Dockerfile").read_text()
    assert "COPY docker/crontab ./docker/crontab" in dockerfile
    assert compose["services"]["scheduler"]["entrypoint"][-1] == "/app/docker/crontab"


def test_the_image_holds_the_tables_its_scheduled_jobs_read() -> None:
    """The scheduled retraining trains on the training config's table and gates on the test
    split: the image builds both at build time with the data job, from the data it copies."""
    dockerfile = (DOCKER / "Dockerfile").read_text()
    runs = [line[4:].split() for line in dockerfile.splitlines() if line.startswith("RUN ")]
    built_with = [run[1:] for run in runs if run and Path(run[0]).name == "bikes"]
    assert built_with == [["confs/data.yaml"]]
    data = scripts._settings([str(REPO / "confs" / "data.yaml")], []).job
    assert f"COPY {data.source} " in dockerfile
    built = {str(Path(data.output_dir) / f"{name}.parquet") for name in data.splits}
    training = scripts._settings([str(REPO / "confs" / "training.yaml")], []).job
    evaluations = scripts._settings([str(REPO / "confs" / "evaluations.yaml")], []).job
    assert {training.inputs.path, evaluations.inputs.path} <= built
