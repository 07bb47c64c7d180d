"""Cost of our MLflow layer: the training job as a whole process against a bare sklearn script.

Both fit the same pipeline (``bikes.core.models``) on the same parquet file, each in a fresh
process, so imports count on both sides. Prints median wall times and their ratio.

    uv run python benchmarks/training.py --repeat 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from _workspace import bikes, clean_environment, prepare, timed

BARE_SCRIPT = """
import sys
import pandas as pd
from bikes.core.models import GradientBoostingConfig
from bikes.io.contracts import load_contract
contract = load_contract("confs/bikes-contract.yaml")
frame = pd.read_parquet(sys.argv[1])
model = GradientBoostingConfig(log_target=True).pipeline(contract)
model.fit(frame[contract.feature_names], frame[contract.target])
"""


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--repeat", type=int, default=3)
    args = cli.parse_args()
    env = clean_environment()
    with tempfile.TemporaryDirectory() as directory:
        work = Path(directory)
        train = str(prepare(work, env) / "train.parquet")
        job = ["confs/training.yaml"]
        one_fit = [*job, "-e", "job.validation_share=0"]
        bikes(one_fit, work, env)  # warm: MLflow creates its tables once, not counted
        cases = {
            "bare sklearn script (1 fit)": lambda: timed(
                [sys.executable, "-c", BARE_SCRIPT, train], work, env
            ),
            "training job, validation_share=0 (1 fit)": lambda: bikes(one_fit, work, env),
            "training job, default (2 fits)": lambda: bikes(job, work, env),
        }
        times: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(args.repeat):
            for name, case in cases.items():
                times[name].append(case())
    report(times, reference="bare sklearn script (1 fit)")


def report(times: dict[str, list[float]], reference: str) -> None:
    base = statistics.median(times[reference])
    print(f"{'case':<50} {'median s':>9} {'ratio':>7}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:<50} {median:>9.2f} {median / base:>7.2f}")


if __name__ == "__main__":
    main()
