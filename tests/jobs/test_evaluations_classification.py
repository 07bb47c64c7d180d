"""The gate on classifiers, against a real MLflow registry: models of our own data
(make_classification plus a string column), registered under names of their own."""

from __future__ import annotations

import typing as T
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.models.evaluation.validation import ModelValidationFailedException
from sklearn import metrics
from sklearn.compose import ColumnTransformer
from sklearn.datasets import make_classification
from sklearn.dummy import DummyClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder

from bikes import scripts
from bikes.core.errors import ConfigError, ContractError, InputError, SchemaError
from bikes.core.reference import HELD_OUT_TAG, HeldOutPerformance
from bikes.jobs.evaluations import VALIDATION_RUN_TAG, VALIDATION_STATUS_TAG, EvaluationsJob
from tests.conftest import started

NUMBERS = ["x0", "x1", "x2", "x3"]
FEATURES = [*NUMBERS, "region"]
REGIONS = np.array(["north", "south", "east"])
CONTRACT = {"task": "classification", "target": "label", "segments": ["region"]}
TRAIN_ROWS, TEST_ROWS = 600, 300


def _table(classes: T.Sequence[T.Any], seed: int) -> pd.DataFrame:
    """Four numbers and a string column that follows the class three times in five."""
    features, y = make_classification(
        n_samples=TRAIN_ROWS + TEST_ROWS,
        n_features=4,
        n_informative=3,
        n_redundant=0,
        n_classes=len(classes),
        n_clusters_per_class=1,
        random_state=seed,
    )
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(features, columns=NUMBERS)
    follows = rng.random(len(frame)) < 0.6
    frame["region"] = np.where(follows, REGIONS[y % 3], REGIONS[rng.integers(0, 3, len(frame))])
    frame["label"] = pd.Series(np.asarray(classes, dtype=object)[y]).astype(
        type(classes[0]) if not isinstance(classes[0], str) else object
    )
    return frame


def _logistic(train: pd.DataFrame, c: float = 1.0) -> T.Any:
    encode = ColumnTransformer(
        [
            ("numbers", "passthrough", NUMBERS),
            ("region", OneHotEncoder(handle_unknown="ignore"), ["region"]),
        ]
    )
    model = make_pipeline(encode, LogisticRegression(C=c, max_iter=500))
    return model.fit(train[FEATURES], train["label"])


def _register(model: T.Any, features: pd.DataFrame, name: str, services: dict[str, T.Any]) -> str:
    with started(services["mlflow_service"]), mlflow.start_run(run_name=f"register-{name}"):
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            registered_model_name=name,
            signature=mlflow.models.infer_signature(features, model.predict(features)),
            serialization_format="cloudpickle",
        )
    return str(info.registered_model_version)


