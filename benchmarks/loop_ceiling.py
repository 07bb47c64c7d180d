"""How much can any retraining policy gain on the bike data? Plain sklearn, no bikes code.

`benchmarks/loop.py` measures the loop itself (the RetrainingJob, its gate, MLflow). This
script asks what the loop could gain at best, with the shipped model recipe (the same
``HistGradientBoostingRegressor`` on ``log1p(cnt)``, the contract's 12 features): a frozen
champion trained up to the end of June 2012 against, for each month of July-December 2012,

- ``monthly``: a retrain at the month start on every label so far (a day late);
- ``recency 90d``: the same, rows weighted by a 90-day half-life;
- ``level``: the frozen champion, its log-level corrected by the mean log residual of the
  last 14 days of labels (a recalibration, no retraining);
- ``oracle``: a model that also trained on half of the month's own days (the even days),
  scored with the others on the odd days: more than any loop can know.

Every policy is scored on the odd days of each month (the oracle's unseen rows), over
several seeds of the estimator, so seed noise is visible beside the gains. Printed: the mean
monthly RMSE of each, and its cut against the frozen champion of the same seed.

    uv run python benchmarks/loop_ceiling.py                # seeds 0-4
    uv run python benchmarks/loop_ceiling.py --seeds 10
"""

from __future__ import annotations

import argparse
import itertools
import sys
import typing as T
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingRegressor

REPO = Path(__file__).resolve().parents[1]
FEATURES = [
    "season", "yr", "mnth", "hr", "holiday", "weekday", "workingday", "weathersit",
    "temp", "atemp", "hum", "windspeed",
]  # fmt: skip
MONTHS = pd.date_range("2012-07-01", "2013-01-01", freq="MS")
CHAMPION_END = pd.Timestamp("2012-07-01")
LABEL_DELAY = pd.Timedelta("1D")


def main() -> int:
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--seeds", type=int, default=5, help="estimator seeds 0..N-1")
    args = cli.parse_args()
    hours = pd.read_csv(REPO / "data" / "hour.csv", parse_dates=["dteday"])
    hours["timestamp"] = hours["dteday"] + pd.to_timedelta(hours["hr"], unit="h")
    cuts: dict[str, list[float]] = {}
    means: dict[str, list[float]] = {}
    for seed in range(args.seeds):
        rmse = policies(hours, seed)
        frozen = float(np.mean(rmse["frozen"]))
        for name, monthly in rmse.items():
            means.setdefault(name, []).append(float(np.mean(monthly)))
            cuts.setdefault(name, []).append(1 - float(np.mean(monthly)) / frozen)
        print(
            f"seed {seed}: "
            + ", ".join(f"{name} {np.mean(monthly):.1f}" for name, monthly in rmse.items()),
            flush=True,
        )
    print(f"\nMean monthly RMSE on the odd days of July-December 2012, {args.seeds} seeds")
    print("policy        mean RMSE (min-max)     cut vs frozen (min-max)")
    for name in means:
        m, c = np.array(means[name]), np.array(cuts[name])
        print(
            f"{name:<12}  {m.mean():5.1f} ({m.min():.1f}-{m.max():.1f})"
            f"       {c.mean():+6.1%} ({c.min():+.1%} to {c.max():+.1%})"
        )
    return 0


def policies(hours: pd.DataFrame, seed: int) -> dict[str, list[float]]:
    """Each policy's RMSE per month, on the month's odd days."""
    frozen = _fit(hours[hours["timestamp"] < CHAMPION_END], seed)
    rmse: dict[str, list[float]] = {"frozen": [], "monthly": [], "recency 90d": []}
    rmse |= {"level": [], "oracle": []}
    for start, end in itertools.pairwise(MONTHS):
        month = hours[(hours["timestamp"] >= start) & (hours["timestamp"] < end)]
        odd = month[month["dteday"].dt.day % 2 == 1]
        truth = odd["cnt"].to_numpy(dtype=float)
        known = hours[hours["timestamp"] + LABEL_DELAY <= start]  # labelled by the month start
        rmse["frozen"].append(_rmse(truth, _predict(frozen, odd)))
        if start == MONTHS[0]:  # the loop's first month is served by the champion itself
            for name in ("monthly", "recency 90d", "level"):
                rmse[name].append(rmse["frozen"][-1])
        else:
            rmse["monthly"].append(_rmse(truth, _predict(_fit(known, seed), odd)))
            age = (start - known["timestamp"]).dt.days.to_numpy(dtype=float)
            weighted = _fit(known, seed, weights=0.5 ** (age / 90))
            rmse["recency 90d"].append(_rmse(truth, _predict(weighted, odd)))
            recent = known[known["timestamp"] >= start - LABEL_DELAY - pd.Timedelta("14D")]
            shift = float(np.mean(np.log1p(recent["cnt"]) - np.log1p(_predict(frozen, recent))))
            rmse["level"].append(_rmse(truth, np.expm1(np.log1p(_predict(frozen, odd)) + shift)))
        even = month[month["dteday"].dt.day % 2 == 0]
        oracle = _fit(pd.concat([hours[hours["timestamp"] < start], even]), seed)
        rmse["oracle"].append(_rmse(truth, _predict(oracle, odd)))
    return rmse


def _fit(
    rows: pd.DataFrame, seed: int, weights: np.ndarray | None = None
) -> HistGradientBoostingRegressor:
    """The shipped recipe (confs/training.yaml): 300 iterations, rate 0.1, log1p target."""
    model = HistGradientBoostingRegressor(max_iter=300, learning_rate=0.1, random_state=seed)
    return model.fit(rows[FEATURES], np.log1p(rows["cnt"]), sample_weight=weights)


def _predict(model: T.Any, rows: pd.DataFrame) -> np.ndarray:
    return np.expm1(model.predict(rows[FEATURES]))


def _rmse(truth: np.ndarray, predictions: np.ndarray) -> float:
    return float(np.sqrt(np.mean((truth - predictions) ** 2)))


if __name__ == "__main__":
    sys.exit(main())
