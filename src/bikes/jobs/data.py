"""Derive the time-ordered parquet splits (train, test, production) from the hourly CSV."""

from __future__ import annotations

import datetime as dt
import typing as T
from pathlib import Path

import pydantic as pdt
from loguru import logger

from bikes.core import schemas
from bikes.core.splits import DateRange, split_by_time
from bikes.io.contracts import ContractSpec
from bikes.io.datasets import ParquetWriter, check_writable, read_hourly_csv
from bikes.jobs.base import Job, Locals

DEFAULT_SPLITS = {
    "train": DateRange(start=dt.date(2011, 1, 1), end=dt.date(2012, 3, 31)),
    "test": DateRange(start=dt.date(2012, 4, 1), end=dt.date(2012, 6, 30)),
    "production": DateRange(start=dt.date(2012, 7, 1), end=dt.date(2012, 12, 31)),
}


class DataJob(Job):
    """The bike example's data: ``<output_dir>/<split>.parquet`` from the UCI hourly CSV,
    holding the contract's timestamp, features and target only (``casual`` and ``registered``
    sum to the target and never leave this job)."""

    KIND: T.Literal["DataJob"] = "DataJob"
    uses_mlflow: T.ClassVar[bool] = False

    source: str = pdt.Field(default="data/hour.csv", description="The UCI hourly CSV.")
    contract: ContractSpec = pdt.Field(
        description="The bike data contract (confs/bikes-contract.yaml): which columns to keep."
    )
    output_dir: str = pdt.Field(default="data/splits", description="Where the splits go.")
    splits: dict[str, DateRange] = pdt.Field(
        default_factory=lambda: dict(DEFAULT_SPLITS),
        description="Split name -> inclusive date range, in time order.",
    )

    def run(self) -> Locals:
        for name in self.splits:  # before the CSV is read: no split is written if one cannot be
            check_writable(Path(self.output_dir) / f"{name}.parquet", "job.output_dir")
        contract = self.contract
        timestamp = contract.timestamp or "timestamp"
        frame = read_hourly_csv(self.source, timestamp)
        target = contract.require_target("the data job")
        columns = [timestamp, *contract.feature_names, target]
        schemas.validate(frame, contract.inputs_schema(), self.source)
        schemas.validate(frame, contract.targets_schema(), self.source)
        parts = split_by_time(frame.loc[:, columns], self.splits, timestamp)
        paths: dict[str, str] = {}
        for name, part in parts.items():
            path = ParquetWriter(path=str(Path(self.output_dir) / f"{name}.parquet")).write(part)
            first, last = part[timestamp].iloc[[0, -1]]
            logger.info("{}: {} rows, {} to {} -> {}", name, len(part), first, last, path)
            paths[name] = str(path)
        return {"paths": paths, "rows": {name: len(part) for name, part in parts.items()}}
