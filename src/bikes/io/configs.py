"""Read YAML configs and merge them, left to right, with command-line overrides."""

from __future__ import annotations

import typing as T
from pathlib import Path

import omegaconf as oc
import yaml

from bikes.core.errors import ConfigError


def load_config(path: str | Path) -> oc.DictConfig:
    """One YAML file as an OmegaConf mapping; a missing or malformed file names itself."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"{file}: config file not found")
    try:
        config = oc.OmegaConf.load(file)
    except (yaml.YAMLError, oc.errors.OmegaConfBaseException) as error:
        raise ConfigError(f"{file}: not valid YAML: {error}") from None
    if not isinstance(config, oc.DictConfig):
        raise ConfigError(f"{file}: the top level must be a mapping (e.g. 'job: ...')")
    return config


def parse_overrides(overrides: T.Sequence[str]) -> oc.DictConfig:
    """``KEY=VALUE`` items in OmegaConf dot-list syntax, e.g. ``job.run_name=nightly``."""
    for item in overrides:
        key, sep, _ = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r}: expected KEY=VALUE, e.g. job.run_name=nightly")
    try:
        return oc.OmegaConf.from_dotlist(list(overrides))
    except oc.errors.OmegaConfBaseException as error:
        raise ConfigError(f"override: {error}") from None


def merge_configs(
    paths: T.Sequence[str | Path], overrides: T.Sequence[str] = ()
) -> dict[str, T.Any]:
    """Merge files then overrides into one plain, fully resolved dictionary."""
    configs = [load_config(path) for path in paths]
    try:
        merged = oc.OmegaConf.merge(*configs, parse_overrides(overrides))
        container = oc.OmegaConf.to_container(merged, resolve=True)
    except oc.errors.OmegaConfBaseException as error:
        raise ConfigError(f"config: {error}") from None
    return T.cast(dict[str, T.Any], container)
