"""Typed config sections that check themselves, and `parse`: a plain dict to a typed config.

Every config, composed by Hydra or written by hand, becomes typed sections through the same
code: `parse` refuses keys the schema does not have; making a section fills its defaults,
turns nested dicts into their sections, and checks every value's type, choices and range.
Each error names the key (`trainer.epochs`), what it must be, and what it received.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import inspect
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, TypeVar, Union

from flexseg.errors import ConfigError

# A required value: OmegaConf's marker, so that Hydra and flexseg both report it.
MISSING = "???"
S = TypeVar("S")


class Section:
    """Base of every config section: made, it checks and converts its values.

    `KEY` is where the section sits in a whole config (`trainer.reduce_lr`); errors name
    `KEY.field`.
    """

    KEY: ClassVar[str] = ""

    def __post_init__(self) -> None:
        hints = _hints(type(self))
        for f in dataclasses.fields(self):
            key = f"{self.KEY}.{f.name}" if self.KEY else f.name
            value = getattr(self, f.name)
            if isinstance(value, str) and value == MISSING:
                raise ConfigError(f"{key} is required: set {key}=<value>")
            setattr(self, f.name, _checked(key, value, hints[f.name], f.metadata))


def parse(schema: type[S], data: Mapping | S) -> S:
    """A typed config of `schema` from a plain dict (an instance passes unchanged).

    Raises:
        ConfigError: naming the first key that is unknown, missing or of a wrong value.

    Example:
    >>> trainer = parse(TrainerConfig, {"epochs": 3, "reduce_lr": {"patience": 2}})
    """
    if isinstance(data, schema):
        return data
    where = getattr(schema, "KEY", "") or "the config"
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where} must be a mapping of settings. Received: {data!r}")
    known = [f.name for f in dataclasses.fields(schema) if f.init]
    for name in data:
        if name not in known:
            prefix = f"{schema.KEY}." if getattr(schema, "KEY", "") else ""
            close = difflib.get_close_matches(str(name), known, n=1)
            hint = f"; did you mean `{prefix}{close[0]}`?" if close else ""
            raise ConfigError(
                f"config key `{prefix}{name}` is not a setting of {schema.__name__}{hint}"
            )
    return schema(**data)


def as_dict(section) -> dict:
    """A typed config as plain, JSON- and YAML-ready containers."""
    return dataclasses.asdict(section)


def flat_keys(config: Mapping, prefix: str = "") -> dict:
    """Nested containers as `{"trainer.reduce_lr.patience": 5, ...}`."""
    out = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        out |= flat_keys(value, f"{name}.") if isinstance(value, Mapping) else {name: value}
    return out


def section_schema(
    name: str,
    factory,
    base: type[Section],
    first: Mapping[str, tuple] = {},  # noqa: B006  (read only)
    overrides: Mapping[str, tuple] = {},  # noqa: B006
    skip: Sequence[str] = (),
    choices: Mapping[str, tuple] = {},  # noqa: B006
) -> type[Section]:
    """A section dataclass with one field per argument of `factory` (a class), its default
    included: the class's signature stays the one place its defaults are written.

    Args:
        first: fields put before the arguments, as {name: (type, default)}.
        overrides: arguments whose (type, default) the config sets differently.
        skip: arguments that are never configured.
        choices: allowed values of fields.
    """
    hints = typing.get_type_hints(factory.__init__)
    fields = []
    for key, (kind, default) in first.items():
        fields.append(_field(key, kind, default, choices.get(key)))
    for parameter in inspect.signature(factory.__init__).parameters.values():
        key = parameter.name
        if (
            key == "self"
            or key in skip
            or parameter.kind
            in (
                parameter.VAR_POSITIONAL,
                parameter.VAR_KEYWORD,
            )
        ):
            continue
        if key in overrides:
            kind, default = overrides[key]
        else:
            kind = _config_type(hints.get(key, Any))
            default = MISSING if parameter.default is parameter.empty else parameter.default
        fields.append(_field(key, kind, default, choices.get(key)))
    return dataclasses.make_dataclass(name, fields, bases=(base,))


def _field(key: str, kind, default, options: tuple | None) -> tuple:
    metadata = {"choices": options} if options else {}
    if isinstance(default, (list, tuple, dict)):
        copy = list(default) if isinstance(default, tuple) else default
        made = dataclasses.field(default_factory=lambda: type(copy)(copy), metadata=metadata)
    else:
        made = dataclasses.field(default=default, metadata=metadata)
    return key, kind, made


def _config_type(hint):
    """The type a config field takes for a constructor argument, in the forms OmegaConf
    knows: sequences become lists, unions of several types become Any."""
    if hint in (int, float, str, bool):
        return hint
    if _is_union(hint):
        members = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(members) == 1 and len(typing.get_args(hint)) == 2:
            return typing.Optional[_config_type(members[0])]  # noqa: UP045  (Any | None fails)
        return Any
    if typing.get_origin(hint) in (list, tuple, Sequence) or hint in (list, tuple):
        return list[Any]
    return Any


@functools.cache
def _hints(schema: type) -> dict:
    return typing.get_type_hints(schema)


def _is_union(hint) -> bool:
    return typing.get_origin(hint) in (Union, types.UnionType)


def _checked(key: str, value, hint, metadata: Mapping):
    nested = _section_of(hint)
    if nested is not None and isinstance(value, Mapping):
        value = parse(nested, value)
    ok, value = _conform(value, hint)
    if not ok:
        raise ConfigError(f"{key} must be {_describe(hint)}. Received: {value!r}")
    options = metadata.get("choices")
    if options is not None and value not in options:
        raise ConfigError(f"{key} must be one of {options}. Received: {value!r}")
    test, wanted = metadata.get("rule", (None, ""))
    if test is not None and not test(value):
        raise ConfigError(f"{key} must be {wanted}. Received: {value!r}")
    return value


def _section_of(hint) -> type | None:
    if isinstance(hint, type) and issubclass(hint, Section):
        return hint
    if _is_union(hint):
        return next(filter(None, map(_section_of, typing.get_args(hint))), None)
    return None


def _conform(value, hint) -> tuple[bool, Any]:
    """(whether `value` is of type `hint`, the value in that type: int -> float, tuple -> list)."""
    if hint is Any:
        return True, value
    if _is_union(hint):
        for member in typing.get_args(hint):
            ok, converted = _conform(value, member)
            if ok:
                return True, converted
        return False, value
    if hint is type(None):
        return value is None, value
    if hint is bool:
        return isinstance(value, bool), value
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if hint is float:
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        return number, float(value) if number else value
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            return False, value
        items = [_conform(item, args[0] if args else Any) for item in value]
        return all(ok for ok, _ in items), [item for _, item in items]
    if origin is dict:
        if not isinstance(value, Mapping):
            return False, value
        key_type, value_type = args or (Any, Any)
        pairs = [(_conform(k, key_type), _conform(v, value_type)) for k, v in value.items()]
        ok = all(a and b for (a, _), (b, _) in pairs)
        return ok, {k: v for (_, k), (_, v) in pairs}
    return isinstance(value, hint), value


def _describe(hint) -> str:
    if hint is Any:
        return "any value"
    if _is_union(hint):
        return " or ".join(_describe(member) for member in typing.get_args(hint))
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
    if hint in names:
        return names[hint]
    if hint is type(None):
        return "null"
    origin = typing.get_origin(hint)
    if origin is list:
        return f"a list of {_describe(typing.get_args(hint)[0]).split(' ', 1)[-1]}s"
    if origin is dict:
        return "a mapping"
    return getattr(hint, "__name__", str(hint))
