"""Time-ordered splits: a model is judged on the future, never on shuffled neighbours."""

from __future__ import annotations

import datetime as dt
import itertools

import pandas as pd
import pydantic as pdt

from bikes.core.errors import ConfigError


class DateRange(pdt.BaseModel, strict=False, frozen=True, extra="forbid"):
    """An inclusive range of calendar days, given in configs as ``YYYY-MM-DD`` strings."""

    start: dt.date = pdt.Field(description="First day (YYYY-MM-DD).")
    end: dt.date = pdt.Field(description="Last day, included.")

    @pdt.model_validator(mode="after")
    def _ordered(self) -> DateRange:
        if self.end < self.start:
            raise ValueError(f"end {self.end} is before start {self.start}")
        return self

    def mask(self, timestamps: pd.Series) -> pd.Series:
        """Rows whose event time falls on a day of the range."""
        days = timestamps.dt.normalize()
        inside: pd.Series = (days >= pd.Timestamp(self.start)) & (days <= pd.Timestamp(self.end))
        return inside


def split_by_time(
    frame: pd.DataFrame, ranges: dict[str, DateRange], timestamp: str
) -> dict[str, pd.DataFrame]:
    """Cut a frame by its ``timestamp`` column into named, time-ordered, non-overlapping
    parts; empty parts are errors."""
    names = sorted(ranges, key=lambda name: ranges[name].start)
    for earlier, later in itertools.pairwise(names):
        if ranges[later].start <= ranges[earlier].end:
            raise ConfigError(f"job.splits.{later}: overlaps job.splits.{earlier}")
    parts: dict[str, pd.DataFrame] = {}
    for name in names:
        part = frame.loc[ranges[name].mask(frame[timestamp])]
        if part.empty:
            first, last = frame[timestamp].min(), frame[timestamp].max()
            raise ConfigError(
                f"job.splits.{name}: no rows between {ranges[name].start} and "
                f"{ranges[name].end} (data covers {first} to {last})"
            )
        parts[name] = part.sort_values(timestamp, kind="stable").reset_index(drop=True)
    return parts
