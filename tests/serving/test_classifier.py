"""A classifier bikes did not train, served end to end: string feature, classes, scores,
class labels, rejected rows, and a store shared with the bike model."""

from __future__ import annotations

import datetime as dt
import typing as T
from pathlib import Path

import httpx
import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.models import infer_signature
from sklearn.compose import ColumnTransformer
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

from bikes.core.contract import Contract, Feature
from bikes.core.errors import InputError
from bikes.io.capture import CaptureWriter
from bikes.io.store import Store
from bikes.jobs.serving import ServingJob
from bikes.serving.app import create_app
from bikes.serving.models import ModelSlot
from tests.conftest import started
from tests.io.test_store import _old_layout
from tests.serving.test_app import _records, serving

NUMBERS = ["x0", "x1", "x2", "x3"]
CHURN_CONTRACT = Contract(
    task="classification",
    target="churned",
    timestamp="observed_at",
    score="p_leave",
    positive_class="leave",
    features=[
        *(Feature(name=name, kind="numeric", min=-10, max=10) for name in NUMBERS),
        Feature(name="plan", kind="categorical", values=["basic", "pro", "team"]),
        Feature(name="tenure", kind="numeric", min=0, max=60),
    ],
    segments=["plan"],
)


def churn_table(rows: int, seed: int) -> pd.DataFrame:
    """make_classification plus a string column and an integer one; classes are text."""
    x, y = make_classification(
        n_samples=rows, n_features=4, n_informative=3, n_redundant=0, random_state=seed
    )
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(x, columns=NUMBERS).clip(-10, 10)
    frame["plan"] = np.where(
        rng.random(rows) < 0.7, np.where(y == 1, "pro", "basic"), "team"
    ).astype(object)
    frame["tenure"] = rng.integers(0, 61, rows)
    frame["observed_at"] = pd.date_range("2024-01-01", periods=rows, freq="h")
    frame["churned"] = np.where(y == 1, "leave", "stay").astype(object)
    return frame


def register_churn(services: dict[str, T.Any], name: str = "churn") -> dict[str, T.Any]:
    """A logistic regression on the table, logged by MLflow itself, registered as
    ``name``@champion (no bikes training involved)."""
    train = churn_table(600, seed=0)
    features = train.loc[:, CHURN_CONTRACT.feature_names]
    pipeline = Pipeline(
        [
            (
                "encode",
                ColumnTransformer(
                    [("plan", OneHotEncoder(handle_unknown="ignore"), ["plan"])],
                    remainder="passthrough",
                ),
            ),
            ("model", LogisticRegression(max_iter=1000)),
        ]
    ).fit(features, train["churned"])
    with started(services["mlflow_service"]) as service, mlflow.start_run():
        info = mlflow.sklearn.log_model(
            pipeline,
            name="model",
            signature=infer_signature(features, pipeline.predict(features)),
            registered_model_name=name,
        )
        version = str(info.registered_model_version)
        service.client().set_registered_model_alias(name, "champion", version)
    return {"pipeline": pipeline, "version": version}


@pytest.fixture(scope="module")
def churn_model(services: dict[str, T.Any]) -> dict[str, T.Any]:
    return register_churn(services)


class Shared(T.NamedTuple):
    churn: httpx.Client
    bikes: httpx.Client
    store: Store
    writers: tuple[CaptureWriter, CaptureWriter]

    def flush(self) -> None:
        assert all(writer.flush() for writer in self.writers)


@pytest.fixture(scope="module")
def shared(
    churn_model: dict[str, T.Any],
    champion: dict[str, T.Any],
    services: dict[str, T.Any],
    tmp_path_factory: pytest.TempPathFactory,
) -> T.Iterator[Shared]:
    """The churn classifier and the bike model, two real servers capturing into one store."""
    directory = tmp_path_factory.mktemp("shared")
    store = Store(f"sqlite:///{directory / 'predictions.db'}")
    store.create()
    writers = tuple(
        CaptureWriter(store, spool_path=directory / f"{name}.jsonl", flush_interval=0.05)
        for name in ("churn", "bikes")
    )
    with started(services["mlflow_service"]) as service:
        churn = ModelSlot(service.client(), "models:/churn@champion", 0, CHURN_CONTRACT)
        bikes = ModelSlot(service.client(), "models:/bikes@champion", 0)
    with (
        serving(create_app(churn, store, writers[0])) as churn_client,
        serving(create_app(bikes, store, writers[1])) as bikes_client,
    ):
        yield Shared(churn_client, bikes_client, store, T.cast(T.Any, writers))


def churn_records(frame: pd.DataFrame) -> list[dict[str, T.Any]]:
    rows = frame.loc[:, ["observed_at", *CHURN_CONTRACT.feature_names]].copy()
    rows["observed_at"] = rows["observed_at"].dt.strftime("%Y-%m-%dT%H:%M:%S")
    return T.cast(list[dict[str, T.Any]], rows.to_dict(orient="records"))


