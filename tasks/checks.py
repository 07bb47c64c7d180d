"""Code quality and tests."""

from invoke.context import Context
from invoke.tasks import task


@task
def format(c: Context) -> None:
    """Format the code and fix what ruff can fix."""
    c.run("ruff check --fix .")
    c.run("ruff format .")


@task
def checks(c: Context) -> None:
    """Lint, format check and strict type check, as CI runs them."""
    c.run("ruff check .")
    c.run("ruff format --check .")
    c.run("mypy")


@task
def tests(c: Context) -> None:
    """The whole test suite with coverage (fails under 85%)."""
    c.run("pytest", pty=False)
