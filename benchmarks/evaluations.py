"""Cost of the gate: the evaluations job against a bare pyfunc + sklearn script, same data.

The job (candidate + baseline on the test split) runs as a whole process; the bare script
loads both models with ``mlflow.pyfunc``, predicts and computes the same sklearn metrics, in a
fresh process too. The paired bootstrap is timed on its own, in process.

    uv run python benchmarks/evaluations.py --repeat 3
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from _workspace import bikes, clean_environment, prepare, timed
from bikes.core.comparison import Bootstrap, paired_difference_interval
from bikes.core.metrics import SklearnMetric
from training import report

BARE_SCRIPT = """
import sys
import mlflow, pandas as pd
from sklearn import metrics
from bikes.core.schemas import TARGET, features_of
mlflow.set_tracking_uri("sqlite:///mlflow.db")
frame = pd.read_parquet(sys.argv[1])
for uri in ("models:/bikes@challenger", "models:/bikes@champion"):
    predicted = mlflow.pyfunc.load_model(uri).predict(features_of(frame))
    truth = frame[TARGET]
    [f(truth, predicted) for f in (metrics.root_mean_squared_error, metrics.mean_absolute_error,
                                   metrics.r2_score)]
"""

GATE = ["confs/evaluations.yaml", "-e", "job.promote_on_pass=false"]


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--repeat", type=int, default=3)
    args = cli.parse_args()
    env = clean_environment()
    with tempfile.TemporaryDirectory() as directory:
        work = Path(directory)
        test = prepare(work, env) / "test.parquet"
        bikes(["confs/training.yaml", "-e", "job.alias=champion"], work, env)
        bikes(
            ["confs/training.yaml", "-e", "job.alias=challenger", "-e", "job.model.max_iter=200"],
            work,
            env,
        )
        gate = lambda *extra: bikes([*GATE, *extra], work, env, ok=(0, 3))  # noqa: E731
        cases = {
            "bare pyfunc + sklearn script": lambda: timed(
                [sys.executable, "-c", BARE_SCRIPT, str(test)], work, env
            ),
            "evaluations job, bootstrap off": lambda: gate("-e", "job.bootstrap.enabled=false"),
            "evaluations job, default (bootstrap 300)": lambda: gate(),
        }
        times: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(args.repeat):
            for name, case in cases.items():
                times[name].append(case())
        report(times, reference="bare pyfunc + sklearn script")
        bootstrap_cost(pd.read_parquet(test)["cnt"].to_numpy(dtype=float))


def bootstrap_cost(truth: np.ndarray) -> None:
    """The interval alone, per metric, on the test split's size."""
    rng = np.random.default_rng(0)
    candidate, baseline = (
        truth + rng.normal(0, 50, truth.size),
        truth + rng.normal(0, 52, truth.size),
    )
    print(f"\npaired bootstrap on {truth.size} rows (in process)")
    for resamples in (300, 1000):
        for name in ("root_mean_squared_error", "r2_score"):
            start = time.perf_counter()
            paired_difference_interval(
                SklearnMetric(name=name), truth, candidate, baseline, Bootstrap(resamples=resamples)
            )
            print(f"  {name:<25} {resamples:>5} resamples {time.perf_counter() - start:>7.2f} s")


if __name__ == "__main__":
    main()
