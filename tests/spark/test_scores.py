"""ROC AUC and log loss from Spark's one-pass score summary against sklearn on the same rows:
the bin counts exact across partitions, sklearn's AUC inside the interval (equal to it when
the bins are the distinct scores), the log loss equal to rounding, and the figures the pandas
engine leaves out left out."""

from __future__ import annotations

import typing as T

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics

pytest.importorskip("pyspark")

from bikes.core.metrics import classification_metrics
from bikes.core.summaries import fine_edges, fine_probabilities
from bikes.spark.scores import score_summary


def quantile_edges(values: np.ndarray) -> np.ndarray:
    """The fine edges monitoring would take from a reference's quantiles."""
    return fine_edges(np.quantile(values, fine_probabilities()), values.min(), values.max())


def numpy_counts(scores: np.ndarray, truth: np.ndarray, edges: np.ndarray, k: int) -> np.ndarray:
    bucket = np.searchsorted(edges, scores, side="right")
    size = edges.size + 1
    return np.bincount(truth * size + bucket, minlength=k * size).reshape(k, size)


@pytest.fixture(scope="module")
def binary(spark: T.Any) -> tuple[pd.DataFrame, T.Any]:
    """Text labels, a continuous score and a rounded one (ties), four partitions."""
    rng = np.random.default_rng(11)
    n = 12_000
    yes = rng.random(n) < 0.35
    p = 1 / (1 + np.exp(-rng.normal(np.where(yes, 0.8, -0.4), 1.2)))
    p[:3] = [0.0, 1.0, 1e-18]  # clipped by sklearn's log loss
    data = pd.DataFrame({"label": np.where(yes, "yes", "no"), "p": p, "rounded": np.round(p, 2)})
    return data, spark.createDataFrame(data).repartition(4)


def test_binary_auc_and_log_loss_against_sklearn(binary: tuple[pd.DataFrame, T.Any]) -> None:
    data, frame = binary
    truth, p = data["label"].to_numpy(), data["p"].to_numpy()
    edges = {"p": quantile_edges(p), "rounded": np.unique(data["rounded"])}
    summary = score_summary(frame, "label", ["p"], ["no", "yes"], edges)
    assert (summary.rows, summary.unknown, summary.missing, summary.outside) == (len(data), 0, 0, 0)
    expected = numpy_counts(p, (truth == "yes").astype(int), edges["p"], 2)
    assert np.array_equal(summary.counts[0], expected)  # exact across the partitions
    exact = metrics.roc_auc_score(truth == "yes", p)
    estimate, low, high = summary.roc_auc()
    assert low <= exact <= high
    assert high - low < 2e-3
    assert estimate == pytest.approx(exact, abs=2e-4)
    loss = metrics.log_loss(truth, np.column_stack([1 - p, p]), labels=["no", "yes"])
    assert summary.log_loss() == pytest.approx(loss, rel=1e-9, abs=0)
    # What the pandas engine's own function gives on these rows.
    pandas = classification_metrics(
        truth,
        truth,
        positive_class="yes",
        classes=["no", "yes"],
        probabilities=np.column_stack([1 - p, p]),
    )
    found = summary.metrics()
    assert found["log_loss"] == pytest.approx(pandas["log_loss"], rel=1e-9, abs=0)
    assert found["roc_auc"] == pytest.approx(pandas["roc_auc"], abs=2e-4)
    # Every distinct score a bin of its own: the AUC is exact, ties and all.
    rounded = data["rounded"].to_numpy()
    tied = score_summary(frame, "label", ["rounded"], ["no", "yes"], edges)
    estimate, low, high = tied.roc_auc()
    assert estimate == pytest.approx(metrics.roc_auc_score(truth == "yes", rounded), abs=1e-12)
    assert low < estimate < high
    # The score of the other class: the counts turn round, the AUC and loss follow.
    other = frame.withColumn("q", 1 - frame["p"])
    flipped = score_summary(
        other, "label", ["q"], ["no", "yes"], {"q": quantile_edges(1 - p)}, positive="no"
    )
    assert flipped.log_loss() == pytest.approx(
        metrics.log_loss(truth, np.column_stack([p, 1 - p])[:, ::-1], labels=["no", "yes"]),
        rel=1e-9,
    )
    low, high = flipped.roc_auc()[1:]
    assert low <= metrics.roc_auc_score(truth == "no", 1 - p) <= high


