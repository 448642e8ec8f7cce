"""Objects named by a dotted path (`_target_`), built with plain-container arguments."""

from __future__ import annotations

import importlib
from typing import Any

from flexseg.errors import ConfigError


def import_target(target: str) -> Any:
    """The model class a dotted path such as `flexseg.models.FlexUNet` names.

    Only the classes of `flexseg.models.MODELS` are taken, and the path is checked before
    anything is imported: a config file (a run's `config.yaml`, an experiment) is data, and
    naming a module in it must not run that module's code.
    """
    from flexseg.models import MODELS  # the registry only: no model module is imported yet

    if not isinstance(target, str) or target not in MODELS.values():
        raise ConfigError(
            f"`_target_` {target!r} is not one of flexseg's models "
            f"({', '.join(sorted(MODELS.values()))}); a config names a model by one of these "
            "paths (a new model class is added to flexseg.models.MODELS)."
        )
    module_name, _, attr = target.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as error:
        raise ConfigError(f"`_target_` {target!r} cannot be imported: {error}") from error


def instantiate(section, **overrides) -> Any:
    """Builds what a `model` section describes: its `_target_` called with its arguments.

    Arguments stay plain Python containers, so the object's own config (a Keras model's
    `get_config()`) stays JSON-serializable.

    Example:
    >>> model = instantiate(cfg.model, input_shape=[64, 64, 1])
    """
    factory = import_target(section._target_)
    return factory(**{**section.arguments(), **overrides})
