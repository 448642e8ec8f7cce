"""Configs as YAML files: a run's `config.yaml`, written once and read by evaluate and infer."""

from __future__ import annotations

from pathlib import Path

import yaml

from flexseg.errors import ConfigError


def save_config(cfg: dict, path: str | Path) -> None:
    """Writes a plain config dict as YAML, keys in schema order."""
    Path(path).write_text(yaml.safe_dump(cfg, sort_keys=False, default_flow_style=False))


def read_config(path: str | Path) -> dict:
    """Reads a YAML file written by `save_config` (or Hydra) back into plain containers."""
    try:
        return yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"cannot read config {path}: {error}") from error