def test_multiclass_ovr_auc_and_log_loss_against_sklearn(spark: T.Any) -> None:
    rng = np.random.default_rng(12)
    n = 9_000
    truth = rng.integers(0, 3, n)
    table = rng.dirichlet([1, 1, 1], 30)  # a few distinct rows: each column's values its bins
    rows = np.where(
        rng.random(n) < 0.6, truth * 10 + rng.integers(0, 10, n), rng.integers(0, 30, n)
    )
    scores = table[rows]
    continuous = rng.dirichlet([1, 1, 1], n)
    continuous[np.arange(n), truth] += 0.4
    continuous /= continuous.sum(axis=1, keepdims=True)
    names = ["a", "b", "c"]
    data = pd.DataFrame({"y": truth})
    for k in range(3):
        data[names[k]] = scores[:, k]
        data[["x", "y2", "z"][k]] = continuous[:, k]
    frame = spark.createDataFrame(data).repartition(3)
    discrete = score_summary(frame, "y", names, [0, 1, 2], {c: np.unique(data[c]) for c in names})
    expected = metrics.roc_auc_score(truth, scores, multi_class="ovr", labels=[0, 1, 2])
    estimate, low, high = discrete.roc_auc()
    assert estimate == pytest.approx(expected, abs=1e-12)
    assert low < expected < high
    pandas = classification_metrics(truth, truth, classes=[0, 1, 2], probabilities=scores)
    found = discrete.metrics()
    assert found["roc_auc"] == pytest.approx(pandas["roc_auc"], abs=1e-12)
    assert found["log_loss"] == pytest.approx(pandas["log_loss"], rel=1e-9, abs=0)
    spread = ["x", "y2", "z"]
    summary = score_summary(
        frame, "y", spread, [0, 1, 2], {c: quantile_edges(data[c].to_numpy()) for c in spread}
    )
    for k, column in enumerate(spread):
        expected_counts = numpy_counts(data[column].to_numpy(), truth, summary.edges[k], 3)
        assert np.array_equal(summary.counts[k], expected_counts)
    exact = metrics.roc_auc_score(truth, continuous, multi_class="ovr", labels=[0, 1, 2])
    estimate, low, high = summary.roc_auc()
    assert low <= exact <= high
    assert estimate == pytest.approx(exact, abs=1e-3)
    assert summary.log_loss() == pytest.approx(
        metrics.log_loss(truth, continuous, labels=[0, 1, 2]), rel=1e-9, abs=0
    )


def test_the_figures_the_pandas_engine_leaves_out_are_left_out(spark: T.Any) -> None:
    good = pd.DataFrame({"y": [0, 1, 2, 0, 1, 2], "a": [0.6, 0.2, 0.1, 0.5, 0.3, 0.2]})
    good["b"] = [0.3, 0.7, 0.2, 0.3, 0.5, 0.2]
    good["c"] = 1 - good["a"] - good["b"]
    edges = {c: np.linspace(0, 1, 11) for c in "abc"}

    def summary_of(data: pd.DataFrame, rows: int | None = None) -> T.Any:
        frame = spark.createDataFrame(data)
        frame = frame if rows is None else frame.limit(rows)
        return score_summary(frame, "y", list("abc"), [0, 1, 2], edges)

    assert set(summary_of(good).metrics()) == {"roc_auc", "log_loss"}
    unknown = summary_of(pd.concat([good, good.head(1).assign(y=7)]))
    assert (unknown.rows, unknown.unknown) == (6, 1)
    assert unknown.metrics() == {}  # a class the scores cannot name: no probabilities
    missing = summary_of(pd.concat([good, good.head(2).assign(a=[np.nan, None])]))
    assert (missing.rows, missing.missing) == (6, 2)
    assert missing.metrics() == {}
    # A probability above 1: sklearn's log_loss refuses it, roc_auc (rows summing to 1) not.
    outside = good.copy()
    outside.loc[0, ["a", "b", "c"]] = [1.2, -0.1, -0.1]
    with pytest.raises(ValueError, match="greater than 1"):
        metrics.log_loss(outside["y"], outside[list("abc")], labels=[0, 1, 2])
    found = summary_of(outside)
    assert found.outside == 1
    assert set(found.metrics()) == {"roc_auc"}
    # Rows not summing to 1: sklearn's multiclass roc_auc refuses them, log_loss only warns.
    loose = good.assign(c=good["c"] + 0.05)
    with pytest.raises(ValueError, match="sum up to 1"):
        metrics.roc_auc_score(loose["y"], loose[list("abc")], multi_class="ovr", labels=[0, 1, 2])
    found = summary_of(loose)
    assert found.unnormalised == 6
    assert set(found.metrics()) == {"log_loss"}
    with pytest.warns(UserWarning, match="do not sum to one"):
        expected = metrics.log_loss(loose["y"], loose[list("abc")], labels=[0, 1, 2])
    assert found.metrics()["log_loss"] == pytest.approx(expected, rel=1e-9)
    empty = summary_of(good, rows=0)
    assert empty.rows == 0
    assert np.isnan(empty.log_loss())
    assert empty.metrics() == {}


def test_the_arguments_are_checked(spark: T.Any) -> None:
    frame = spark.createDataFrame(pd.DataFrame({"y": [0, 1], "p": [0.2, 0.8]}))
    edges = {"p": np.array([0.0, 0.5, 1.0])}
    with pytest.raises(ValueError, match="2 classes"):
        score_summary(frame, "y", ["p"], [0, 1, 2], edges)
    with pytest.raises(ValueError, match="positive class 5"):
        score_summary(frame, "y", ["p"], [0, 1], edges, positive=5)
    with pytest.raises(ValueError, match="one per class"):
        score_summary(frame, "y", ["p", "p"], [0, 1, 2], edges)
    with pytest.raises(ValueError, match="ascending"):
        score_summary(frame, "y", ["p"], [0, 1], {"p": np.array([0.5, 0.2])})
