"""A classifier's scores summarised on Spark: what ROC AUC and log loss need, in one pass.

``metrics.classification_metrics`` ranks every probability (sklearn's ``roc_auc_score``),
which needs every row on one machine. Instead, each partition counts, per score column and
per true class, the rows whose score falls in each fine bin (numpy in the Python worker,
``mapInArrow``), and sums the log loss's terms; one small record per partition comes back and
the driver adds them up (as ``statistics.scan``). ``bikes.core.summaries`` turns the counts
into an AUC interval (exact when every bin holds one distinct score) and the sum into sklearn's
log loss (equal to rounding). The same pass counts what makes the pandas engine leave a figure
out: a target that is not one of the classes, a missing score, a probability outside [0, 1]
(``log_loss`` refuses it), rows of a multiclass model whose probabilities do not sum to 1
(``roc_auc_score`` refuses them).
"""

from __future__ import annotations

import dataclasses
import typing as T

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from bikes.core.summaries import (
    auc_interval,
    log_loss_sum,
    ovr_auc_interval,
    true_class_probabilities,
)

STATS = ("rows", "unknown", "missing", "outside", "unnormalised")
_SCHEMA = "n array<long>, loss double"
_ARROW_SCHEMA = pa.schema([("n", pa.list_(pa.int64())), ("loss", pa.float64())])


@dataclasses.dataclass(frozen=True)
class ScoreSummary:
    """A classifier's scores on some rows, summarised.

    ``counts[c][t, b]``: the rows of true class ``classes[t]`` whose score column ``c`` falls
    in bucket ``b`` of ``edges[c]`` (``summaries.Bins`` buckets: ``b`` edges are ``<=`` it).
    ``rows``: rows counted (target one of the classes, every score present); ``unknown``:
    rows whose target is none of the classes (or null); ``missing``: rows with a null or NaN
    score; ``outside``: counted rows with a score below 0 or above 1; ``unnormalised``
    (multiclass): counted rows whose probabilities do not sum to 1 as ``np.allclose`` judges;
    ``loss``: the counted rows' ``summaries.log_loss_sum``.
    """

    classes: tuple[T.Any, ...]
    positive: T.Any | None
    edges: tuple[np.ndarray, ...]
    counts: tuple[np.ndarray, ...]
    rows: int
    unknown: int
    missing: int
    outside: int
    unnormalised: int
    loss: float

    @property
    def binary(self) -> bool:
        """One score column: the positive class's probability."""
        return self.positive is not None

    def roc_auc(self) -> tuple[float, float, float]:
        """``(estimate, low, high)``: the exact ROC AUC lies in ``[low, high]`` (binary: of
        the positive class's score; multiclass: one-vs-rest, macro). NaN when a class is
        absent from the rows, as sklearn."""
        if self.binary:
            table = self.counts[0]
            positive = self.classes.index(self.positive)
            return auc_interval(table[positive], table.sum(axis=0) - table[positive])
        return ovr_auc_interval(list(self.counts))

    def log_loss(self) -> float:
        """``sklearn.metrics.log_loss`` of the counted rows (NaN without rows)."""
        return self.loss / self.rows if self.rows else float("nan")

    def metrics(self) -> dict[str, float]:
        """``roc_auc`` (the estimate) and ``log_loss`` where ``classification_metrics`` gives
        them on the same rows: none when a row's target is not a class or a score is missing
        (the pandas monitor passes no probabilities then); no ``log_loss`` when a probability
        is outside [0, 1], no multiclass ``roc_auc`` when probabilities do not sum to 1
        (sklearn raises on both, and the pandas engine leaves the figure out)."""
        if self.unknown or self.missing or not self.rows:
            return {}
        figures: dict[str, float] = {}
        if self.binary or not self.unnormalised:
            figures["roc_auc"] = self.roc_auc()[0]
        if not self.outside:
            figures["log_loss"] = self.log_loss()
        return figures


