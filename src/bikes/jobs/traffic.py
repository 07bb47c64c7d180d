"""Replay production data against a running service, then send its labels late.

Rows go out in event-time order (``concurrency`` requests in flight, ``batch_size`` rows
each); ground truth for a row is posted once the replay has moved ``label_delay`` past its
event time, for a seeded ``label_share`` of the rows, as labels trickle in for real.
Perturbations inject drift on purpose, from a given event time on.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import typing as T

import httpx
import numpy as np
import pandas as pd
import pydantic as pdt
from loguru import logger

from bikes.core import schemas
from bikes.core.errors import ConfigError, InputError
from bikes.io.datasets import ParquetReader
from bikes.jobs.base import Job, Locals


class Perturbation(pdt.BaseModel, strict=False, frozen=True, extra="forbid"):
    """Change one column from ``start`` (event time) on: scale, shift, blank or swap values."""

    column: str
    kind: T.Literal["scale", "shift", "missing", "swap"]
    value: float = 1.0  # factor for scale, offset for shift, share of rows for missing
    mapping: dict[int, int] = pdt.Field(default_factory=dict)  # for swap: old -> new category
    start: dt.datetime | None = None

    def apply(self, frame: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
        if self.column not in frame.columns:
            raise ConfigError(f"job.perturbations: column {self.column!r} is not in the data")
        rows = np.ones(len(frame), dtype=bool)
        if self.start is not None:
            rows = (frame[schemas.TIMESTAMP] >= pd.Timestamp(self.start)).to_numpy()
        column = frame[self.column]
        if self.kind == "scale":
            changed = column * self.value
        elif self.kind == "shift":
            changed = column + self.value
        elif self.kind == "swap":
            changed = column.replace(self.mapping)
        else:
            changed = column.astype(float).mask(rng.random(len(frame)) < self.value)
        changed = changed.astype(column.dtype) if self.kind != "missing" else changed
        return frame.assign(**{self.column: changed.where(rows, column)})


class TrafficJob(Job):
    """Sends the production split to ``url`` as live traffic would, then its labels."""

    KIND: T.Literal["TrafficJob"] = "TrafficJob"
    uses_mlflow: T.ClassVar[bool] = False

    inputs: ParquetReader = ParquetReader(path="data/splits/production.parquet")
    url: str = "http://127.0.0.1:8000"
    batch_size: int = pdt.Field(default=24, gt=0)
    concurrency: int = pdt.Field(default=4, gt=0)
    label_delay_hours: float = pdt.Field(default=24.0, ge=0)
    label_share: float = pdt.Field(default=0.8, ge=0, le=1)
    seed: int = 42
    timeout: float = pdt.Field(default=30.0, gt=0)
    perturbations: list[Perturbation] = pdt.Field(default_factory=list)

    def run(self) -> Locals:
        frame = self._prepare()
        return asyncio.run(self._replay(frame))

    def _prepare(self) -> pd.DataFrame:
        frame = self.inputs.read()
        if schemas.TIMESTAMP not in frame.columns:
            raise InputError(f"{self.inputs.source}: no {schemas.TIMESTAMP} column to replay by")
        frame = frame.sort_values(schemas.TIMESTAMP, kind="stable").reset_index(drop=True)
        rng = np.random.default_rng(self.seed)
        for perturbation in self.perturbations:
            frame = perturbation.apply(frame, rng)
        return frame

    async def _replay(self, frame: pd.DataFrame) -> Locals:
        rng = np.random.default_rng(self.seed)
        labelled = rng.random(len(frame)) < self.label_share
        due_times = (
            frame[schemas.TIMESTAMP] + pd.Timedelta(hours=self.label_delay_hours)
        ).to_numpy()
        targets = frame[schemas.TARGET].to_numpy(dtype=float)
        batches = [
            frame.iloc[i : i + self.batch_size] for i in range(0, len(frame), self.batch_size)
        ]
        counts = {
            "rows_sent": 0,
            "rows_accepted": 0,
            "rows_rejected": 0,
            "labels_sent": 0,
            "labels_unknown": 0,
        }
        waiting: list[tuple[np.datetime64, str, float]] = []  # (due event time, id, target)
        limiter = asyncio.Semaphore(self.concurrency)
        async with httpx.AsyncClient(base_url=self.url, timeout=self.timeout) as client:
            await self._check(client)
            for wave_start in range(0, len(batches), self.concurrency):
                wave = batches[wave_start : wave_start + self.concurrency]
                answers = await asyncio.gather(*(self._predict(client, limiter, b) for b in wave))
                for batch, ids in zip(wave, answers, strict=True):
                    counts["rows_sent"] += len(batch)
                    if ids is None:
                        counts["rows_rejected"] += len(batch)
                        continue
                    counts["rows_accepted"] += len(batch)
                    for position, prediction_id in zip(batch.index, ids, strict=True):
                        if labelled[position]:
                            waiting.append((due_times[position], prediction_id, targets[position]))
                now = wave[-1][schemas.TIMESTAMP].to_numpy()[-1]
                due_now = [item for item in waiting if item[0] <= now]
                waiting = [item for item in waiting if item[0] > now]
                await self._labels(client, due_now, counts)
                if wave_start % (self.concurrency * 25) == 0:
                    logger.info(
                        "Replayed up to {} ({} rows)", pd.Timestamp(now), counts["rows_sent"]
                    )
            await self._labels(client, waiting, counts)  # the rest arrives after the replay
        logger.success("Traffic done: {}", counts)
        return counts

    async def _check(self, client: httpx.AsyncClient) -> None:
        try:
            (await client.get("/health")).raise_for_status()
        except httpx.HTTPError as error:
            raise InputError(f"{self.url}: prediction service unreachable ({error})") from None

    async def _predict(
        self, client: httpx.AsyncClient, limiter: asyncio.Semaphore, batch: pd.DataFrame
    ) -> list[str] | None:
        records = batch.loc[:, [schemas.TIMESTAMP, *schemas.FEATURE_NAMES]].assign(
            **{schemas.TIMESTAMP: batch[schemas.TIMESTAMP].dt.strftime("%Y-%m-%dT%H:%M:%S")}
        )
        rows = T.cast(list[dict[str, T.Any]], records.to_dict(orient="records"))
        payload = {"dataframe_records": [_clean(row) for row in rows]}
        async with limiter:
            response = await client.post("/invocations", json=payload)
        if response.status_code >= 400:
            logger.warning("Batch rejected ({}): {}", response.status_code, response.text[:300])
            return None
        return T.cast(list[str], response.json()["prediction_ids"])

    async def _labels(
        self,
        client: httpx.AsyncClient,
        due: list[tuple[np.datetime64, str, float]],
        counts: dict[str, int],
    ) -> None:
        for start in range(0, len(due), 1000):
            chunk = due[start : start + 1000]
            payload = {"labels": [{"prediction_id": i, "target": t} for _, i, t in chunk]}
            response = await client.post("/labels", json=payload)
            response.raise_for_status()
            counts["labels_sent"] += len(chunk)
            counts["labels_unknown"] += len(response.json()["unknown_ids"])


def _clean(row: dict[str, T.Any]) -> dict[str, T.Any]:
    """NaN is not JSON: a blanked value travels as null (and the service rejects it)."""
    return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()}
