"""One production window against the reference: quality, drift, performance, segments, service.

A ``Monitor`` is prepared once from the reference (drift detectors, reference metrics per
segment) and then judges any number of windows: a backfill never re-sorts the reference.
Results are plain dicts with stable keys (the JSON other tools read) and, flattened, the
long-format rows of the ``monitoring_metrics`` table.
"""

from __future__ import annotations

import datetime as dt
import os
import typing as T
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import pydantic as pdt

from bikes.core import schemas
from bikes.core.comparison import Slicing, segments
from bikes.core.drift import SMALL_SAMPLE, Detector, DriftResult, Kind
from bikes.core.metrics import regression_metrics
from bikes.core.quality import column_quality, freshness

STATUSES = ("no_detection", "potential", "detected")


class ColumnDrift(pdt.BaseModel, strict=True, frozen=True, extra="forbid"):
    """Override the method or threshold of one column."""

    method: (
        T.Literal[
            "ks",
            "chisquare",
            "z",
            "wasserstein",
            "jensenshannon",
            "psi",
            "hellinger",
            "total_variation",
        ]
        | None
    ) = None
    threshold: float | None = None


class DriftSettings(pdt.BaseModel, strict=True, frozen=True, extra="forbid"):
    share: float = pdt.Field(default=0.5, gt=0, le=1)  # dataset drift when this share drifts
    small_sample: int = pdt.Field(default=SMALL_SAMPLE, ge=1)
    columns: dict[str, ColumnDrift] = pdt.Field(default_factory=dict)


MAX_CATEGORIES = 20


def column_kind(name: str, values: pd.Series) -> Kind:
    """The contract's kind for a feature; otherwise integers with few values are categories."""
    feature = schemas.FEATURES_BY_NAME.get(name)
    if feature is not None:
        return feature.kind
    if name in (schemas.PREDICTION, schemas.TARGET) or not pd.api.types.is_integer_dtype(values):
        return "numeric"
    distinct = values.nunique()
    if distinct <= 2:
        return "binary"
    return "categorical" if distinct <= MAX_CATEGORIES else "numeric"


