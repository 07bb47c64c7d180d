"""The traffic simulator against a real server: every row sent, labels late, drift on purpose."""

from __future__ import annotations

import datetime as dt
import typing as T
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bikes.core.errors import ConfigError, InputError
from bikes.io.capture import CaptureWriter
from bikes.io.store import Store
from bikes.jobs.traffic import Perturbation, TrafficJob
from bikes.serving.app import create_app
from bikes.serving.models import ModelSlot
from tests.conftest import BIKES_CONTRACT, started
from tests.serving.test_app import serving
from tests.serving.test_classifier import CHURN_CONTRACT, churn_table, register_churn


def _capturing(
    services: dict[str, T.Any], uri: str, tmp_path: Path, contract: T.Any = None
) -> tuple[T.Any, Store, CaptureWriter]:
    store = Store(f"sqlite:///{tmp_path / 'p.db'}")
    store.create()
    writer = CaptureWriter(store, spool_path=tmp_path / "spool.jsonl", flush_interval=0.05)
    with started(services["mlflow_service"]) as service:
        slot = ModelSlot(service.client(), uri, poll_interval=0, contract=contract)
    return create_app(slot, store, writer), store, writer


def test_replay_sends_every_row_in_order_and_labels_a_share(
    champion: dict[str, T.Any], services: dict[str, T.Any], splits_dir: Path, tmp_path: Path
) -> None:
    """No contract in the job: the champion's own (from its tags) says the columns."""
    app, store, _ = _capturing(services, "models:/bikes@champion", tmp_path)
    with serving(app) as client:
        job = TrafficJob.model_validate(
            {
                "inputs": {"path": str(splits_dir / "production.parquet"), "limit": 480},
                "url": str(client.base_url),
                "batch_size": 24,
                "concurrency": 3,
                "label_share": 0.5,
                "perturbations": [
                    {
                        "column": "temp",
                        "kind": "shift",
                        "value": -0.1,
                        "start": "2012-07-11T00:00:00",
                    }
                ],
                **services,
            }
        )
        with job:
            counts = job.run()
    stored = store.read(model_name="bikes")
    sent = pd.read_parquet(splits_dir / "production.parquet").head(480)
    assert counts["rows_sent"] == counts["rows_accepted"] == len(stored) == 480
    assert counts["labels_unknown"] == 0
    assert counts["labels_sent"] == stored["target"].notna().sum()
    assert 0.4 < counts["labels_sent"] / 480 < 0.6
    assert (stored["event_time"].to_numpy() == sent["timestamp"].to_numpy()).all()
    labelled = stored.dropna(subset=["target"])
    truth = sent.set_index("timestamp").loc[labelled["event_time"], "cnt"]
    assert (labelled["target"].to_numpy() == truth.to_numpy()).all()
    late = stored["event_time"] >= pd.Timestamp("2012-07-11")
    assert stored.loc[late, "temp"].to_numpy() == pytest.approx(
        sent.loc[late.to_numpy(), "temp"].to_numpy() - 0.1
    )
    assert stored.loc[~late, "temp"].to_numpy() == pytest.approx(
        sent.loc[~late.to_numpy(), "temp"].to_numpy()
    )


def test_perturbations_scale_swap_and_blank(splits_dir: Path) -> None:
    frame = pd.read_parquet(splits_dir / "test.parquet").head(200)
    rng = np.random.default_rng(0)
    scaled = Perturbation(column="hum", kind="scale", value=0.5).apply(frame, rng)
    assert scaled["hum"].to_numpy() == pytest.approx(frame["hum"].to_numpy() * 0.5)
    swapped = Perturbation(column="weathersit", kind="swap", mapping={1: 3}).apply(frame, rng)
    assert not (swapped["weathersit"] == 1).any()
    assert (
        (frame["weathersit"] == 1) == (swapped["weathersit"] == 3) & (frame["weathersit"] != 3)
    ).all()
    start = dt.datetime(2012, 4, 5)
    blanked = Perturbation(column="windspeed", kind="missing", value=1.0, start=start).apply(
        frame, rng
    )
    after = (frame["timestamp"] >= pd.Timestamp(start)).to_numpy()
    assert blanked.loc[after, "windspeed"].isna().all()
    assert blanked.loc[~after, "windspeed"].notna().all()
    with pytest.raises(ConfigError, match="column 'wind' is not in the data"):
        Perturbation(column="wind", kind="scale").apply(frame, rng)


def test_perturbations_of_text_categories() -> None:
    frame = churn_table(100, seed=5)
    rng = np.random.default_rng(0)
    start = frame["observed_at"].iloc[50]
    swapped = Perturbation.model_validate(
        {"column": "plan", "kind": "swap", "mapping": {"basic": "gold"}, "start": start}
    ).apply(frame, rng, "observed_at")
    assert (swapped["plan"].iloc[50:] != "basic").all()
    assert list(swapped["plan"].iloc[:50]) == list(frame["plan"].iloc[:50])
    gold = swapped["plan"].iloc[50:] == "gold"
    assert gold.sum() == (frame["plan"].iloc[50:] == "basic").sum() > 0
    blanked = Perturbation(column="plan", kind="missing", value=1.0).apply(frame, rng)
    assert blanked["plan"].isna().all()
    with pytest.raises(ConfigError, match="shift needs a numeric column; 'plan'"):
        Perturbation(column="plan", kind="shift", value=1).apply(frame, rng)


