from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from bikes.core.errors import ConfigError
from bikes.io.contracts import load_contract
from bikes.jobs.data import DataJob
from tests.conftest import BIKES_CONTRACT, HOUR_CSV


def test_default_splits_follow_time(splits_dir: Path) -> None:
    frames = {
        name: pd.read_parquet(splits_dir / f"{name}.parquet")
        for name in ("train", "test", "production")
    }
    assert {name: len(frame) for name, frame in frames.items()} == {
        "train": 10821,
        "test": 2182,
        "production": 4376,
    }
    assert frames["train"]["timestamp"].max() < frames["test"]["timestamp"].min()
    assert frames["test"]["timestamp"].max() < frames["production"]["timestamp"].min()
    assert frames["production"]["timestamp"].max() == pd.Timestamp("2012-12-31 23:00")
    contract = load_contract(str(BIKES_CONTRACT))
    for frame in frames.values():
        assert list(frame.columns) == ["timestamp", *contract.feature_names, "cnt"]
        # casual + registered == cnt: columns that leak the target never leave the data job
        assert not {"casual", "registered", "instant"} & set(frame.columns)


def test_ranges_come_from_config(tmp_path: Path) -> None:
    job = DataJob.model_validate(
        {
            "source": str(HOUR_CSV),
            "contract": str(BIKES_CONTRACT),
            "output_dir": str(tmp_path),
            "splits": {"only": {"start": "2012-12-01", "end": "2012-12-31"}},
        }
    )
    with job:
        result = job.run()
    assert result["rows"] == {"only": 742}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["only.parquet"]


def test_range_without_data_is_a_config_error(tmp_path: Path) -> None:
    job = DataJob.model_validate(
        {
            "source": str(HOUR_CSV),
            "contract": str(BIKES_CONTRACT),
            "output_dir": str(tmp_path),
            "splits": {"future": {"start": "2030-01-01", "end": "2030-12-31"}},
        }
    )
    with job, pytest.raises(ConfigError, match="job.splits.future: no rows"):
        job.run()


def test_an_unwritable_output_dir_exits_2_before_the_csv_is_read(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    job = DataJob.model_validate(
        {
            "source": str(tmp_path / "no-such.csv"),  # checked after the outputs
            "contract": str(BIKES_CONTRACT),
            "output_dir": str(tmp_path / "a-file" / "splits"),
        }
    )
    with job, pytest.raises(ConfigError, match=r"^job\.output_dir: cannot write .*a-file is a"):
        job.run()
