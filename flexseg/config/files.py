"""Configs as YAML files: a run's `config.yaml`, written once and read by evaluate and infer."""

from __future__ import annotations

from pathlib import Path

import yaml

from flexseg.errors import ConfigError


def save_config(cfg: dict, path: str | Path) -> None:
    """Writes a plain config dict as YAML, keys in schema order."""
    Path(path).write_text(yaml.safe_dump(cfg, sort_keys=False, default_flow_style=False))


def read_config(path: str | Path, kind: type = dict) -> dict | list:
    """Reads a YAML file written by `save_config` (or Hydra) back into plain containers.

    Args:
        kind: what the file must hold: a mapping of settings (`dict`), or a `list` (Hydra's
            `overrides.yaml`).

    Raises:
        ConfigError: naming the file, when it cannot be read, is not UTF-8 YAML, or holds
            something other than `kind` (empty, a list, a number).
    """
    try:
        loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"config {path} is not UTF-8 text (byte {error.start} cannot be read); it is not a "
            "config flexseg wrote: restore it or give another run."
        ) from error
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"cannot read config {path}: {error}") from error
    if not isinstance(loaded, kind):
        wanted = "a mapping of settings" if kind is dict else f"a {kind.__name__}"
        names = {"list": "a list", "dict": "a mapping", "str": "a string", "bool": "true or false"}
        what = "empty" if loaded is None else names.get(type(loaded).__name__, "a number")
        raise ConfigError(
            f"config {path} is {what}, not {wanted}; it is not a file flexseg or Hydra wrote: "
            "restore it or give another run."
        )
    return loaded