def test_a_classifier_answers_classes_and_probabilities_and_captures_them(
    shared: Shared, churn_model: dict[str, T.Any]
) -> None:
    frame = churn_table(40, seed=1)
    response = shared.churn.post("/invocations", json={"dataframe_records": churn_records(frame)})
    assert response.status_code == 200, response.text
    body = response.json()
    pipeline = churn_model["pipeline"]
    features = frame.loc[:, CHURN_CONTRACT.feature_names]
    expected = pipeline.predict(features)
    probabilities = pipeline.predict_proba(features)
    classes = list(pipeline.classes_)
    assert body["predictions"] == list(expected)
    assert set(body["predictions"]) == {"leave", "stay"}  # classes, not numbers
    assert [sorted(p) for p in body["probabilities"]] == [sorted(classes)] * 40
    leave = probabilities[:, classes.index("leave")]
    assert [p["leave"] for p in body["probabilities"]] == pytest.approx(leave)
    assert [p["stay"] for p in body["probabilities"]] == pytest.approx(1 - leave)
    assert (body["model_name"], body["model_version"]) == ("churn", churn_model["version"])

    shared.flush()
    stored = shared.store.read(model_name="churn").set_index("prediction_id")
    stored = stored.loc[body["prediction_ids"]]
    assert set(stored["model_name"]) == {"churn"}
    assert list(stored["prediction"]) == list(expected)
    assert stored["p_leave"].to_numpy() == pytest.approx(leave)  # the contract's score column
    assert list(stored["plan"]) == list(frame["plan"])  # the string feature
    assert list(stored["tenure"]) == list(frame["tenure"])
    assert (stored["event_time"].to_numpy() == frame["observed_at"].to_numpy()).all()
    assert "observed_at" not in stored.columns  # the event time is event_time

    labels = [
        {"prediction_id": i, "target": t}
        for i, t in zip(body["prediction_ids"][:10], frame["churned"][:10], strict=True)
    ]
    recorded = shared.churn.post("/labels", json={"labels": labels})
    assert recorded.json() == {"recorded": 10, "unknown_ids": []}
    labelled = shared.store.read(model_name="churn").set_index("prediction_id")["target"]
    assert list(labelled.loc[body["prediction_ids"][:10]]) == list(frame["churned"][:10])
    assert labelled.loc[body["prediction_ids"][10:]].isna().all()


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"x2": ...}, "x2", "Field required"),
        ({"tenure": 61}, "tenure", "Input should be less than or equal to 60"),
        ({"tenure": 6.5}, "tenure", "Input should be a valid integer"),
        ({"plan": "gold"}, "plan", "Input should be 'basic', 'pro' or 'team'"),
        ({"plan": 2}, "plan", "Input should be a valid string"),
    ],
)
def test_invalid_rows_are_refused_and_recorded_with_reason_and_field(
    shared: Shared, change: dict[str, T.Any], field: str, message: str
) -> None:
    rows = churn_records(churn_table(3, seed=2))
    for key, value in change.items():
        if value is ...:
            del rows[2][key]
        else:
            rows[2][key] = value
    before = shared.store.count()
    response = shared.churn.post("/invocations", json={"dataframe_records": rows})
    assert response.status_code == 422
    problem = response.json()["detail"][0]
    assert (problem["row"], problem["field"]) == (2, field)
    assert message in problem["message"]
    shared.flush()
    assert shared.store.count() == before  # rows 0 and 1 were valid: not predicted either
    rejected = shared.store.read_rejected(model_name="churn")
    latest = rejected[rejected["received_time"] == rejected["received_time"].max()]
    assert len(latest) == 1
    recorded = latest.iloc[0]
    assert (recorded["row"], recorded["field"], recorded["model_name"]) == (2, field, "churn")
    assert message in recorded["reason"]
    assert recorded["event_time"] == pd.Timestamp(rows[2]["observed_at"])
    if value is not ...:
        assert recorded[field] == value  # the value as received
    assert shared.store.read_rejected(model_name="bikes").empty


def test_two_models_in_one_store_are_read_back_apart(
    shared: Shared, test_frame: pd.DataFrame
) -> None:
    churn = shared.churn.post(
        "/invocations", json={"dataframe_records": churn_records(churn_table(5, seed=3))}
    )
    bikes = shared.bikes.post(
        "/invocations", json={"dataframe_records": _records(test_frame.head(4))}
    )
    assert churn.status_code == bikes.status_code == 200
    assert "probabilities" not in bikes.json()
    bike_labels = [{"prediction_id": i, "target": 42} for i in bikes.json()["prediction_ids"]]
    assert shared.bikes.post("/labels", json={"labels": bike_labels}).json()["recorded"] == 4
    wrong = shared.bikes.post(
        "/labels",
        json={"labels": [{"prediction_id": bike_labels[0]["prediction_id"], "target": "leave"}]},
    )
    assert wrong.status_code == 422  # the bike model is a regression
    shared.flush()
    churn_rows = shared.store.read(model_name="churn")
    bike_rows = shared.store.read(model_name="bikes")
    assert set(churn.json()["prediction_ids"]) <= set(churn_rows["prediction_id"])
    assert set(bike_rows["prediction_id"]) == set(bikes.json()["prediction_ids"])
    assert {"plan", "p_leave"} <= set(churn_rows.columns)
    assert not {"plan", "p_leave"} & set(bike_rows.columns)
    assert {"hr", "temp"} <= set(bike_rows.columns)
    assert not {"hr", "temp"} & set(churn_rows.columns)
    assert bike_rows["prediction"].dtype == np.float64
    assert list(bike_rows["target"]) == [42.0] * 4
    everything = shared.store.read()
    assert len(everything) == len(churn_rows) + len(bike_rows)
    coverage = shared.store.label_coverage(
        dt.datetime(2012, 1, 1), dt.datetime(2013, 1, 1), "366D", model_name="bikes"
    )
    assert list(coverage["labelled"]) == [4]


