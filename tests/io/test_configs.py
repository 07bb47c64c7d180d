from __future__ import annotations

from pathlib import Path

import pytest

from bikes.core.errors import ConfigError
from bikes.io.configs import load_config, merge_configs


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_files_merge_left_to_right_then_overrides(tmp_path: Path) -> None:
    base = _write(tmp_path / "a.yaml", "job:\n  KIND: TrainingJob\n  run_name: a\n  alias: x\n")
    extra = _write(tmp_path / "b.yaml", "job:\n  run_name: b\n")
    merged = merge_configs([base, extra], ["job.alias=challenger", "job.model.max_iter=5"])
    assert merged == {
        "job": {
            "KIND": "TrainingJob",
            "run_name": "b",
            "alias": "challenger",
            "model": {"max_iter": 5},
        }
    }


def test_interpolations_are_resolved(tmp_path: Path) -> None:
    config = _write(tmp_path / "a.yaml", "name: bikes\njob:\n  registered_model_name: ${name}\n")
    assert merge_configs([config])["job"]["registered_model_name"] == "bikes"


def test_missing_file_names_itself(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope.yaml: config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_malformed_yaml_names_the_file(tmp_path: Path) -> None:
    bad = _write(tmp_path / "bad.yaml", "job:\n  KIND: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: not valid YAML"):
        load_config(bad)


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    listing = _write(tmp_path / "list.yaml", "- a\n- b\n")
    with pytest.raises(ConfigError, match=r"list.yaml: the top level must be a mapping"):
        load_config(listing)


@pytest.mark.parametrize("item", ["job.run_name", "=value", ""])
def test_malformed_override_is_explained(tmp_path: Path, item: str) -> None:
    config = _write(tmp_path / "a.yaml", "job: {}\n")
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        merge_configs([config], [item])


def test_unresolvable_interpolation_is_a_config_error(tmp_path: Path) -> None:
    config = _write(tmp_path / "a.yaml", "job:\n  run_name: ${missing.key}\n")
    with pytest.raises(ConfigError, match="missing"):
        merge_configs([config])
