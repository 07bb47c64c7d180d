"""Cost of our MLflow layer: the training job as a whole process against a bare sklearn script.

Both fit the same pipeline (``bikes.core.models``) on the same parquet file, each in a fresh
process, so imports count on both sides. Prints median wall times and their ratio.

    uv run python benchmarks/training.py --repeat 3

``--compare-src DIR`` also times the job with ``bikes`` imported from ``DIR`` (a copy of
``src`` at another commit) in the same repeats: before and after, side by side.
"""

from __future__ import annotations

import argparse
import resource
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

# What the default job computes: the latest 20% held out (predicted by a model fitted on the
# earlier rows), then the final fit on every row.
BARE_TWO_FITS = """
import sys
import pandas as pd
from bikes.core.models import GradientBoostingConfig
from bikes.io.contracts import load_contract
contract = load_contract("confs/bikes-contract.yaml")
frame = pd.read_parquet(sys.argv[1]).sort_values(contract.timestamp, kind="stable")
features, target = frame[contract.feature_names], frame[contract.target]
cut = int(len(frame) * 0.8)
config = GradientBoostingConfig(log_target=True)
config.pipeline(contract).fit(features.iloc[:cut], target.iloc[:cut]).predict(features.iloc[cut:])
config.pipeline(contract).fit(features, target)
"""


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--repeat", type=int, default=3)
    cli.add_argument(
        "--compare-src",
        default=None,
        metavar="DIR",
        help="also time the job with bikes imported from DIR (a copy of src/ from another commit)",
    )
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
            "bare sklearn script (2 fits)": lambda: timed(
                [sys.executable, "-c", BARE_TWO_FITS, train], work, env
            ),
            "training job, validation_share=0 (1 fit)": lambda: bikes(one_fit, work, env),
            "training job, default (2 fits)": lambda: bikes(job, work, env),
        }
        if args.compare_src is not None:
            other = env | {"PYTHONPATH": args.compare_src}
            cases["--compare-src job, validation_share=0"] = lambda: bikes(one_fit, work, other)
            cases["--compare-src job, default (2 fits)"] = lambda: bikes(job, work, other)
        times: dict[str, list[float]] = {name: [] for name in cases}
        cpu: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(args.repeat):
            for name, case in cases.items():
                before = _children_cpu()
                times[name].append(case())
                cpu[name].append(_children_cpu() - before)
    report(times, reference="bare sklearn script (1 fit)", cpu=cpu)
    two = "bare sklearn script (2 fits)"
    default = _ratio(times, "training job, default (2 fits)", two)
    print(f"\nthe default job against the same two fits bare: {default}")
    if args.compare_src is not None:
        before = _ratio(times, "--compare-src job, default (2 fits)", two)
        print(f"--compare-src default against them: {before}")


def _ratio(times: dict[str, list[float]], case: str, reference: str) -> str:
    return f"{statistics.median(times[case]) / statistics.median(times[reference]):.2f}x"


def _children_cpu() -> float:
    """User + system seconds of every finished child process (and theirs) so far. It moves
    less than wall time when other work loads the machine, but cannot show what a job runs
    side by side (MLflow's import beside the fit)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def report(
    times: dict[str, list[float]], reference: str, cpu: dict[str, list[float]] | None = None
) -> None:
    base = statistics.median(times[reference])
    extra = f" {'cpu s':>7} {'cpu ratio':>9}" if cpu else ""
    print(f"{'case':<50} {'median s':>9} {'ratio':>7} {'range s':>13}{extra}")
    for name, values in times.items():
        median = statistics.median(values)
        spread = f"{min(values):.1f}-{max(values):.1f}"  # how noisy the machine was
        line = f"{name:<50} {median:>9.2f} {median / base:>7.2f} {spread:>13}"
        if cpu:
            used, base_cpu = statistics.median(cpu[name]), statistics.median(cpu[reference])
            line += f" {used:>7.2f} {used / base_cpu:>9.2f}"
        print(line)


if __name__ == "__main__":
    main()
