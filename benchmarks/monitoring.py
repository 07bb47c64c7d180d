"""Cost of monitoring: the job against a bare scipy script and Evidently, on the same files.

Reference and current parquet files of N rows x 22 columns (11 numeric, 11 categorical; three
columns shifted in current; ``--columns 12`` for 6 + 6) are written once. Each case runs as a
fresh process from the same files: the monitoring job (``bikes`` with a config, report
included), a bare script computing the same per-column statistics with scipy, and Evidently's
``DataDriftPreset`` report, run from a separate environment because Evidently needs pandas < 3:

    uv venv .bench-evidently && uv pip install --python .bench-evidently/bin/python \\
        evidently pyarrow "pandas<3"
    uv run python benchmarks/monitoring.py --rows 100000 1000000 --columns 12 22 --repeat 3

``--compare-src DIR`` also times the job importing ``bikes`` from ``DIR`` (a copy of ``src``
at another commit) in the same repeats: before and after, side by side.

``--task classification`` adds a binary label, the model's class and its score (so the job
also computes prediction, score and target drift and accuracy, precision, recall, F1, ROC AUC
and log loss on both tables, and the scipy script the same with sklearn) and makes ``c0`` a
text column.

Every case runs once untimed first, so the job's MLflow store exists as it does in any
deployment, and every process reads its modules' bytecode, as any installed package does:
the measured processes cache bytecode under the run's temporary folder
(``PYTHONPYCACHEPREFIX``), whatever ``PYTHONDONTWRITEBYTECODE`` says, without writing into
the checkout (``--no-bytecode-cache``: the caller's environment as it is; with
``PYTHONDONTWRITEBYTECODE=1`` each job then compiles bikes' own ~30 modules, 0.1-0.2 s).
Cases alternate within each repeat; prints the median wall time, the peak memory (max RSS)
and ratios against the scipy script.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from _workspace import REPO, clean_environment


def column_names(width: int) -> tuple[list[str], list[str]]:
    """Half numeric (``n0``...), half categorical (``c0``...): 22 -> 11 + 11, 12 -> 6 + 6."""
    numeric = (width + 1) // 2
    return [f"n{i}" for i in range(numeric)], [f"c{i}" for i in range(width - numeric)]


SCIPY_SCRIPT = """
import sys
import numpy as np, pandas as pd
from scipy import stats
from scipy.spatial import distance
reference, current = pd.read_parquet(sys.argv[1]), pd.read_parquet(sys.argv[2])
scores = {}
for column in reference.columns:
    r, c = reference[column].to_numpy(), current[column].to_numpy()
    if column.startswith(("n", "p_")):
        scores[column] = stats.wasserstein_distance(r, c) / np.std(r)
    else:
        keys = np.union1d(np.unique(r), np.unique(c))
        p = np.array([np.mean(r == k) for k in keys]); q = np.array([np.mean(c == k) for k in keys])
        scores[column] = distance.jensenshannon(p, q, base=2)
print(sum(score >= 0.1 for score in scores.values()))
if "label" in reference.columns:
    from sklearn import metrics
    for frame in (reference, current):
        truth, predicted, score = frame["label"], frame["prediction"], frame["p_yes"]
        print(metrics.accuracy_score(truth, predicted),
              metrics.precision_score(truth, predicted, pos_label="yes"),
              metrics.recall_score(truth, predicted, pos_label="yes"),
              metrics.f1_score(truth, predicted, pos_label="yes"),
              metrics.roc_auc_score(truth == "yes", score),
              metrics.log_loss(truth, np.column_stack([1 - score, score]), labels=["no", "yes"]))
