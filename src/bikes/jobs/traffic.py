"""Replay production data against a running service, then send its labels late.

Rows go out in event-time order (``concurrency`` requests in flight, ``batch_size`` rows
each); ground truth for a row is posted once the replay has moved ``label_delay`` past its
event time, for a seeded ``label_share`` of the rows, as labels trickle in for real.
Perturbations inject drift on purpose, from a given event time on. The columns come from the
contract: its timestamp orders the replay, its features are sent, its target is the label.
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

from bikes.core.contract import Contract, Value
from bikes.core.errors import ConfigError, InputError
from bikes.io import registry
from bikes.io.contracts import ContractSpec, model_contract
from bikes.io.datasets import ParquetReader
from bikes.jobs.base import Job, Locals


class Perturbation(pdt.BaseModel, strict=False, frozen=True, extra="forbid"):
    """Change one column from ``start`` (event time) on: scale, shift, blank or swap values."""

    column: str = pdt.Field(description="The column to change.")
    kind: T.Literal["scale", "shift", "missing", "swap"] = pdt.Field(
        description="scale or shift a numeric column by value, blank a share of its values "
        "(missing), or swap categories (mapping)."
    )
    value: float = pdt.Field(
        default=1.0, description="Factor (scale), offset (shift) or share of rows (missing)."
    )
    mapping: dict[Value, Value] = pdt.Field(
        default_factory=dict,
        description="swap: old category -> new category (numbers or text).",
    )
    start: dt.datetime | None = pdt.Field(
        default=None, description="Event time from which on rows are changed; None: all rows."
    )

    def apply(
        self, frame: pd.DataFrame, rng: np.random.Generator, timestamp: str = "timestamp"
    ) -> pd.DataFrame:
        """The frame with this column changed where ``timestamp`` >= ``start``."""
        if self.column not in frame.columns:
            raise ConfigError(f"job.perturbations: column {self.column!r} is not in the data")
        rows = np.ones(len(frame), dtype=bool)
        if self.start is not None:
            rows = (frame[timestamp] >= pd.Timestamp(self.start)).to_numpy()
        column = frame[self.column]
        numeric = pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column)
        if self.kind in ("scale", "shift") and not numeric:
            raise ConfigError(
                f"job.perturbations: {self.kind} needs a numeric column; {self.column!r} holds "
                f"{column.dtype} values"
            )
        if self.kind == "scale":
            changed = column * self.value
        elif self.kind == "shift":
            changed = column + self.value
        elif self.kind == "swap":
            changed = column.map(lambda v: self.mapping.get(v, v))
        else:
            changed = column.mask(rng.random(len(frame)) < self.value)
        if self.kind in ("scale", "shift"):
            changed = changed.astype(column.dtype)
        return frame.assign(**{self.column: changed.where(rows, column)})


class TrafficJob(Job):
    """Sends a table to ``url`` as live traffic would, then its labels.

    The contract (``contract``, else the one ``registered_model``'s champion was trained with)
    says the timestamp column to replay by, the features to send and the label column.
    """

    KIND: T.Literal["TrafficJob"] = "TrafficJob"
    uses_mlflow: T.ClassVar[bool] = False  # only to read the champion's contract, if needed

    inputs: ParquetReader = pdt.Field(
        default=ParquetReader(path="data/splits/production.parquet"),
        description="The table to replay: the contract's timestamp, features and target.",
    )
    contract: ContractSpec | None = pdt.Field(
        default=None,
        description="The data contract, inline or the path of a YAML file. Default: the "
        "contract models:/<registered_model>@champion was trained with.",
    )
    registered_model: str = pdt.Field(
        default="bikes", description="Whose champion's contract to use when contract is unset."
    )
    url: str = pdt.Field(default="http://127.0.0.1:8000", description="The prediction service.")
    batch_size: int = pdt.Field(default=24, gt=0, description="Rows per request.")
    concurrency: int = pdt.Field(default=4, gt=0, description="Requests in flight.")
    label_delay_hours: float = pdt.Field(
        default=24.0, ge=0, description="Event-time hours after which a row's label is sent."
    )
    label_share: float = pdt.Field(
        default=0.8, ge=0, le=1, description="Share of rows whose label is ever sent (seeded)."
    )
    seed: int = pdt.Field(default=42, description="Seed of the label draw and perturbations.")
    timeout: float = pdt.Field(default=30.0, gt=0, description="Seconds per HTTP call.")
    perturbations: list[Perturbation] = pdt.Field(
        default_factory=list, description="Drift injected on purpose, in order."
    )

    def run(self) -> Locals:
        frame, contract = self._prepare(self._contract())
        return asyncio.run(self._replay(frame, contract))

    def _contract(self) -> Contract:
        if self.contract is not None:
            return self.contract
        uri = f"models:/{self.registered_model}@champion"
        self.mlflow_service.start()
        try:
            client = self.mlflow_service.client()
            found = model_contract(client, registry.resolve(client, uri))
        finally:
            self.mlflow_service.stop()
        if found is None:
            raise ConfigError(
                f"job.contract: not given, and {uri} has no contract tag (it was not trained by "
                "bikes): give job.contract"
            )
        return found

    def _prepare(self, contract: Contract) -> tuple[pd.DataFrame, Contract]:
        """The table in event-time order, perturbed; the contract's features completed from
        its columns when the contract lists none."""
        timestamp = contract.timestamp
        if timestamp is None:
            raise ConfigError(
                "job.contract.timestamp: the replay sends rows in event-time order; name the "
                "timestamp column"
            )
        frame = self.inputs.read()
        contract = contract.with_columns(frame)
        wanted = [timestamp, *contract.feature_names]
        if self.label_share > 0:
            wanted.append(contract.require_target("sending labels (label_share > 0)"))
        missing = [name for name in wanted if name not in frame.columns]
        if missing:
            raise InputError(f"{self.inputs.source}: no column(s) {', '.join(missing)}")
        frame = frame.assign(**{timestamp: pd.to_datetime(frame[timestamp])})
        frame = frame.sort_values(timestamp, kind="stable").reset_index(drop=True)
        rng = np.random.default_rng(self.seed)
        for perturbation in self.perturbations:
            frame = perturbation.apply(frame, rng, timestamp)
        return frame, contract

    async def _replay(self, frame: pd.DataFrame, contract: Contract) -> Locals:
        timestamp = str(contract.timestamp)
        rng = np.random.default_rng(self.seed)
        labelled = rng.random(len(frame)) < self.label_share
        due_times = (frame[timestamp] + pd.Timedelta(hours=self.label_delay_hours)).to_numpy()
        targets: list[T.Any] = [None] * len(frame)
        if self.label_share > 0 and contract.target is not None:
            labelled &= frame[contract.target].notna().to_numpy()  # no truth, no label
            targets = [_plain(value) for value in frame[contract.target].tolist()]
        columns = [timestamp, *contract.feature_names]
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
        waiting: list[tuple[np.datetime64, str, T.Any]] = []  # (due event time, id, target)
        limiter = asyncio.Semaphore(self.concurrency)
        async with httpx.AsyncClient(base_url=self.url, timeout=self.timeout) as client:
            await self._check(client)
            for wave_start in range(0, len(batches), self.concurrency):
                wave = batches[wave_start : wave_start + self.concurrency]
                answers = await asyncio.gather(
                    *(self._predict(client, limiter, b, columns) for b in wave)
                )
                for batch, ids in zip(wave, answers, strict=True):
                    counts["rows_sent"] += len(batch)
                    if ids is None:
                        counts["rows_rejected"] += len(batch)
                        continue
                    counts["rows_accepted"] += len(batch)
                    for position, prediction_id in zip(batch.index, ids, strict=True):
                        if labelled[position]:
                            waiting.append((due_times[position], prediction_id, targets[position]))
                now = wave[-1][timestamp].to_numpy()[-1]
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
        self,
        client: httpx.AsyncClient,
        limiter: asyncio.Semaphore,
        batch: pd.DataFrame,
        columns: list[str],
    ) -> list[str] | None:
        timestamp = columns[0]
        records = batch.loc[:, columns].assign(
            **{timestamp: batch[timestamp].map(lambda moment: moment.isoformat())}
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
        due: list[tuple[np.datetime64, str, T.Any]],
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
    """NaN is not JSON: a blanked value travels as null (and the service rejects it unless the
    feature is nullable); numpy scalars travel as the plain values they hold."""
    return {k: _plain(v) for k, v in row.items()}


def _plain(value: T.Any) -> T.Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value
