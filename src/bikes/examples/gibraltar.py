"""The second example: will the sky at Gibraltar be fair, cloudy or wet? A classification.

Not bikes: thirty-minute weather observations at Gibraltar Airport in May 2023, with a string
feature (``wind_dir``), its own event-time column (``observed_at``) and a text label (``sky``),
for showing and testing that every job works from the data contract alone
(``confs/examples/gibraltar-contract.yaml``). The data ships in the package.

    python -m bikes.examples.gibraltar data/gibraltar   # train / test / production parquet
"""

from __future__ import annotations

import argparse
import datetime as dt
from importlib import resources
from pathlib import Path

import pandas as pd

from bikes.core.splits import DateRange, split_by_time
from bikes.io.datasets import ParquetWriter

TIMESTAMP = "observed_at"
TARGET = "sky"
# Time-ordered splits: two and a half weeks to learn, a week to gate, the rest is production.
SPLITS = {
    "train": DateRange(start=dt.date(2023, 5, 1), end=dt.date(2023, 5, 17)),
    "test": DateRange(start=dt.date(2023, 5, 18), end=dt.date(2023, 5, 24)),
    "production": DateRange(start=dt.date(2023, 5, 25), end=dt.date(2023, 5, 31)),
}


def sky_of(condition: str) -> str:
    """The reported condition in three classes: fair, cloudy, or wet (rain, fog, thunder)."""
    if condition.startswith("Fair"):
        return "fair"
    if "Cloudy" in condition:
        return "cloudy"
    return "wet"


def load() -> pd.DataFrame:
    """The observations: ``observed_at``, seven features and the label ``sky``."""
    source = resources.files("bikes.examples").joinpath("data/gibraltar.csv")
    with resources.as_file(source) as path:
        raw = pd.read_csv(path, dtype={"wind_dir": "string", "condition": "string"})
    observed = pd.to_datetime(raw["date"] + " " + raw["time"], format="%Y-%m-%d %H:%M")
    frame = raw.drop(columns=["date", "time", "condition"]).assign(
        wind_dir=raw["wind_dir"].astype(object)
    )
    frame.insert(0, TIMESTAMP, observed.astype("datetime64[ns]"))
    frame[TARGET] = raw["condition"].map(sky_of).astype(object)
    return frame


def write_splits(directory: str | Path) -> dict[str, Path]:
    """``train``, ``test`` and ``production`` parquet files, in time order."""
    parts = split_by_time(load(), SPLITS, TIMESTAMP)
    return {
        name: ParquetWriter(path=str(Path(directory) / f"{name}.parquet")).write(part)
        for name, part in parts.items()
    }


def main(argv: list[str] | None = None) -> None:
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("directory", nargs="?", default="data/gibraltar", help="output folder")
    args = cli.parse_args(argv)
    for name, path in write_splits(args.directory).items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
