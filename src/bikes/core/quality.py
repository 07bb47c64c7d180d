"""Data-quality figures of a production window, against the contract and the reference.

Production is where schema violations show up: they are measured and reported here, never
raised, so one bad column does not hide the state of the others.
"""

from __future__ import annotations

import datetime as dt
import typing as T

import numpy as np
import pandas as pd

from bikes.core import schemas


def column_quality(
    current: pd.Series, known_categories: np.ndarray | None, kind: str
) -> dict[str, T.Any]:
    """Missing share, share out of the contract's range, and categories the reference lacks
    (``known_categories``: the reference's, prepared once rather than per window)."""
    values = pd.to_numeric(current, errors="coerce")
    rows = len(current)
    missing = int(values.isna().sum())
    figures: dict[str, T.Any] = {
        "rows": rows,
        "missing_share": missing / rows if rows else 0.0,
        "out_of_range_share": 0.0,
        "unseen_categories": [],
    }
    feature = schemas.FEATURES_BY_NAME.get(str(current.name))
    present = values.dropna()
    if feature is not None and rows:
        outside = (present < feature.low) | (present > feature.high)
        figures["out_of_range_share"] = float(outside.sum()) / rows
    if kind != "numeric" and known_categories is not None:
        known = set(known_categories.tolist())
        unseen = sorted(set(present.unique().tolist()) - known)
        figures["unseen_categories"] = [_plain(v) for v in unseen]
    return figures


def freshness(event_times: pd.Series, now: dt.datetime) -> dict[str, T.Any]:
    """The window's newest event and how old it is, in hours, at ``now``."""
    if event_times.empty:
        return {"latest_event": None, "age_hours": None}
    latest = pd.Timestamp(event_times.max())
    return {
        "latest_event": latest.isoformat(),
        "age_hours": (pd.Timestamp(now) - latest).total_seconds() / 3600,
    }


def _plain(value: T.Any) -> T.Any:
    if isinstance(value, np.generic):
        value = value.item()
    return int(value) if isinstance(value, float) and value.is_integer() else value