def test_the_serving_job_derives_its_model_and_refuses_an_older_store(
    churn_model: dict[str, T.Any], services: dict[str, T.Any], tmp_path: Path
) -> None:
    job = ServingJob.model_validate(
        {
            "registered_model": "churn",
            "contract": CHURN_CONTRACT.model_dump(mode="json"),
            "store_uri": f"sqlite:///{tmp_path / 'old.db'}",
            "spool_path": str(tmp_path / "spool.jsonl"),
            **services,
        }
    )
    assert job.served_uri == "models:/churn@champion"
    assert job.contract == CHURN_CONTRACT
    assert ServingJob().served_uri == "models:/bikes@champion"
    import sqlalchemy as sa

    _old_layout(sa.create_engine(f"sqlite:///{tmp_path / 'old.db'}"), None)
    with job, pytest.raises(InputError, match="created by an older bikes"):
        job.run()


def test_features_from_the_signature_when_the_contract_lists_none(
    churn_model: dict[str, T.Any], services: dict[str, T.Any], tmp_path: Path
) -> None:
    """No features and no score in the contract: the signature says what a row holds (plan
    any text, tenure an integer); probabilities are answered but no score is captured."""
    contract = Contract(task="classification", target="churned", timestamp="observed_at")
    store = Store(f"sqlite:///{tmp_path / 'p.db'}")
    store.create()
    writer = CaptureWriter(store, spool_path=tmp_path / "spool.jsonl", flush_interval=0.05)
    with started(services["mlflow_service"]) as service:
        slot = ModelSlot(service.client(), "models:/churn@champion", 0, contract)
    assert slot.current.contract.feature_names == CHURN_CONTRACT.feature_names
    rows = churn_records(churn_table(4, seed=4))
    rows[0]["plan"] = "gold"  # unseen, but no values are listed: the encoder ignores it
    with serving(create_app(slot, store, writer)) as client:
        answer = client.post("/invocations", json={"dataframe_records": rows})
        assert answer.status_code == 200, answer.text
        assert len(answer.json()["probabilities"]) == 4
        rows[1]["tenure"] = 6.5
        refused = client.post("/invocations", json={"dataframe_records": rows})
        assert refused.status_code == 422
        assert refused.json()["detail"][0]["field"] == "tenure"
    stored = store.read()
    assert list(stored.columns[stored.columns.get_loc("prediction") :]) == [
        "prediction",
        "target",
        "label_time",
    ]
    assert list(store.read_rejected()["field"]) == ["tenure"]


def test_the_shipped_classification_example_is_served_on_its_own_contract(
    classifier: dict[str, T.Any],
    services: dict[str, T.Any],
    gibraltar_splits: Path,
    tmp_path: Path,
) -> None:
    """The Gibraltar weather model, trained by bikes: no contract in the job, so the one it
    was trained with (text label, a string feature, per-class score columns) drives it all."""
    store = Store(f"sqlite:///{tmp_path / 'p.db'}")
    store.create()
    writer = CaptureWriter(store, spool_path=tmp_path / "spool.jsonl", flush_interval=0.05)
    with started(services["mlflow_service"]) as service:
        slot = ModelSlot(service.client(), "models:/weather@champion", 0)
    contract = slot.current.contract
    frame = pd.read_parquet(gibraltar_splits / "test.parquet").head(30)
    rows = frame.loc[:, ["observed_at", *contract.feature_names]].copy()
    rows["observed_at"] = rows["observed_at"].map(lambda moment: moment.isoformat())
    records = rows.to_dict(orient="records")
    with serving(create_app(slot, store, writer)) as client:
        answer = client.post("/invocations", json={"dataframe_records": records})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert set(body["predictions"]) <= {"fair", "cloudy", "wet"}
        assert all(sum(p.values()) == pytest.approx(1) for p in body["probabilities"])
        labels = [
            {"prediction_id": i, "target": t}
            for i, t in zip(body["prediction_ids"], frame["sky"], strict=True)
        ]
        assert client.post("/labels", json={"labels": labels}).json()["recorded"] == 30
    stored = store.read(model_name="weather")
    assert list(stored["prediction"]) == body["predictions"]
    for name, column in {"fair": "p_fair", "cloudy": "p_cloudy", "wet": "p_wet"}.items():
        assert stored[column].to_numpy() == pytest.approx([p[name] for p in body["probabilities"]])
    assert list(stored["target"]) == list(frame["sky"])
    assert stored["wind_dir"].map(type).eq(str).all()
