"""Hydra composition of a command's config from `conf/`, as a typed config.

With `_app.py`, the only flexseg module that imports Hydra or OmegaConf. Hydra merges each
YAML option into the schema's sections (registered here), so a misspelled key or a value of
the wrong type stops composition with the key's name; `parse` then checks the rest. A
command's primary config names its schema first (`defaults: [evaluate_schema, ...]`), and the
composed config is typed by that schema.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from flexseg.config.parse import parse
from flexseg.config.schema import (
    AugmentConfig,
    DatasetConfig,
    LoggerConfig,
    TrainerConfig,
    command_schemas,
    loss_schema,
    model_schema,
)
from flexseg.errors import ConfigError
from flexseg.models import MODELS

PACKAGE = Path(__file__).resolve().parents[1]
SAMPLE_DATA = PACKAGE / "sample_data"


def conf_dir() -> Path:
    """The configs: `flexseg/conf/` inside an installed wheel, or the `conf/` folder beside
    the package in a clone (an editable install), which is where the wheel takes them from."""
    packaged = PACKAGE / "conf"
    return packaged if packaged.is_dir() else PACKAGE.parent / "conf"


CONF_DIR = conf_dir()


@functools.cache
def register() -> None:
    """Registers the schemas that `conf/` names (`train_schema`, `dataset_schema`,
    `flex_unet_schema`, `ce_dice_schema`, ...) and the `${sample_data:<name>}` resolver."""
    from flexseg.losses import LOSSES

    store = ConfigStore.instance()
    for name, schema in command_schemas().items():
        store.store(name=f"{name}_schema", node=schema)
    for group, schema in [
        ("dataset", DatasetConfig),
        ("augment", AugmentConfig),
        ("trainer", TrainerConfig),
        ("logger", LoggerConfig),
    ]:
        store.store(group=group, name=f"{group}_schema", node=schema)
    for name, target in MODELS.items():
        store.store(group="model", name=f"{name}_schema", node=model_schema(target))
    for name in LOSSES:
        store.store(group="loss", name=f"{name}_schema", node=loss_schema(name))
    # ${sample_data:ms-lesjak-flair}: a data set shipped inside the package, wherever it is.
    OmegaConf.register_new_resolver("sample_data", lambda name: str(SAMPLE_DATA / name))


def load_config(overrides: Sequence[str] = (), command: str = "train") -> Any:
    """Composes `conf/<command>.yaml` with command-line style overrides, as a typed config.

    Example:
    >>> cfg = load_config(["dataset=ms_lesjak", "trainer.epochs=2"])
    >>> cfg.trainer.epochs
    2
    """
    register()
    overrides = experiment_files(overrides)
    try:
        cfg = _compose(command, overrides)
    except OmegaConfBaseException as error:
        raise ConfigError(_composition_error(error, command)) from error
    except Exception as error:  # Hydra's own errors: unknown group option, bad override
        if type(error).__module__.startswith("hydra"):
            raise ConfigError(_composition_error(error, command)) from error
        raise
    return typed(cfg)


def experiment_files(overrides: Sequence[str]) -> list[str]:
    """`experiment=<a .yaml file>` (what flexseg-plan writes) as Hydra takes it: the file's
    name as the option, and a search path with an `experiment/` folder that holds it (its
    own folder where that is named so, else a copy of it under ~/.cache/flexseg/experiments).

    Raises:
        ConfigError: the file does not exist, or a search path is given as well.
    """
    out = list(overrides)
    for i, item in enumerate(out):
        key, _, value = item.partition("=")
        if key.lstrip("+") != "experiment" or not value.endswith((".yaml", ".yml")):
            continue
        path = Path(value).expanduser()
        if not path.is_file():
            raise ConfigError(
                f"experiment={value}: no such file; give the path of an experiment file "
                "(flexseg-plan prints it) or the name of one in conf/experiment/."
            )
        if any(o.lstrip("+").startswith("hydra.searchpath=") for o in out):
            raise ConfigError(
                f"experiment={value} and hydra.searchpath together: put the file in "
                "<your search path>/experiment/ and give its name, experiment=<name>."
            )
        path = path.resolve()
        folder = path.parent
        if folder.name != "experiment":
            import hashlib

            text = path.read_bytes()
            digest = hashlib.sha256(str(path).encode() + b"\0" + text).hexdigest()[:16]
            folder = Path("~/.cache/flexseg/experiments").expanduser() / digest / "experiment"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / path.name).write_bytes(text)
        out[i] = f"{key}={path.stem}"
        out.append(f"hydra.searchpath=[file://{folder.parent}]")
    return out


def _compose(command: str, overrides: Sequence[str] = ()) -> DictConfig:
    # Inside a command's Hydra app (flexseg-plan checks the file it wrote) the app's Hydra
    # is set aside meanwhile, and put back.
    held = GlobalHydra.instance()
    saved = held.hydra if held.is_initialized() else None
    held.clear()
    try:
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            return compose(command, overrides=list(overrides))
    finally:
        if saved is not None:
            GlobalHydra.instance().initialize(saved)


def typed(cfg: DictConfig) -> Any:
    """A composed config, resolved, as a typed config of the schema its primary config
    names."""
    try:
        plain = OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as error:
        raise ConfigError(explain(error)) from error
    plain.pop("hydra", None)
    return parse(OmegaConf.get_type(cfg), plain)


def _composition_error(error: Exception, command: str) -> str:
    quoted = _quoting_hint(error)
    if quoted:
        return quoted
    message = explain(error)
    try:
        schema = OmegaConf.get_type(_compose(command))  # the command's keys, for the hint
    except Exception:  # the primary config itself fails: the message says why
        return message
    if f"not in '{schema.__name__}'" in message:  # a key the command does not take
        keys = ", ".join(f.name for f in dataclasses.fields(schema))
        message += f"; {command} takes {keys}"
    return message


def _quoting_hint(error: Exception) -> str | None:
    """Hydra's grammar error for an override whose value holds a character it reserves
    (parentheses, brackets, braces, commas, quotes, spaces, non-ASCII letters), as one line
    that says how to quote it; None for another error."""
    override = getattr(error, "override", None)
    ambiguous = re.match(r"Ambiguous value for argument '(.+?)'\n", str(error))
    if ambiguous:  # a comma: a list, a sweep or a string?
        override, why = ambiguous.group(1), "holds a comma (a list is key=[a,b]; a sweep, -m)"
    elif type(error).__name__ == "OverrideParseException" and isinstance(override, str):
        why = (
            "holds a character Hydra's grammar reserves (( ) [ ] { } , = quotes, spaces or "
            "letters beyond ASCII)"
        )
    else:
        return None
    key, equals, value = override.partition("=")
    if not equals:
        return f"cannot read the override {override!r}: write it as key=value"
    inner = value.replace("\\", "\\\\").replace("'", "\\'")
    return (
        f"cannot read the override {override!r}: its value {why}; as one string, quote the "
        f"value, in the shell as \"{key}='{inner}'\""
    )


def explain(error: Exception) -> str:
    """One readable message: Hydra's own first line, then the reason OmegaConf gave."""
    if isinstance(error, OmegaConfBaseException):
        key = getattr(error, "full_key", None)
        message = str(error).splitlines()[0]
        return f"config key `{key}`: {message}" if key else message
    lines = [line for line in str(error).splitlines() if line and not line.startswith("To append")]
    message = "\n".join(lines).rstrip(".") or type(error).__name__
    cause = error.__cause__ or error.__context__
    if isinstance(cause, OmegaConfBaseException):
        reason = str(cause).splitlines()[0]
        key = getattr(cause, "full_key", None)
        message += f": {reason}" + (f" (key `{key}`)" if key and key not in reason else "")
    key = getattr(error, "full_key", None)
    if key and key not in message:
        message = f"config key `{key}`: {message}"
    return message