class ClassesOnly(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
    """A classifier behind a pyfunc that answers classes only: no probabilities to score."""

    def __init__(self, model: T.Any) -> None:
        self.model = model

    def predict(self, context: T.Any, model_input: pd.DataFrame) -> np.ndarray:
        return np.asarray(self.model.predict(model_input))


def _gate(name: str, data: Path, services: dict[str, T.Any], **overrides: T.Any) -> EvaluationsJob:
    config = {
        "inputs": {"path": str(data)},
        "contract": CONTRACT,
        "registered_model": name,
        "bootstrap": {"resamples": 50},
        **services,
        **overrides,
    }
    return EvaluationsJob.model_validate(config)


class Case(T.NamedTuple):
    name: str
    directory: Path
    test: pd.DataFrame
    model: T.Any
    first: dict[str, T.Any]


def _first_deploy(
    name: str,
    classes: T.Sequence[T.Any],
    directory: Path,
    services: dict[str, T.Any],
    **overrides: T.Any,
) -> Case:
    """Version 1 of ``name``: a logistic regression, through the gate as a first deploy."""
    frame = _table(classes, seed=len(name))
    train, test = frame.iloc[:TRAIN_ROWS], frame.iloc[TRAIN_ROWS:].reset_index(drop=True)
    test.to_parquet(directory / "test.parquet")
    model = _logistic(train)
    version = _register(model, train[FEATURES], name, services)
    assert version == "1"
    with _gate(
        name, directory / "test.parquet", services, promote_on_pass=True, **overrides
    ) as job:
        first = job.run()
    return Case(name, directory, test, model, first)


@pytest.fixture(scope="module")
def binary(tmp_path_factory: pytest.TempPathFactory, services: dict[str, T.Any]) -> Case:
    return _first_deploy("churn01", [0, 1], tmp_path_factory.mktemp("binary"), services)


@pytest.fixture(scope="module")
def constant(binary: Case, services: dict[str, T.Any]) -> str:
    """A version that answers the majority class for every row."""
    train = _table([0, 1], seed=len(binary.name)).iloc[:TRAIN_ROWS]
    dummy = DummyClassifier(strategy="most_frequent").fit(train[FEATURES], train["label"])
    return _register(dummy, train[FEATURES], binary.name, services)


def _rows(result: dict[str, T.Any]) -> dict[str, dict[str, T.Any]]:
    return {row["metric"]: row for row in result["verdicts"]}


def test_a_good_classifier_passes_its_first_deploy_on_the_default_thresholds(
    binary: Case, services: dict[str, T.Any]
) -> None:
    result = binary.first
    assert result["task"] == "classification"
    assert result["baseline_version"] is None
    rows = _rows(result)
    assert rows["predicted_classes"]["verdict"] == "passed"
    assert rows["predicted_classes"]["candidate"] == 2
    assert rows["balanced_accuracy_score"]["threshold"] == ">= 0.6"
    assert rows["roc_auc_score"]["threshold"] == ">= 0.6"
    assert {row["verdict"] for row in rows.values()} == {"passed"}
    assert set(result["slices"]["segment"]) == {"region"}  # the contract's segments
    with started(services["mlflow_service"]):
        client = services["mlflow_service"].client()
        version = client.get_model_version(binary.name, "1")
        assert version.tags[VALIDATION_STATUS_TAG] == "passed"
        assert version.tags[VALIDATION_RUN_TAG] == result["run_id"]
        assert str(client.get_model_version_by_alias(binary.name, "champion").version) == "1"
        assert client.get_run(result["run_id"]).data.tags["task"] == "classification"


def test_metrics_equal_sklearn_on_the_models_own_predict_proba(binary: Case) -> None:
    truth, features = binary.test["label"], binary.test[FEATURES]
    predicted, positive = binary.model.predict(features), binary.model.predict_proba(features)
    figures = binary.first["metrics"]["candidate"]
    assert figures["roc_auc_score"] == pytest.approx(metrics.roc_auc_score(truth, positive[:, 1]))
    assert figures["log_loss"] == pytest.approx(metrics.log_loss(truth, positive))
    assert figures["f1_score"] == pytest.approx(metrics.f1_score(truth, predicted))
    assert figures["accuracy_score"] == pytest.approx(metrics.accuracy_score(truth, predicted))
    assert figures["balanced_accuracy_score"] == pytest.approx(
        metrics.balanced_accuracy_score(truth, predicted)
    )
    # MLflow's own classifier metrics, on the same predictions.
    assert figures["precision_score"] == pytest.approx(metrics.precision_score(truth, predicted))
    assert figures["true_positives"] == int(((truth == 1) & (predicted == 1)).sum())
    # Per segment: the contract's segments, scored with balanced accuracy.
    north = binary.test["region"] == "north"
    slices = binary.first["slices"].set_index("value")
    assert slices.loc["north", "candidate"] == pytest.approx(
        metrics.balanced_accuracy_score(truth[north], predicted[north])
    )


def test_the_gate_records_the_classifiers_held_out_performance(
    binary: Case, text_binary: Case, services: dict[str, T.Any]
) -> None:
    """The monitoring job's names, equal to sklearn on the version's own answers: F1,
    precision and recall of the positive class (the contract's, "churn", which sorts first),
    ROC AUC and log loss from its probabilities."""
    for case, positive in ((binary, 1), (text_binary, "churn")):
        with started(services["mlflow_service"]):
            tag = services["mlflow_service"].client().get_model_version(case.name, "1").tags
        record = HeldOutPerformance.from_tag(tag[HELD_OUT_TAG])
        truth, features = case.test["label"], case.test[FEATURES]
        predicted = case.model.predict(features)
        probabilities = case.model.predict_proba(features)
        column = list(case.model.classes_).index(positive)
        assert record.rows == TEST_ROWS
        assert (record.start, record.end) == (None, None)  # no timestamp in this contract
        assert record.metrics == pytest.approx(
            {
                "accuracy": metrics.accuracy_score(truth, predicted),
                "precision": metrics.precision_score(truth, predicted, pos_label=positive),
                "recall": metrics.recall_score(truth, predicted, pos_label=positive),
                "f1": metrics.f1_score(truth, predicted, pos_label=positive),
                "roc_auc": metrics.roc_auc_score(truth == positive, probabilities[:, column]),
                "log_loss": metrics.log_loss(truth, probabilities, labels=case.model.classes_),
            }
        )


def test_a_constant_classifier_is_blocked_even_when_its_thresholds_pass(
    binary: Case,
    constant: str,
    services: dict[str, T.Any],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Accuracy 0.3 lets the majority class through; the single-class check does not."""
    config = tmp_path / "gate.yaml"
    config.write_text(
        "job:\n  KIND: EvaluationsJob\n"
        f"  inputs: {{path: {binary.directory / 'test.parquet'}}}\n"
        "  contract: {task: classification, target: label}\n"
        f"  registered_model: {binary.name}\n"
        f"  candidate_uri: models:/{binary.name}/{constant}\n"
        "  promote_on_pass: true\n"
        "  thresholds:\n    accuracy_score: {threshold: 0.3}\n"
    )
    tracking = services["mlflow_service"].tracking_uri
    code = scripts.main([str(config), "-e", f"job.mlflow_service.tracking_uri={tracking}"])
    assert code == scripts.EXIT_GATE == 3
    err = capsys.readouterr().err
    majority = int(_table([0, 1], seed=len(binary.name)).iloc[:TRAIN_ROWS]["label"].mode()[0])
    assert (
        f"candidate models:/{binary.name}/{constant} blocked: predicted_classes: predicts a single "
        f"class ({majority}) for all {TEST_ROWS} rows, which hold 2 classes" in err
    )
    assert "accuracy_score:" not in err.split("blocked:")[1]
    with started(services["mlflow_service"]):
        client = services["mlflow_service"].client()
        assert client.get_model_version(binary.name, constant).tags[VALIDATION_STATUS_TAG] == (
            "failed"
        )
        assert str(client.get_model_version_by_alias(binary.name, "champion").version) == "1"


def test_the_default_thresholds_block_a_constant_classifier_too(
    binary: Case, constant: str, services: dict[str, T.Any]
) -> None:
    job = _gate(
        binary.name,
        binary.directory / "test.parquet",
        services,
        candidate_uri=f"models:/{binary.name}/{constant}",
    )
    with job, pytest.raises(ModelValidationFailedException) as caught:
        job.run()
    message = str(caught.value)
    assert "balanced_accuracy_score: below 0.6" in message
    assert "roc_auc_score: below 0.6" in message  # its probabilities are constant: AUC 0.5


def test_bootstrap_and_slices_compare_scores_and_classes_with_the_champion(
    binary: Case, services: dict[str, T.Any]
) -> None:
    train = _table([0, 1], seed=len(binary.name)).iloc[:TRAIN_ROWS]
    weaker = _logistic(train, c=0.001)
    version = _register(weaker, train[FEATURES], binary.name, services)
    job = _gate(
        binary.name,
        binary.directory / "test.parquet",
        services,
        candidate_uri=f"models:/{binary.name}/{version}",
        thresholds={"roc_auc_score": {"threshold": 0.5}, "f1_score": {"threshold": 0.5}},
        bootstrap={"resamples": 100},
    )
    with job:
        result = job.run()
    assert result["baseline_version"] == "1"
    truth, features = binary.test["label"], binary.test[FEATURES]
    rows = _rows(result)
    auc = metrics.roc_auc_score(truth, weaker.predict_proba(features)[:, 1])
    champion_auc = metrics.roc_auc_score(truth, binary.model.predict_proba(features)[:, 1])
    assert rows["roc_auc_score"]["change"] == pytest.approx(auc - champion_auc)
    assert rows["roc_auc_score"]["interval_low"] <= auc - champion_auc
    assert auc - champion_auc <= rows["roc_auc_score"]["interval_high"]
    f1 = metrics.f1_score(truth, weaker.predict(features))
    assert rows["f1_score"]["candidate"] == pytest.approx(f1)
    assert rows["f1_score"]["interval_low"] is not None
    slices = result["slices"].set_index("value")
    south = (binary.test["region"] == "south").to_numpy()
    assert slices.loc["south", "baseline"] == pytest.approx(
        metrics.balanced_accuracy_score(truth[south], binary.model.predict(features)[south])
    )


@pytest.fixture(scope="module")
def multiclass(tmp_path_factory: pytest.TempPathFactory, services: dict[str, T.Any]) -> Case:
    return _first_deploy(
        "sky3", ["cloudy", "fair", "wet"], tmp_path_factory.mktemp("multiclass"), services
    )


def test_multiclass_text_labels_macro_f1_and_one_vs_rest_auc_equal_sklearn(
    multiclass: Case,
) -> None:
    truth, features = multiclass.test["label"], multiclass.test[FEATURES]
    predicted = multiclass.model.predict(features)
    probabilities = multiclass.model.predict_proba(features)
    classes = list(multiclass.model.classes_)
    figures = multiclass.first["metrics"]["candidate"]
    assert figures["f1_score"] == pytest.approx(metrics.f1_score(truth, predicted, average="macro"))
    assert figures["roc_auc_score"] == pytest.approx(
        metrics.roc_auc_score(truth, probabilities, multi_class="ovr", labels=classes)
    )
    assert figures["log_loss"] == pytest.approx(
        metrics.log_loss(truth, probabilities, labels=classes)
    )
    # MLflow's own precision, macro-averaged as ours are (its default is weighted).
    assert figures["precision_score"] == pytest.approx(
        metrics.precision_score(truth, predicted, average="macro")
    )
    rows = _rows(multiclass.first)
    assert rows["balanced_accuracy_score"]["threshold"] == ">= 0.4333"  # chance 1/3 + 0.1
    assert rows["predicted_classes"]["candidate"] == 3
    assert {row["verdict"] for row in rows.values()} == {"passed"}


@pytest.fixture(scope="module")
def text_binary(tmp_path_factory: pytest.TempPathFactory, services: dict[str, T.Any]) -> Case:
    return _first_deploy(
        "churn_text",
        ["churn", "stay"],
        tmp_path_factory.mktemp("text"),
        services,
        contract={**CONTRACT, "positive_class": "churn"},
    )


def test_binary_text_labels_score_the_contracts_positive_class(text_binary: Case) -> None:
    """``churn`` sorts first: the positive class comes from the contract, not the order."""
    truth, features = text_binary.test["label"], text_binary.test[FEATURES]
    predicted = text_binary.model.predict(features)
    churn = list(text_binary.model.classes_).index("churn")
    probability = text_binary.model.predict_proba(features)[:, churn]
    figures = text_binary.first["metrics"]["candidate"]
    assert figures["f1_score"] == pytest.approx(
        metrics.f1_score(truth, predicted, pos_label="churn")
    )
    assert figures["recall_score"] == pytest.approx(
        metrics.recall_score(truth, predicted, pos_label="churn")
    )
    assert figures["roc_auc_score"] == pytest.approx(
        metrics.roc_auc_score(truth == "churn", probability)
    )
    assert figures["log_loss"] == pytest.approx(metrics.log_loss(truth == "churn", probability))


def test_inputs_and_targets_in_separate_tables_give_the_same_metrics(
    binary: Case, constant: str, services: dict[str, T.Any], tmp_path: Path
) -> None:
    """No target in the contract: the targets table's only column is the target."""
    binary.test.drop(columns="label").to_parquet(tmp_path / "inputs.parquet")
    binary.test[["label"]].to_parquet(tmp_path / "targets.parquet")
    job = _gate(
        binary.name,
        tmp_path / "inputs.parquet",
        services,
        contract={"task": "classification"},
        targets={"path": str(tmp_path / "targets.parquet")},
        candidate_uri=f"models:/{binary.name}/1",
        baseline_uri=f"models:/{binary.name}/{constant}",  # itself would be skipped
        thresholds={"accuracy_score": {"threshold": 0.5}},
        bootstrap={"enabled": False},
    )
    with job:
        result = job.run()
    first = binary.first["metrics"]["candidate"]
    again = result["metrics"]["candidate"]
    for name in ("accuracy_score", "f1_score", "roc_auc_score", "log_loss"):
        assert again[name] == pytest.approx(first[name])


def test_targets_with_another_row_count_name_both_files(
    binary: Case, constant: str, services: dict[str, T.Any], tmp_path: Path
) -> None:
    binary.test.drop(columns="label").to_parquet(tmp_path / "inputs.parquet")
    binary.test[["label"]].head(100).to_parquet(tmp_path / "targets.parquet")
    job = _gate(
        binary.name,
        tmp_path / "inputs.parquet",
        services,
        candidate_uri=f"models:/{binary.name}/{constant}",  # not the champion: compared
        targets={"path": str(tmp_path / "targets.parquet")},
    )
    with (
        job,
        pytest.raises(
            InputError,
            match=rf"{tmp_path / 'inputs.parquet'} has 300 rows but "
            rf"{tmp_path / 'targets.parquet'} has 100: inputs and targets are joined row by row",
        ),
    ):
        job.run()


def test_a_contract_feature_missing_from_the_signature_is_named(
    binary: Case, constant: str, services: dict[str, T.Any]
) -> None:
    contract = {
        **CONTRACT,
        "features": [
            *({"name": name} for name in NUMBERS),
            {"name": "region", "kind": "categorical"},
            {"name": "humidity"},
        ],
    }
    job = _gate(
        binary.name,
        binary.directory / "test.parquet",
        services,
        contract=contract,
        candidate_uri=f"models:/{binary.name}/{constant}",
    )
    with (
        job,
        pytest.raises(
            ContractError,
            match=rf"job.contract.features: humidity not an input of models:/{binary.name}/",
        ),
    ):
        job.run()


def test_a_target_missing_from_the_data_is_named(
    binary: Case, constant: str, services: dict[str, T.Any], tmp_path: Path
) -> None:
    binary.test.drop(columns="label").to_parquet(tmp_path / "inputs.parquet")
    job = _gate(
        binary.name,
        tmp_path / "inputs.parquet",
        services,
        candidate_uri=f"models:/{binary.name}/{constant}",
    )
    with job, pytest.raises(SchemaError, match=r"missing column\(s\): label"):
        job.run()


def test_a_score_metric_of_a_model_without_scores_is_a_config_error(
    binary: Case, services: dict[str, T.Any]
) -> None:
    features = binary.test[FEATURES].head(20)
    with started(services["mlflow_service"]), mlflow.start_run(run_name="classes-only"):
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=ClassesOnly(binary.model),
            registered_model_name=binary.name,
            signature=mlflow.models.infer_signature(features, binary.model.predict(features)),
        )
    job = _gate(
        binary.name,
        binary.directory / "test.parquet",
        services,
        candidate_uri=f"models:/{binary.name}/{info.registered_model_version}",
        thresholds={"roc_auc_score": {"threshold": 0.6}},
    )
    with job, pytest.raises(ConfigError, match="roc_auc_score need.* class probabilities"):
        job.run()
    # Without score metrics the same model is judged on its classes.
    quiet = _gate(
        binary.name,
        binary.directory / "test.parquet",
        services,
        candidate_uri=f"models:/{binary.name}/{info.registered_model_version}",
        bootstrap={"enabled": False},
    )
    with quiet:
        result = quiet.run()
    assert "roc_auc_score" not in result["metrics"]["candidate"]
    assert _rows(result)["balanced_accuracy_score"]["verdict"] == "passed"


def test_the_gibraltar_classifier_on_its_own_contract(
    classifier: dict[str, T.Any], gibraltar_splits: Path, services: dict[str, T.Any]
) -> None:
    """A real dataset with a string feature and text labels: no job.contract, the version's
    own (target sky, segments wind_dir) is used. The candidate: the champion's estimator
    logged again under a name of its own, with its tags (the champion against itself would be
    skipped)."""
    version = classifier["model_version"]
    with started(services["mlflow_service"]), mlflow.start_run(run_name="weather-again"):
        client = services["mlflow_service"].client()
        estimator = mlflow.sklearn.load_model(f"models:/weather/{version}")
        info = mlflow.sklearn.log_model(
            estimator,
            name="model",
            registered_model_name="weather-again",
            signature=mlflow.models.get_model_info(f"models:/weather/{version}").signature,
            serialization_format="cloudpickle",
        )
        again = str(info.registered_model_version)
        for key, value in client.get_model_version("weather", version).tags.items():
            client.set_model_version_tag("weather-again", again, key, value)
    job = EvaluationsJob.model_validate(
        {
            "inputs": {"path": str(gibraltar_splits / "test.parquet")},
            "registered_model": "weather",
            "candidate_uri": f"models:/weather-again/{again}",
            "baseline_uri": f"models:/weather/{version}",
            # A small model on a test season unlike its training one: judged on ranking alone.
            "thresholds": {"roc_auc_score": {"threshold": 0.5}},
            "bootstrap": {"enabled": False},
            **services,
        }
    )
    with job:
        result = job.run()
    test = pd.read_parquet(gibraltar_splits / "test.parquet")
    with started(services["mlflow_service"]):
        model = mlflow.sklearn.load_model(f"models:/weather-again/{again}")
    features = test.loc[:, list(model.feature_names_in_)]
    figures = result["metrics"]["candidate"]
    assert figures["f1_score"] == pytest.approx(
        metrics.f1_score(test["sky"], model.predict(features), average="macro")
    )
    assert figures["roc_auc_score"] == pytest.approx(
        metrics.roc_auc_score(
            test["sky"], model.predict_proba(features), multi_class="ovr", labels=model.classes_
        )
    )
    assert set(result["slices"]["segment"]) == {"wind_dir"}


def test_explainability_hands_mlflow_the_classifier_and_its_auc_agrees_with_ours(
    binary: Case, constant: str, services: dict[str, T.Any]
) -> None:
    """With the model itself MLflow computes ROC AUC and log loss from its own probabilities:
    the same figures as ours, from the scores bikes passed (no sklearn metric of ours here
    takes MLflow's names, so these are MLflow's own)."""
    job = _gate(
        binary.name,
        binary.directory / "test.parquet",
        services,
        candidate_uri=f"models:/{binary.name}/1",
        baseline_uri=f"models:/{binary.name}/{constant}",
        metrics=[{"name": "accuracy_score"}],
        thresholds={"accuracy_score": {"threshold": 0.6}},
        explainability=True,
        bootstrap={"enabled": False},
    )
    with job:
        result = job.run()
    ours, mlflows = binary.first["metrics"]["candidate"], result["metrics"]["candidate"]
    assert mlflows["roc_auc"] == pytest.approx(ours["roc_auc_score"])
    assert mlflows["log_loss"] == pytest.approx(ours["log_loss"])
    assert "roc_auc" not in result["metrics"]["baseline"]  # predictions only: no probabilities


@pytest.mark.parametrize(
    ("contract", "columns", "message"),
    [
        (
            {"task": "classification"},
            ["label", "weight"],
            r"targets.parquet: 2 columns \(label, weight\): name the target with "
            r"job.contract.target",
        ),
        (
            CONTRACT,
            ["outcome"],
            r"targets.parquet: no target column 'label' \(its columns: outcome\)",
        ),
    ],
)
def test_a_targets_table_without_a_clear_target_is_named(
    binary: Case,
    constant: str,
    services: dict[str, T.Any],
    tmp_path: Path,
    contract: dict[str, T.Any],
    columns: list[str],
    message: str,
) -> None:
    binary.test.drop(columns="label").to_parquet(tmp_path / "inputs.parquet")
    targets = pd.DataFrame({name: binary.test["label"] for name in columns})
    targets.to_parquet(tmp_path / "targets.parquet")
    job = _gate(
        binary.name,
        tmp_path / "inputs.parquet",
        services,
        contract=contract,
        candidate_uri=f"models:/{binary.name}/{constant}",
        targets={"path": str(tmp_path / "targets.parquet")},
    )
    with job, pytest.raises(InputError, match=message):
        job.run()
