"""The traffic simulator against a real server: every row sent, labels late, drift on purpose."""

from __future__ import annotations

import datetime as dt
import typing as T
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bikes.core import schemas
from bikes.core.errors import ConfigError, InputError
from bikes.io.capture import CaptureWriter
from bikes.io.store import Store
from bikes.jobs.traffic import Perturbation, TrafficJob
from bikes.serving.app import create_app
from bikes.serving.models import ModelSlot
from tests.conftest import started
from tests.serving.test_app import serving


def test_replay_sends_every_row_in_order_and_labels_a_share(
    champion: dict[str, T.Any], services: dict[str, T.Any], splits_dir: Path, tmp_path: Path
) -> None:
    store = Store(f"sqlite:///{tmp_path / 'p.db'}")
    store.create()
    writer = CaptureWriter(store, spool_path=tmp_path / "spool.jsonl", flush_interval=0.05)
    with started(services["mlflow_service"]) as service:
        slot = ModelSlot(service.client(), "models:/bikes@champion", poll_interval=0)
    with serving(create_app(slot, store, writer)) as client:
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
            }
        )
        with job:
            counts = job.run()
    stored = store.read()
    sent = pd.read_parquet(splits_dir / "production.parquet").head(480)
    assert counts["rows_sent"] == counts["rows_accepted"] == len(stored) == 480
    assert counts["labels_unknown"] == 0
    assert counts["labels_sent"] == stored[schemas.TARGET].notna().sum()
    assert 0.4 < counts["labels_sent"] / 480 < 0.6
    assert (stored["event_time"].to_numpy() == sent[schemas.TIMESTAMP].to_numpy()).all()
    labelled = stored.dropna(subset=[schemas.TARGET])
    truth = sent.set_index(schemas.TIMESTAMP).loc[labelled["event_time"], schemas.TARGET]
    assert (labelled[schemas.TARGET].to_numpy() == truth.to_numpy()).all()
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
    after = (frame[schemas.TIMESTAMP] >= pd.Timestamp(start)).to_numpy()
    assert blanked.loc[after, "windspeed"].isna().all()
    assert blanked.loc[~after, "windspeed"].notna().all()
    with pytest.raises(ConfigError, match="column 'wind' is not in the data"):
        Perturbation(column="wind", kind="scale").apply(frame, rng)


def test_rejected_rows_are_counted_not_lost_silently(
    champion: dict[str, T.Any], services: dict[str, T.Any], splits_dir: Path, tmp_path: Path
) -> None:
    with started(services["mlflow_service"]) as service:
        slot = ModelSlot(service.client(), "models:/bikes@champion", poll_interval=0)
    with serving(create_app(slot, None, None)) as client:
        job = TrafficJob.model_validate(
            {
                "inputs": {"path": str(splits_dir / "production.parquet"), "limit": 96},
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


def test_unreachable_service_is_an_input_error(splits_dir: Path) -> None:
    job = TrafficJob.model_validate(
        {"inputs": {"path": str(splits_dir / "test.parquet")}, "url": "http://127.0.0.1:9"}
    )
    with (
        job,
        pytest.raises(InputError, match=r"http://127.0.0.1:9: prediction service unreachable"),
    ):
        job.run()