class Monitor:
    """Prepared from the reference once; ``window()`` judges one current window.

    The reference frame is not kept: detectors hold what drift and quality need (sorted
    values, category counts), so the raw reference can be freed once the monitor exists.
    """

    def __init__(
        self,
        reference: pd.DataFrame,
        columns: list[str],
        drift: DriftSettings,
        slicing: Slicing,
        performance_threshold: float,
    ) -> None:
        self.columns = columns
        self.drift = drift
        self.slicing = slicing
        self.performance_threshold = performance_threshold
        watched = [c for c in [*columns, schemas.PREDICTION, schemas.TARGET] if c in reference]
        self.kinds = {c: column_kind(c, reference[c]) for c in watched}
        self.detectors = _per_column(
            lambda column: Detector(
                column,
                _numbers(reference[column]),
                self.kinds[column],
                method=drift.columns.get(column, ColumnDrift()).method,
                threshold=drift.columns.get(column, ColumnDrift()).threshold,
                small_sample=drift.small_sample,
            ),
            watched,
        )
        self.reference_performance = _performance(reference)
        self.reference_segments = _segment_rmse(reference, slicing)
        self.latest_shares: dict[str, np.ndarray] = {}  # binned current of the last window

    def known_categories(self, column: str) -> np.ndarray | None:
        detector = self.detectors.get(column)
        return None if detector is None or detector.kind == "numeric" else detector.categories

    def window(
        self,
        current: pd.DataFrame,
        start: dt.datetime | None,
        end: dt.datetime | None,
        now: dt.datetime,
    ) -> dict[str, T.Any]:
        quality = {
            column: column_quality(
                current[column], self.known_categories(column), self.kinds[column]
            )
            for column in self.columns
            if column in current.columns
        }
        drifts = _per_column(
            lambda column: self.detectors[column].score(_numbers(current[column])),
            [column for column in self.columns if column in current.columns],
        )
        prediction_drift = self._drift_of(current, schemas.PREDICTION)
        target_drift = self._drift_of(current, schemas.TARGET)
        self.latest_shares = {
            column: result.shares
            for column, result in [
                *drifts.items(),
                *prediction_drift.items(),
                *target_drift.items(),
            ]
        }
        drifted = sum(result.drift for result in drifts.values())
        share = drifted / len(drifts) if drifts else 0.0
        result: dict[str, T.Any] = {
            "window": {
                "start": None if start is None else pd.Timestamp(start).isoformat(),
                "end": None if end is None else pd.Timestamp(end).isoformat(),
                "rows": len(current),
            },
            "model_version": _model_version(current),
            "data_quality": {
                "rows": len(current),
                "freshness": freshness(current["event_time"], now)
                if "event_time" in current
                else None,
                "columns": quality,
            },
            "data_drift": {
                "dataset_drift": bool(share >= self.drift.share),
                "drift_share": share,
                "share_threshold": self.drift.share,
                "drifted_columns": drifted,
                "columns": {c: _drift_dict(r) for c, r in drifts.items()},
            },
            "prediction_drift": _single_drift(prediction_drift),
            "target_drift": _single_drift(target_drift),
            "performance": self._performance(current),
            "segments": self._segments(current),
            "service": _service(current),
        }
        result["status"] = status_of(result)
        return result

    def _drift_of(self, current: pd.DataFrame, column: str) -> dict[str, DriftResult]:
        """``{column: result}`` for the prediction or target, or ``{}`` when it is absent."""
        if column not in current.columns or column not in self.detectors:
            return {}
        values = _numbers(current[column])
        if not np.isfinite(values).any():
            return {}
        return {column: self.detectors[column].score(values)}

    def _performance(self, current: pd.DataFrame) -> dict[str, T.Any] | None:
        if schemas.TARGET not in current.columns or schemas.PREDICTION not in current.columns:
            return None
        labelled = current.dropna(subset=[schemas.TARGET, schemas.PREDICTION])
        coverage = len(labelled) / len(current) if len(current) else 0.0
        figures: dict[str, T.Any] = {"label_coverage": coverage, "rows_labelled": len(labelled)}
        if len(labelled) < 2:
            return figures | {
                "current": None,
                "reference": self.reference_performance,
                "degraded": False,
            }
        now = _performance(labelled)
        assert now is not None
        change = None
        if self.reference_performance is not None and self.reference_performance["rmse"] > 0:
            change = now["rmse"] / self.reference_performance["rmse"] - 1
        return figures | {
            "current": now,
            "reference": self.reference_performance,
            "rmse_relative_change": change,
            "threshold": self.performance_threshold,
            "degraded": bool(change is not None and change >= self.performance_threshold),
        }

    def _segments(self, current: pd.DataFrame) -> list[dict[str, T.Any]]:
        if schemas.TARGET not in current.columns or schemas.PREDICTION not in current.columns:
            return []  # labels without predictions (a labelled parquet file): nothing to score
        labelled = current.dropna(subset=[schemas.TARGET, schemas.PREDICTION])
        rows = []
        for (column, value), rmse in _segment_rmse(labelled, self.slicing).items():
            reference = self.reference_segments.get((column, value))
            rows.append(
                {
                    "segment": column,
                    "value": value,
                    "rmse": rmse,
                    "reference_rmse": reference,
                    "relative_change": None if not reference else rmse / reference - 1,
                }
            )
        return rows


def status_of(result: dict[str, T.Any]) -> str:
    """``detected``: dataset drift or degraded performance; ``potential``: anything else moved."""
    performance = result.get("performance") or {}
    if result["data_drift"]["dataset_drift"] or performance.get("degraded"):
        return "detected"
    quality = result["data_quality"]["columns"].values()
    signals = [
        result["data_drift"]["drifted_columns"] > 0,
        bool((result.get("prediction_drift") or {}).get("drift")),
        bool((result.get("target_drift") or {}).get("drift")),
        any(
            q["missing_share"] > 0 or q["out_of_range_share"] > 0 or q["unseen_categories"]
            for q in quality
        ),
    ]
    return "potential" if any(signals) else "no_detection"


