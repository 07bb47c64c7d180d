"""Held-out reference performance: how well a model version does on rows it did not train on.

Monitoring compares a production window against a reference performance; the model's fit on
its own training rows is optimistic (the bike champion: RMSE 28 in-sample, 52 on the test
split), so every window would read "degraded". The honest reference is measured on held-out
rows and recorded on the model version, as the JSON tag ``HELD_OUT_TAG``:

- training writes it from its validation part (the last rows of the period), predicted by the
  model fitted without them;
- the gate overwrites it on the candidate version with its test-split figures for that very
  version (the real model, unseen rows).

Metric names are the monitoring job's (rmse, mae, r2, mape; f1, accuracy, precision, recall,
roc_auc, log_loss).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import typing as T

import pandas as pd

from bikes.core.errors import InputError

HELD_OUT_TAG = "held_out_performance"


@dataclasses.dataclass(frozen=True)
class HeldOutPerformance:
    """A model version's performance on rows it did not train on, and which rows they were."""

    source: str
    """Which rows, for a human: "validation split of training (last 20%, 2,780 rows, ...)"."""
    rows: int
    """How many rows the metrics were computed on."""
    start: dt.datetime | None
    """Earliest event time of those rows, when known."""
    end: dt.datetime | None
    """Latest event time of those rows, when known."""
    metrics: dict[str, float]
    """Metric name (the monitoring job's) -> value; NaN when undefined on those rows."""
    predictions_uri: str | None = None
    """Where the held-out rows and their predictions are stored (an MLflow artifact URI), so
    monitoring can compute per-segment reference figures on them; None when not kept."""

    def __post_init__(self) -> None:
        if not self.source:
            raise InputError(f"{HELD_OUT_TAG}.source: empty; say which rows were held out")
        if isinstance(self.rows, bool) or not isinstance(self.rows, int) or self.rows < 0:
            raise InputError(f"{HELD_OUT_TAG}.rows: {self.rows!r} is not a row count")
        if self.start is not None and self.end is not None and self.start > self.end:
            raise InputError(
                f"{HELD_OUT_TAG}: start {self.start.isoformat()} after end {self.end.isoformat()}"
            )
        if self.predictions_uri is not None and not isinstance(self.predictions_uri, str):
            raise InputError(
                f"{HELD_OUT_TAG}.predictions_uri: {self.predictions_uri!r} is not a URI"
            )
        for name, value in self.metrics.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise InputError(f"{HELD_OUT_TAG}.metrics.{name}: {value!r} is not a number")

    @property
    def period(self) -> str:
        """``start..end`` as ISO dates-times, or ``unknown`` when either is missing."""
        if self.start is None or self.end is None:
            return "unknown"
        return f"{self.start.isoformat()}..{self.end.isoformat()}"

    def to_dict(self) -> dict[str, T.Any]:
        """Plain JSON-able values; non-finite metrics become null (JSON has no NaN)."""
        return {
            "source": self.source,
            "rows": self.rows,
            "start": None if self.start is None else self.start.isoformat(),
            "end": None if self.end is None else self.end.isoformat(),
            "metrics": {
                name: (float(value) if math.isfinite(value) else None)
                for name, value in self.metrics.items()
            },
            "predictions_uri": self.predictions_uri,
        }

    def to_tag(self) -> str:
        """The model-version tag value: compact, strict JSON."""
        return json.dumps(self.to_dict(), separators=(",", ":"), allow_nan=False)

    @classmethod
    def from_tag(cls, text: str) -> HeldOutPerformance:
        """Read a tag written by ``to_tag``; a malformed one is an ``InputError`` naming it."""
        try:
            data = json.loads(text)
        except (TypeError, json.JSONDecodeError) as error:
            raise InputError(f"tag {HELD_OUT_TAG}: not JSON ({error})") from error
        if not isinstance(data, dict):
            raise InputError(f"tag {HELD_OUT_TAG}: expected a JSON object, got {text[:80]!r}")
        missing = sorted({"source", "rows", "metrics"} - set(data))
        if missing:
            raise InputError(f"tag {HELD_OUT_TAG}: missing keys {missing}")
        metrics = data["metrics"]
        if not isinstance(metrics, dict):
            raise InputError(f"tag {HELD_OUT_TAG}.metrics: expected an object, got {metrics!r}")
        return cls(
            source=str(data["source"]),
            rows=data["rows"],
            start=_datetime(data.get("start"), "start"),
            end=_datetime(data.get("end"), "end"),
            metrics={
                str(name): (math.nan if value is None else _number(value, str(name)))
                for name, value in metrics.items()
            },
            predictions_uri=data.get("predictions_uri"),
        )


def _datetime(value: object, key: str) -> dt.datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InputError(f"tag {HELD_OUT_TAG}.{key}: {value!r} is not an ISO date-time")
    try:
        return dt.datetime.fromisoformat(value)
    except ValueError as error:
        raise InputError(f"tag {HELD_OUT_TAG}.{key}: {value!r} is not an ISO date-time") from error


def _number(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputError(f"tag {HELD_OUT_TAG}.metrics.{name}: {value!r} is not a number")
    return float(value)


def validation_source(
    share: float, rows: int, start: dt.datetime | None, end: dt.datetime | None
) -> str:
    """The ``source`` training writes: "validation split of training (last 20%, 2,780 rows,
    2012-04-20..2012-06-30)"; without event times, "the last 20% of rows" in table order."""
    if start is None or end is None:
        return f"validation split of training (last {share:.0%} of rows, {rows:,} rows)"
    return (
        f"validation split of training (last {share:.0%}, {rows:,} rows, "
        f"{start.date().isoformat()}..{end.date().isoformat()})"
    )


def event_period(
    frame: pd.DataFrame, timestamp: str | None
) -> tuple[dt.datetime | None, dt.datetime | None]:
    """The earliest and latest event time of ``frame``'s rows; (None, None) without a
    ``timestamp`` column."""
    if timestamp is None or timestamp not in frame.columns:
        return None, None
    times = pd.to_datetime(frame[timestamp])
    return times.min().to_pydatetime(), times.max().to_pydatetime()