def test_rejected_rows_are_counted_and_recorded(
    champion: dict[str, T.Any], services: dict[str, T.Any], splits_dir: Path, tmp_path: Path
) -> None:
    app, store, _ = _capturing(services, "models:/bikes@champion", tmp_path)
    with serving(app) as client:
        job = TrafficJob.model_validate(
            {
                "inputs": {"path": str(splits_dir / "production.parquet"), "limit": 96},
                "contract": str(BIKES_CONTRACT),
                "url": str(client.base_url),
                "label_share": 0.0,
                "perturbations": [
                    {
                        "column": "hum",
                        "kind": "missing",
                        "value": 1.0,
                        "start": "2012-07-03T00:00:00",
                    }
                ],
            }
        )
        with job:
            counts = job.run()
    assert counts == {
        "rows_sent": 96,
        "rows_accepted": 48,
        "rows_rejected": 48,
        "labels_sent": 0,
        "labels_unknown": 0,
    }
    sent = pd.read_parquet(splits_dir / "production.parquet").head(96)
    rejected = store.read_rejected(model_name="bikes")
    assert len(rejected) == 48  # each refused row, seen rather than hidden
    assert set(rejected["field"]) == {"hum"}
    assert (rejected["event_time"].to_numpy() == sent["timestamp"].iloc[48:].to_numpy()).all()
    assert rejected["hum"].isna().all()
    assert rejected["temp"].to_numpy() == pytest.approx(sent["temp"].iloc[48:].to_numpy())
    assert store.count() == 48


def test_a_classifier_replayed_with_text_categories_and_class_labels(
    services: dict[str, T.Any], tmp_path: Path
) -> None:
    register_churn(services, name="churn_traffic")
    table = churn_table(120, seed=6)
    table.to_parquet(tmp_path / "churn.parquet")
    start = table["observed_at"].iloc[60]
    app, store, _ = _capturing(services, "models:/churn_traffic@champion", tmp_path, CHURN_CONTRACT)
    with serving(app) as client:
        job = TrafficJob.model_validate(
            {
                "inputs": {"path": str(tmp_path / "churn.parquet")},
                "contract": CHURN_CONTRACT.model_dump(mode="json"),
                "url": str(client.base_url),
                "batch_size": 10,
                "label_share": 1.0,
                "label_delay_hours": 2,
                "perturbations": [
                    {"column": "plan", "kind": "swap", "mapping": {"basic": "team"}, "start": start}
                ],
            }
        )
        with job:
            counts = job.run()
    assert counts["rows_sent"] == counts["rows_accepted"] == counts["labels_sent"] == 120
    stored = store.read(model_name="churn_traffic")
    assert list(stored["target"]) == list(table["churned"])  # classes, as labels
    assert set(stored["prediction"]) <= {"leave", "stay"}
    late = (stored["event_time"] >= start).to_numpy()
    assert not (stored.loc[late, "plan"] == "basic").any()
    assert list(stored.loc[~late, "plan"]) == list(table["plan"].iloc[:60])


def test_missing_columns_and_contracts_are_named(
    services: dict[str, T.Any], splits_dir: Path, tmp_path: Path
) -> None:
    path = str(splits_dir / "test.parquet")
    no_time = TrafficJob.model_validate(
        {"inputs": {"path": path}, "contract": {"target": "cnt", "features": [{"name": "hr"}]}}
    )
    with no_time, pytest.raises(ConfigError, match="job.contract.timestamp"):
        no_time.run()
    wrong = TrafficJob.model_validate(
        {"inputs": {"path": path}, "contract": CHURN_CONTRACT.model_dump(mode="json")}
    )
    with wrong, pytest.raises(InputError, match=r"no column\(s\) observed_at, x0"):
        wrong.run()
    no_target = TrafficJob.model_validate(
        {"inputs": {"path": path}, "contract": {"timestamp": "timestamp"}}
    )
    with no_target, pytest.raises(ConfigError, match="job.contract.target: sending labels"):
        no_target.run()
    register_churn(services, name="untagged")  # logged by MLflow alone: no contract tag
    untagged = TrafficJob.model_validate(
        {"inputs": {"path": path}, "registered_model": "untagged", **services}
    )
    with (
        untagged,
        pytest.raises(ConfigError, match="job.contract: not given, and models:/untagged@champion"),
    ):
        untagged.run()


def test_unreachable_service_is_an_input_error(splits_dir: Path) -> None:
    job = TrafficJob.model_validate(
        {
            "inputs": {"path": str(splits_dir / "test.parquet")},
            "contract": str(BIKES_CONTRACT),
            "url": "http://127.0.0.1:9",
        }
    )
    with (
        job,
        pytest.raises(InputError, match=r"http://127.0.0.1:9: prediction service unreachable"),
    ):
        job.run()