def long_rows(result: dict[str, T.Any]) -> list[dict[str, T.Any]]:
    """The window's figures as ``(check, column, value, threshold, status)`` rows."""
    rows: list[dict[str, T.Any]] = []

    def add(
        check: str,
        column: str,
        value: float | None,
        threshold: float | None = None,
        status: str = "ok",
    ) -> None:
        if value is not None and np.isfinite(value):
            rows.append(
                {
                    "check": check,
                    "column": column,
                    "value": float(value),
                    "threshold": threshold,
                    "status": status,
                }
            )

    add("status", "*", STATUSES.index(result["status"]), None, result["status"])
    add("rows", "*", result["window"]["rows"])
    for column, figures in result["data_quality"]["columns"].items():
        add(
            "missing_share",
            column,
            figures["missing_share"],
            0.0,
            "issue" if figures["missing_share"] else "ok",
        )
        add(
            "out_of_range_share",
            column,
            figures["out_of_range_share"],
            0.0,
            "issue" if figures["out_of_range_share"] else "ok",
        )
        add(
            "unseen_categories",
            column,
            len(figures["unseen_categories"]),
            0.0,
            "issue" if figures["unseen_categories"] else "ok",
        )
    drift = result["data_drift"]
    add(
        "dataset_drift_share",
        "*",
        drift["drift_share"],
        drift["share_threshold"],
        "drift" if drift["dataset_drift"] else "ok",
    )
    for column, figures in drift["columns"].items():
        add(
            "drift_score",
            column,
            figures["score"],
            figures["threshold"],
            "drift" if figures["drift"] else "ok",
        )
    for check in ("prediction_drift", "target_drift"):
        if result.get(check):
            figures = result[check]
            add(
                f"{check}_score",
                figures["column"],
                figures["score"],
                figures["threshold"],
                "drift" if figures["drift"] else "ok",
            )
    performance = result.get("performance")
    if performance:
        add("label_coverage", "*", performance["label_coverage"])
        for name, value in (performance.get("current") or {}).items():
            add(name, "*", value)
        add(
            "rmse_relative_change",
            "*",
            performance.get("rmse_relative_change"),
            performance.get("threshold"),
            "degraded" if performance.get("degraded") else "ok",
        )
    for segment in result["segments"]:
        add("segment_rmse", f"{segment['segment']}={segment['value']}", segment["rmse"])
    service = result.get("service")
    if service:
        add("rows_per_hour", "*", service["rows_per_hour"])
        for name, value in service["latency_ms"].items():
            add(f"latency_{name}_ms", "*", value)
    return rows


_Result = T.TypeVar("_Result")


def _per_column(work: T.Callable[[str], _Result], columns: list[str]) -> dict[str, _Result]:
    """``{column: work(column)}`` on every core: numpy releases the GIL while it sorts and
    searches, which is where drift detection spends its time on large windows."""
    workers = min(len(columns), os.cpu_count() or 1)
    if workers <= 1:
        return {column: work(column) for column in columns}
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="drift") as pool:
        return dict(zip(columns, pool.map(work, columns), strict=True))


def _numbers(values: pd.Series) -> np.ndarray:
    return pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)


def _single_drift(results: dict[str, DriftResult]) -> dict[str, T.Any] | None:
    return next((_drift_dict(result) for result in results.values()), None)


def _drift_dict(result: DriftResult) -> dict[str, T.Any]:
    return {
        "column": result.column,
        "method": result.method,
        "score": None if not np.isfinite(result.score) else result.score,
        "threshold": result.threshold,
        "drift": result.drift,
    }


def _performance(frame: pd.DataFrame) -> dict[str, float] | None:
    if schemas.TARGET not in frame.columns or schemas.PREDICTION not in frame.columns:
        return None
    labelled = frame.dropna(subset=[schemas.TARGET, schemas.PREDICTION])
    if len(labelled) < 2:
        return None
    return regression_metrics(labelled[schemas.TARGET], labelled[schemas.PREDICTION])


def _segment_rmse(frame: pd.DataFrame, slicing: Slicing) -> dict[tuple[str, str], float]:
    needed = [*slicing.columns, slicing.hour_column, schemas.TARGET, schemas.PREDICTION]
    if any(column not in frame.columns for column in needed) or frame.empty:
        return {}
    truth = frame[schemas.TARGET].to_numpy(dtype=float)
    predicted = frame[schemas.PREDICTION].to_numpy(dtype=float)
    return {
        (column, value): float(np.sqrt(np.mean((truth[mask] - predicted[mask]) ** 2)))
        for column, value, mask in segments(frame, slicing)
        if mask.sum() >= slicing.min_rows
    }


def _model_version(frame: pd.DataFrame) -> str | None:
    if schemas.MODEL_VERSION not in frame.columns or frame.empty:
        return None
    versions = sorted({str(v) for v in frame[schemas.MODEL_VERSION].dropna()})
    return ",".join(versions) or None


def _service(frame: pd.DataFrame) -> dict[str, T.Any] | None:
    if "latency_ms" not in frame.columns or "event_time" not in frame.columns or frame.empty:
        return None
    received = pd.to_datetime(frame.get("received_time", frame["event_time"]))
    hours = max((received.max() - received.min()).total_seconds() / 3600, 1.0)
    latency = frame["latency_ms"].to_numpy(dtype=float)
    return {
        "rows_per_hour": len(frame) / hours,
        "latency_ms": {f"p{q}": float(np.percentile(latency, q)) for q in (50, 95, 99)},
    }
