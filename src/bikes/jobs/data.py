"""Derive the time-ordered parquet splits (train, test, production) from the hourly CSV."""

from __future__ import annotations

import datetime as dt
import typing as T
from pathlib import Path

import pydantic as pdt
from loguru import logger

from bikes.core import schemas
from bikes.core.splits import DateRange, split_by_time
from bikes.io.datasets import ParquetWriter, read_hourly_csv
from bikes.jobs.base import Job, Locals

DEFAULT_SPLITS = {
    "train": DateRange(start=dt.date(2011, 1, 1), end=dt.date(2012, 3, 31)),
    "test": DateRange(start=dt.date(2012, 4, 1), end=dt.date(2012, 6, 30)),
    "production": DateRange(start=dt.date(2012, 7, 1), end=dt.date(2012, 12, 31)),
}


class DataJob(Job):
    """Writes ``<output_dir>/<split>.parquet``: timestamp, the features and the target only."""

    KIND: T.Literal["DataJob"] = "DataJob"
    uses_mlflow: T.ClassVar[bool] = False

    source: str = "data/hour.csv"
    output_dir: str = "data/splits"
    splits: dict[str, DateRange] = pdt.Field(default_factory=lambda: dict(DEFAULT_SPLITS))

    def run(self) -> Locals:
        frame = read_hourly_csv(self.source)
        columns = [schemas.TIMESTAMP, *schemas.FEATURE_NAMES, schemas.TARGET]
        schemas.validate(frame, schemas.INPUTS_SCHEMA, self.source)
        schemas.validate(frame, schemas.TARGETS_SCHEMA, self.source)
        parts = split_by_time(frame.loc[:, columns], self.splits)
        paths: dict[str, str] = {}
        for name, part in parts.items():
            path = ParquetWriter(path=str(Path(self.output_dir) / f"{name}.parquet")).write(part)
            first, last = part[schemas.TIMESTAMP].iloc[[0, -1]]
            logger.info("{}: {} rows, {} to {} -> {}", name, len(part), first, last, path)
            paths[name] = str(path)
        return {"paths": paths, "rows": {name: len(part) for name, part in parts.items()}}
