"""Cost of our MLflow layer: the training job as a whole process against a bare sklearn script.

Both fit the same pipeline (``bikes.core.models``) on the same parquet file, each in a fresh
process, so imports count on both sides. Prints median wall times and their ratio.

    uv run python benchmarks/training.py --repeat 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

BARE_SCRIPT = """
import sys
import pandas as pd
from bikes.core.models import GradientBoostingConfig
from bikes.core.schemas import TARGET, features_of
frame = pd.read_parquet(sys.argv[1])
GradientBoostingConfig().pipeline().fit(features_of(frame), frame[TARGET])
"""


def _timed(command: list[str], cwd: Path, env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, cwd=cwd, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--repeat", type=int, default=3)
    args = cli.parse_args()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    with tempfile.TemporaryDirectory() as directory:
        work = Path(directory)
        (work / "data").mkdir()
        (work / "data" / "hour.csv").symlink_to(REPO / "data" / "hour.csv")
        subprocess.run(
            [sys.executable, "-m", "bikes", str(REPO / "confs" / "data.yaml")],
            cwd=work,
            env=env,
            check=True,
            capture_output=True,
        )
        train = str(work / "data" / "splits" / "train.parquet")
        job = [sys.executable, "-m", "bikes", str(REPO / "confs" / "training.yaml")]
        cases = {
            "bare sklearn script (1 fit)": [sys.executable, "-c", BARE_SCRIPT, train],
            "training job, validation_share=0 (1 fit)": [*job, "-e", "job.validation_share=0"],
            "training job, default (2 fits)": job,
        }
        # Warm the MLflow database once, so its one-off table creation is not counted.
        _timed([*job, "-e", "job.validation_share=0"], work, env)
        times: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(args.repeat):
            for name, command in cases.items():
                times[name].append(_timed(command, work, env))
    bare = statistics.median(times["bare sklearn script (1 fit)"])
    print(f"{'case':<45} {'median s':>9} {'ratio':>7}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:<45} {median:>9.2f} {median / bare:>7.2f}")


if __name__ == "__main__":
    main()