"""

EVIDENTLY_SCRIPT = """
import sys
import pandas as pd
from evidently import Report
from evidently.presets import DataDriftPreset
reference, current = pd.read_parquet(sys.argv[1]), pd.read_parquet(sys.argv[2])
Report([DataDriftPreset()]).run(current, reference).save_html(sys.argv[3])
"""

MEASURED = """
import resource, subprocess, sys, time
start = time.perf_counter()
done = subprocess.run(sys.argv[1:], capture_output=True, text=True)
elapsed = time.perf_counter() - start
if done.returncode:
    sys.exit(done.stderr[-3000:])
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
print(elapsed, usage.ru_maxrss, usage.ru_utime + usage.ru_stime)
"""


def write_data(directory: Path, rows: int, width: int, task: str) -> tuple[Path, Path]:
    numeric_names, categorical_names = column_names(width)
    rng = np.random.default_rng(0)
    letters = np.array(list("abcdefgh"), dtype=object)

    def frame(shift: bool) -> pd.DataFrame:
        data = {}
        for i, name in enumerate(numeric_names):
            data[name] = rng.normal(10 + (2 if shift and i < 2 else 0), 3, rows)
        for i, name in enumerate(categorical_names):
            weights = np.linspace(1, 2, 8) if shift and i == 0 else np.ones(8)
            data[name] = rng.choice(8, size=rows, p=weights / weights.sum())
        if task == "classification":
            data["c0"] = letters[data["c0"]]  # a text feature
            score = 1 / (1 + np.exp(-(data["n0"] - 10)))
            data["p_yes"] = score
            data["prediction"] = np.where(score > 0.5, "yes", "no").astype(object)
            data["label"] = np.where(rng.random(rows) < score, "yes", "no").astype(object)
        return pd.DataFrame(data)

    reference, current = directory / "reference.parquet", directory / "current.parquet"
    frame(False).to_parquet(reference)
    frame(True).to_parquet(current)
    return reference, current


def measured(
    command: list[str], cwd: Path, source: str | None = None, pycache: Path | None = None
) -> tuple[float, float, float]:
    """Wall seconds, peak RSS (MB) and CPU seconds (user + system, its subprocesses included)
    of one fresh process (``source``: a copy of ``src`` to import ``bikes`` from, ahead of the
    installed one; ``pycache``: where bytecode is cached). CPU time moves less than wall time
    when other work loads the machine, but it cannot show what runs side by side (the job
    overlaps MLflow's import with its work)."""
    env = clean_environment()
    if source is not None:
        env["PYTHONPATH"] = source
    if pycache is not None:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(pycache)
    done = subprocess.run(
        [sys.executable, "-c", MEASURED, *command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        raise SystemExit(f"{' '.join(command[:4])}... failed:\n{done.stderr[-3000:]}")
    seconds, kilobytes, cpu = done.stdout.split()
    return float(seconds), float(kilobytes) / 1024, float(cpu)


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    cli.add_argument(
        "--columns", type=int, nargs="+", default=[22], help="table widths (half numeric)"
    )
    cli.add_argument("--repeat", type=int, default=3)
    cli.add_argument("--task", choices=["regression", "classification"], default="regression")
    cli.add_argument(
        "--evidently-python", default=str(REPO / ".bench-evidently" / "bin" / "python")
    )
    cli.add_argument(
        "--compare-src",
        default=None,
        metavar="DIR",
        help="also time the job with bikes imported from DIR (a copy of src/ from another "
        "commit), in the same repeats",
    )
    cli.add_argument(
        "--no-bytecode-cache",
        action="store_true",
        help="run the processes in this environment as it is (PYTHONDONTWRITEBYTECODE=1 makes "
        "each job compile bikes' modules again)",
    )
    args = cli.parse_args()
    evidently = Path(args.evidently_python)
    print(
        f"{args.task}\n{'rows':>9} {'cols':>4} {'case':<28} {'seconds':>8} {'peak MB':>8} "
        f"{'ratio':>6} {'cpu s':>7} {'cpu ratio':>9} {'range s':>11}"
    )
    for width in args.columns:
        for rows in args.rows:
            one_size(
                rows,
                width,
                args.task,
                args.repeat,
                evidently,
                args.compare_src,
                not args.no_bytecode_cache,
            )


def one_size(
    rows: int,
    width: int,
    task: str,
    repeat: int,
    evidently: Path,
    compare_src: str | None,
    bytecode: bool = True,
) -> None:
    numeric, categorical = column_names(width)
    with tempfile.TemporaryDirectory() as directory:
        work = Path(directory)
        reference, current = write_data(work, rows, width, task)
        config = work / "monitoring.yaml"
        contract: dict[str, object] = {
            "features": [{"name": n} for n in numeric]
            + [{"name": c, "kind": "categorical"} for c in categorical]
        }
        if task == "classification":
            contract |= {"task": "classification", "target": "label", "score": "p_yes"}
        config.write_text(
            json.dumps(
                {
                    "job": {
                        "KIND": "MonitoringJob",
                        "contract": contract,
                        "reference": {"KIND": "ParquetReader", "path": str(reference)},
                        "current": {"KIND": "ParquetReader", "path": str(current)},
                        "results_path": str(work / "monitoring.json"),
                        "report_path": str(work / "monitoring.html"),
                        "channels": [],
                        "alerts": [],
                    }
                }
            )
        )
        job = [sys.executable, "-m", "bikes", str(config)]
        cases: dict[str, tuple[list[str], str | None]] = {
            "scipy script": (
                [sys.executable, "-c", SCIPY_SCRIPT, str(reference), str(current)],
                None,
            ),
            "bikes monitoring job": (job, None),
        }
        if compare_src is not None:
            cases["bikes job, --compare-src"] = (job, compare_src)
        if evidently.exists():
            cases["evidently DataDriftPreset"] = (
                [
                    str(evidently),
                    "-c",
                    EVIDENTLY_SCRIPT,
                    str(reference),
                    str(current),
                    str(work / "evidently.html"),
                ],
                None,
            )
        pycache = work / "pycache" if bytecode else None
        for command, source in cases.values():  # warm-up: the MLflow store, the bytecode
            measured(command, work, source, pycache)
        runs: dict[str, list[tuple[float, float, float]]] = {name: [] for name in cases}
        for _ in range(repeat):
            for name, (command, source) in cases.items():
                runs[name].append(measured(command, work, source, pycache))
        base = base_cpu = None
        for name, results in runs.items():
            seconds = statistics.median(r[0] for r in results)
            peak = max(r[1] for r in results)
            cpu = statistics.median(r[2] for r in results)
            base, base_cpu = base or seconds, base_cpu or cpu
            spread = f"{min(r[0] for r in results):.1f}-{max(r[0] for r in results):.1f}"
            print(
                f"{rows:>9} {width:>4} {name:<28} {seconds:>8.2f} {peak:>8.0f} "
                f"{seconds / base:>6.2f} {cpu:>7.2f} {cpu / base_cpu:>9.2f} {spread:>11}"
            )
            sys.stdout.flush()
        drifted = json.loads((work / "monitoring.json").read_text())["data_drift"]["columns"]
        print(f"{'':>14} flagged by bikes: {sorted(c for c, r in drifted.items() if r['drift'])}")


if __name__ == "__main__":
    main()
