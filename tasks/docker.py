"""Container image (needs a Docker engine, which CI does not have)."""

from invoke.context import Context
from invoke.tasks import task


@task
def docker(c: Context, tag: str = "bikes:latest") -> None:
    """Build the image from docker/Dockerfile."""
    c.run(f"docker build -f docker/Dockerfile -t {tag} .")
