"""Cost of the gate: the evaluations job against a bare pyfunc + sklearn script, same data.

Two runs: the bike regression (``confs/evaluations.yaml``), and a classification (the
Gibraltar weather example, three classes, scored on classes and on probabilities). Each job
(candidate + baseline on the test split) runs as a whole process; the bare script loads both
models with ``mlflow.pyfunc``, predicts (and, for the classifier, asks the sklearn model for
its probabilities) and computes the same sklearn metrics, in a fresh process too. The paired
bootstrap is timed on its own, in process.

    uv run python benchmarks/evaluations.py --repeat 3
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from _workspace import bikes, clean_environment, prepare, timed
from bikes.core.comparison import Bootstrap, paired_difference_interval
from bikes.core.metrics import Labels, SklearnMetric
from training import report

BARE_SCRIPT = """
import sys
import mlflow, pandas as pd
from sklearn import metrics
from bikes.io.contracts import load_contract
contract = load_contract("confs/bikes-contract.yaml")
mlflow.set_tracking_uri("sqlite:///mlflow.db")
frame = pd.read_parquet(sys.argv[1])
for uri in ("models:/bikes@challenger", "models:/bikes@champion"):
    predicted = mlflow.pyfunc.load_model(uri).predict(frame[contract.feature_names])
    truth = frame[contract.target]
    [f(truth, predicted) for f in (metrics.root_mean_squared_error, metrics.mean_absolute_error,
                                   metrics.r2_score)]
"""

BARE_CLASSIFIER_SCRIPT = """
import sys
import mlflow, pandas as pd
from sklearn import metrics
mlflow.set_tracking_uri("sqlite:///mlflow.db")
frame = pd.read_parquet(sys.argv[1])
truth = frame["sky"]
for uri in ("models:/weather@challenger", "models:/weather@champion"):
    model = mlflow.pyfunc.load_model(uri)
    features = frame[[spec.name for spec in model.metadata.get_input_schema().inputs]]
    predicted = model.predict(features)
    raw = model.get_raw_model()
    probabilities = raw.predict_proba(features)
    [f(truth, predicted) for f in (metrics.accuracy_score, metrics.balanced_accuracy_score)]
    metrics.f1_score(truth, predicted, average="macro")
    metrics.roc_auc_score(truth, probabilities, multi_class="ovr", labels=raw.classes_)
    metrics.log_loss(truth, probabilities, labels=raw.classes_)
"""

GATE = ["confs/evaluations.yaml", "-e", "job.promote_on_pass=false"]
# The classifier's gate: default metrics (accuracy, F1, balanced accuracy, ROC AUC, log loss),
# the version's own contract, bootstrap as configured below.
WEATHER_GATE = """job:
  KIND: EvaluationsJob
  registered_model: weather
  inputs: {path: data/gibraltar/test.parquet}
  thresholds:
    roc_auc_score: {threshold: 0.5}
    balanced_accuracy_score: {threshold: 0.3}
"""


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--repeat", type=int, default=3)
    args = cli.parse_args()
    env = clean_environment()
    with tempfile.TemporaryDirectory() as directory:
        work = Path(directory)
        test = prepare(work, env) / "test.parquet"
        bikes(["confs/training.yaml", "-e", "job.alias=champion"], work, env)
        bikes(
            ["confs/training.yaml", "-e", "job.alias=challenger", "-e", "job.model.max_iter=200"],
            work,
            env,
        )
        weather = prepare_classifier(work, env)
        gate = lambda *extra: bikes([*GATE, *extra], work, env, ok=(0, 3))  # noqa: E731
        weather_gate = lambda *extra: bikes(  # noqa: E731
            [str(work / "weather-gate.yaml"), *extra], work, env, ok=(0, 3)
        )
        cases = {
            "bare pyfunc + sklearn script": lambda: timed(
                [sys.executable, "-c", BARE_SCRIPT, str(test)], work, env
            ),
            "evaluations job, bootstrap off": lambda: gate("-e", "job.bootstrap.enabled=false"),
            "evaluations job, default (bootstrap 300)": lambda: gate(),
        }
        classifier_cases = {
            "bare pyfunc + predict_proba + sklearn script": lambda: timed(
                [sys.executable, "-c", BARE_CLASSIFIER_SCRIPT, str(weather)], work, env
            ),
            "classifier gate, bootstrap off": lambda: weather_gate(
                "-e", "job.bootstrap.enabled=false"
            ),
            "classifier gate, default (bootstrap 300)": lambda: weather_gate(),
        }
        for title, runs, reference in (
            ("regression: bikes", cases, "bare pyfunc + sklearn script"),
            (
                "classification: Gibraltar weather, 3 classes",
                classifier_cases,
                "bare pyfunc + predict_proba + sklearn script",
            ),
        ):
            times: dict[str, list[float]] = {name: [] for name in runs}
            for _ in range(args.repeat):
                for name, case in runs.items():
                    times[name].append(case())
            print(f"\n{title}")
            report(times, reference=reference)
        bootstrap_cost(pd.read_parquet(test)["cnt"].to_numpy(dtype=float))


def prepare_classifier(work: Path, env: dict[str, str]) -> Path:
    """The weather splits, a champion and a challenger, and the gate's config; the test split."""
    timed([sys.executable, "-m", "bikes.examples.gibraltar", "data/gibraltar"], work, env)
    training = "confs/examples/gibraltar-training.yaml"
    bikes([training, "-e", "job.alias=champion"], work, env)
    bikes([training, "-e", "job.alias=challenger", "-e", "job.model.max_iter=200"], work, env)
    (work / "weather-gate.yaml").write_text(WEATHER_GATE)
    return work / "data" / "gibraltar" / "test.parquet"


def bootstrap_cost(truth: np.ndarray) -> None:
    """The interval alone, per metric, on the test split's size: errors of a regression, and
    ROC AUC of a binary classifier's scores on as many rows."""
    rng = np.random.default_rng(0)
    candidate, baseline = (
        truth + rng.normal(0, 50, truth.size),
        truth + rng.normal(0, 52, truth.size),
    )
    classes = (truth > np.median(truth)).astype(int)
    scores = [np.clip(classes * 0.3 + rng.random(truth.size) * 0.7, 0, 1) for _ in range(2)]
    print(f"\npaired bootstrap on {truth.size} rows (in process)")
    for resamples in (300, 1000):
        for name in ("root_mean_squared_error", "r2_score", "roc_auc_score"):
            start = time.perf_counter()
            if name == "roc_auc_score":
                paired_difference_interval(
                    SklearnMetric(name=name),
                    classes,
                    *scores,
                    Bootstrap(resamples=resamples),
                    Labels.of([0, 1]),
                )
            else:
                paired_difference_interval(
                    SklearnMetric(name=name),
                    truth,
                    candidate,
                    baseline,
                    Bootstrap(resamples=resamples),
                )
            print(f"  {name:<25} {resamples:>5} resamples {time.perf_counter() - start:>7.2f} s")


if __name__ == "__main__":
    main()
