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


@task(
    help={"workers": "test processes (pytest-xdist): a number, `auto` (one per core) or 0 (none)"}
)
def tests(c: Context, workers: str = "auto") -> None:  # noqa: PT028 (a task, not a test)
    """The whole test suite with coverage (fails under 85%), its files spread over processes.

    Most of the suite's time is spent waiting on real processes and servers (a `bikes`
    subprocess importing MLflow, a service restarting after kill -9), which a second worker
    can overlap. `--dist loadfile` keeps each test file on one worker: its
    module fixtures are built once, and a file's tests run in their written order.
    `--no-loadscope-reorder` hands the files out in collection order, which tests/conftest.py
    sorts slowest first (tests/durations.json), instead of by number of tests: a slow file
    started last would keep one worker busy while the other idles."""
    c.run(f"pytest --numprocesses {workers} --dist loadfile --no-loadscope-reorder", pty=False)
