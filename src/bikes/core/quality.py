"""Data-quality figures of a production window, against the contract and the reference.

Production is where schema violations show up: they are measured and reported here, never
raised, so one bad column does not hide the state of the others. A window's figures count
the rows the service accepted *and* the rows it rejected (their values as received), so an
invalid input shows up here even though the model never saw it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import typing as T

import numpy as np
import pandas as pd

from bikes.core.contract import Feature


@dataclasses.dataclass(frozen=True)
class Counts:
    """One part of a window (accepted or rejected rows): rows, missing, invalid, categories."""

    rows: int = 0
    missing: int = 0
    out_of_range: int = 0
    values: frozenset[T.Any] = frozenset()  # distinct present values (categorical only)


def counts(values: pd.Series | None, rows: int, feature: Feature) -> Counts:
    """Missing values, values the contract refuses, and (categorical) the distinct values.

    ``values`` None: the column is absent, every one of the ``rows`` counts as missing. A
    numeric feature's value that is not a number (text, a boolean: a rejected row's raw value
    as received) is out of range, as is a value beyond ``min``/``max`` or outside ``values``.
    """
    if values is None:
        return Counts(rows=rows, missing=rows)
    present = values.notna()
    invalid = ~feature.in_range(values) & present
    if feature.kind == "numeric" and not _numbers_only(values):
        invalid |= present & ~values.map(_is_number, na_action="ignore").astype(bool)
    distinct: frozenset[T.Any] = frozenset()
    if feature.kind == "categorical":
        distinct = frozenset(plain_value(v) for v in pd.unique(values[present]))
    return Counts(
        rows=len(values),
        missing=int((~present).sum()),
        out_of_range=int(invalid.sum()),
        values=distinct,
    )


def column_quality(
    parts: T.Sequence[Counts], known_categories: T.Collection[T.Any] | None, *, absent: bool
) -> dict[str, T.Any]:
    """Shares over every part together; ``unseen_categories`` are present values the
    reference lacks (``known_categories``: the reference's, prepared once per monitor)."""
    rows = sum(part.rows for part in parts)
    missing = sum(part.missing for part in parts)
    outside = sum(part.out_of_range for part in parts)
    figures: dict[str, T.Any] = {
        "rows": rows,
        "missing_share": missing / rows if rows else 0.0,
        "out_of_range_share": outside / rows if rows else 0.0,
        "unseen_categories": [],
    }
    if absent:
        figures["missing_column"] = True
    if known_categories is not None:
        known = {plain_value(v) for v in known_categories}
        seen = set().union(*(part.values for part in parts))
        figures["unseen_categories"] = sorted_values(seen - known)
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


def _numbers_only(values: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)


def _is_number(value: T.Any) -> bool:
    return isinstance(value, int | float | np.number) and not isinstance(value, bool | np.bool_)


def plain_value(value: T.Any) -> T.Any:
    """A numpy scalar as Python's own; a whole float as an int (1.0 and 1 are one category)."""
    if isinstance(value, np.generic):
        value = value.item()
    return int(value) if isinstance(value, float) and value.is_integer() else value


def sorted_values(values: T.Iterable[T.Any]) -> list[T.Any]:
    """Sorted, or sorted as text where numbers and text mix."""
    items = list(values)
    try:
        return sorted(items)
    except TypeError:  # numbers and text together (raw values of rejected rows)
        return sorted(items, key=str)
