"""Benchmarks: each prints ratios against a reference run in the same script."""

from invoke.context import Context
from invoke.tasks import task


@task(help={"repeat": "timed runs per case; each ratio is taken from their medians"})
def bench(c: Context, repeat: int = 3) -> None:
    """Run every benchmark under benchmarks/ (results belong in benchmarks/README.md)."""
    for script in ("training", "evaluations"):
        c.run(f"python benchmarks/{script}.py --repeat {repeat}")
    c.run("python benchmarks/serving.py --requests 400")
    c.run(f"python benchmarks/monitoring.py --rows 100000 1000000 --repeat {repeat}")