def score_summary(
    frame: DataFrame,
    target: str,
    scores: T.Sequence[str],
    classes: T.Sequence[T.Any],
    edges: T.Mapping[str, np.ndarray],
    positive: T.Any = None,
) -> ScoreSummary:
    """The ``ScoreSummary`` of ``frame``'s rows (pass the labelled ones), in one Spark job.

    Binary: ``scores`` is one column, the probability of ``positive`` (default: the greater of
    the two ``classes``). Multiclass: one column per class, in ``classes`` order. ``edges``
    gives each score column's ascending fine edges (the reference's quantiles, say).
    """
    classes = tuple(classes)
    columns = list(scores)
    binary = len(columns) == 1
    if binary:
        if len(classes) != 2:
            raise ValueError(f"one score column is a binary model's: 2 classes, not {classes}")
        positive = classes[-1] if positive is None else positive
        if positive not in classes:
            raise ValueError(f"positive class {positive!r} is not one of {classes}")
    else:
        if len(columns) != len(classes):
            raise ValueError(
                f"{len(columns)} score columns for {len(classes)} classes: one per class needed"
            )
        positive = None
    ordered = [np.asarray(edges[c], dtype=float) for c in columns]
    if any(e.ndim != 1 or np.any(np.diff(e) <= 0) for e in ordered):
        raise ValueError("edges must be strictly ascending")
    width = len(classes)
    positive_index = classes.index(positive) if binary else -1

    def summarise(batches: T.Iterator[pa.RecordBatch]) -> T.Iterator[pa.RecordBatch]:
        stats = np.zeros(len(STATS), dtype=np.int64)
        counts = [np.zeros((width, e.size + 1), dtype=np.int64) for e in ordered]
        loss = 0.0
        seen = False
        for batch in batches:
            seen = True
            truth = np.asarray(batch.column(0).to_numpy(zero_copy_only=False), dtype=np.int64)
            table = np.column_stack(
                [
                    np.asarray(batch.column(i + 1).to_numpy(zero_copy_only=False), dtype=float)
                    for i in range(len(columns))
                ]
            )
            known = truth >= 0
            present = ~np.isnan(table).any(axis=1)
            kept = known & present
            truth, table = truth[kept], table[kept]
            stats[0] += truth.size
            stats[1] += int((~known).sum())
            stats[2] += int((known & ~present).sum())
            stats[3] += int(((table < 0) | (table > 1)).any(axis=1).sum())
            if not binary:
                stats[4] += int((~np.isclose(1, table.sum(axis=1))).sum())
            if not truth.size:
                continue
            if binary:
                probabilities = true_class_probabilities(
                    table[:, 0], (truth == positive_index).astype(np.int64)
                )
            else:
                probabilities = true_class_probabilities(table, truth)
            loss += log_loss_sum(probabilities)
            for c, cut in enumerate(ordered):
                bucket = np.searchsorted(cut, table[:, c], side="right")
                size = cut.size + 1
                found = np.bincount(truth * size + bucket, minlength=width * size)
                counts[c] += found.reshape(width, size)
        if seen:
            numbers = np.concatenate([stats, *(c.ravel() for c in counts)])
            yield pa.RecordBatch.from_pydict(
                {"n": [numbers.tolist()], "loss": [loss]}, schema=_ARROW_SCHEMA
            )

    index = F.lit(-1)
    for i, label in reversed(list(enumerate(classes))):
        value = label.item() if isinstance(label, np.generic) else label
        index = F.when(F.col(target) == F.lit(value), F.lit(i)).otherwise(index)
    selected = frame.select(
        F.coalesce(index, F.lit(-1)).cast("int").alias("_t"),
        *(F.col(c).cast("double").alias(f"_s{i}") for i, c in enumerate(columns)),
    )
    total = np.zeros(len(STATS) + sum(width * (e.size + 1) for e in ordered), dtype=np.int64)
    loss = 0.0
    for row in selected.mapInArrow(summarise, _SCHEMA).collect():
        total += np.asarray(row["n"], dtype=np.int64)
        loss += float(row["loss"])
    stats, rest = total[: len(STATS)], total[len(STATS) :]
    tables: list[np.ndarray] = []
    for cut in ordered:
        size = width * (cut.size + 1)
        tables.append(rest[:size].reshape(width, cut.size + 1))
        rest = rest[size:]
    return ScoreSummary(
        classes=classes,
        positive=positive,
        edges=tuple(ordered),
        counts=tuple(tables),
        rows=int(stats[0]),
        unknown=int(stats[1]),
        missing=int(stats[2]),
        outside=int(stats[3]),
        unnormalised=int(stats[4]),
        loss=loss,
    )
