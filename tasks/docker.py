"""Container image and the production stack (need a Docker engine, which CI does not have)."""

from invoke.context import Context
from invoke.tasks import task


@task(help={"tag": "the image name:tag to build"})
def docker(c: Context, tag: str = "bikes:latest") -> None:
    """Build the image from docker/Dockerfile."""
    c.run(f"docker build -f docker/Dockerfile -t {tag} .")


@task(help={"command": 'docker compose arguments, e.g. "down" or "logs -f service"'})
def stack(c: Context, command: str = "up -d --build") -> None:
    """docker compose for the production stack (docker/compose.yaml, secrets in docker/.env)."""
    c.run(f"docker compose --env-file docker/.env -f docker/compose.yaml {command}")
