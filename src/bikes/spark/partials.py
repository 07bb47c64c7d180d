"""What a Spark Python worker runs on one partition: numpy and Arrow only.

These functions are shipped to the workers by ``bikes.spark.statistics``; a worker imports
this module, so it imports nothing heavier than numpy and pyarrow (no pydantic, scipy or
PySpark's SQL layer: each worker would pay for them at its start). Each function reads a
partition's Arrow batches and yields one small record of partial sums that the driver adds
up: the rows never leave the worker.
"""

from __future__ import annotations

import typing as T

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def finite(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A double column's finite values (nulls, NaN and infinities dropped, as a detector)."""
    values: np.ndarray = np.asarray(column.to_numpy(zero_copy_only=False), dtype=float)
    kept: np.ndarray = values[np.isfinite(values)]
    return kept


def bucketed(edges: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, ...]:
    """``summaries.Bins``' three arrays for finite values on sorted distinct ``edges``: bucket
    ``j`` holds ``e_(j-1) <= x < e_j`` (bucket 0 everything below ``e_0``, the last everything
    from ``e_m`` up); per bucket its rows, those equal to its left edge, and the sum of the
    others. The values are sorted and the edges searched in them: numpy's sort of a batch
    and two searches per edge beat a search per value (5 against 8 ms per 100,000)."""
    ordered = np.sort(values)
    below = np.searchsorted(ordered, edges, side="left")  # values < e_j
    upto = np.searchsorted(ordered, edges, side="right")  # values <= e_j
    counts = np.diff(np.concatenate(([0], below, [ordered.size])))
    at = np.concatenate(([0], upto - below))
    cumulative = np.concatenate(([0.0], np.cumsum(ordered)))
    inside = cumulative[np.concatenate((below, [ordered.size]))]
    inside -= cumulative[np.concatenate(([0], upto))]
    return counts.astype(np.int64), at.astype(np.int64), inside


def summarise(
    batches: T.Iterable[pa.RecordBatch],
    edges: list[np.ndarray],
    counted: int,
) -> T.Iterator[pa.RecordBatch]:
    """One partition's numeric bins and category counts, one record.

    Each batch's first ``len(edges)`` columns are doubles, bucketed on their edges; the next
    ``counted`` columns are counted by value (Arrow's ``value_counts``). The record has, per
    numeric column ``i``, ``n{i}``/``a{i}``/``s{i}`` (``bucketed``'s arrays) and, per counted
    column ``j``, ``k{j}``/``c{j}`` (its distinct values and their rows)."""
    sizes = [e.size + 1 for e in edges]
    counts = [np.zeros(n, dtype=np.int64) for n in sizes]
    at = [np.zeros(n, dtype=np.int64) for n in sizes]
    sums = [np.zeros(n) for n in sizes]
    parts: list[list[pa.StructArray]] = [[] for _ in range(counted)]
    kinds: list[pa.DataType] | None = None  # the counted columns' types; None: no batch
    for batch in batches:
        kinds = [batch.schema.field(len(edges) + j).type for j in range(counted)]
        for i, column_edges in enumerate(edges):
            values = finite(batch.column(i))
            if values.size:
                part = bucketed(column_edges, values)
                counts[i] += part[0]
                at[i] += part[1]
                sums[i] += part[2]
        for j in range(counted):
            parts[j].append(pc.value_counts(batch.column(len(edges) + j)))
    if kinds is None:
        return  # an empty partition: nothing to add
    arrays: list[pa.Array] = []
    names: list[str] = []
    for i in range(len(edges)):
        arrays += [_one(pa.array(counts[i])), _one(pa.array(at[i])), _one(pa.array(sums[i]))]
        names += [f"n{i}", f"a{i}", f"s{i}"]
    for j, kind in enumerate(kinds):
        names += [f"k{j}", f"c{j}"]
        table = pa.table(
            {
                "v": pa.concat_arrays([p.field("values") for p in parts[j]]),
                "n": pa.concat_arrays([p.field("counts") for p in parts[j]]),
            }
        )
        summed = table.group_by("v").aggregate([("n", "sum")])
        arrays.append(_one(summed["v"].combine_chunks().cast(kind)))
        arrays.append(_one(summed["n_sum"].combine_chunks().cast(pa.int64())))
    yield pa.RecordBatch.from_arrays(arrays, names=names)


def _one(values: pa.Array) -> pa.Array:
    """``values`` as a list array of one list (one record's array field)."""
    return pa.ListArray.from_arrays(pa.array([0, len(values)], pa.int32()), values)
