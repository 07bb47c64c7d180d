"""A throw-away working directory with the data splits, shared by the benchmarks."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def clean_environment() -> dict[str, str]:
    """The benchmark's own MLflow store, whatever the caller's shell points at."""
    return {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}


def prepare(directory: Path, env: dict[str, str]) -> Path:
    """Link the raw CSV and the configs in (configs name the contract by a relative path,
    as a user's do) and derive the splits; returns the splits directory."""
    (directory / "confs").symlink_to(REPO / "confs")
    (directory / "data").mkdir()
    (directory / "data" / "hour.csv").symlink_to(REPO / "data" / "hour.csv")
    bikes(["confs/data.yaml"], directory, env)
    return directory / "data" / "splits"


def bikes(args: list[str], cwd: Path, env: dict[str, str], ok: tuple[int, ...] = (0,)) -> float:
    """Run the CLI as a user would, in a fresh process; returns the wall time in seconds."""
    configs = [str(REPO / arg) if arg.startswith("confs/") else arg for arg in args]
    return timed([sys.executable, "-m", "bikes", *configs], cwd, env, ok)


def timed(command: list[str], cwd: Path, env: dict[str, str], ok: tuple[int, ...] = (0,)) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode not in ok:
        raise SystemExit(f"{' '.join(command)} exited {done.returncode}:\n{done.stderr[-2000:]}")
    return elapsed
