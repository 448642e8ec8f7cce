"""Every key of every command's config, with its type, default, allowed values and
description, read from the schema itself: the page `docs/reference/configuration.md` is
written from it (`scripts/config_reference.py`), so the reference cannot drift from the code.

A key's description is the comment beside its field in `flexseg/config/schema.py` (on its
line, or the comment lines right above it); the `model` and `loss` keys, which are a class's
constructor arguments, take theirs from the `Args:` section of the class's docstring. A key
without one is an error (`UndocumentedKeyError`), so a new setting cannot reach the reference
undescribed.

Example:
>>> from flexseg.config import TrainConfig
>>> keys = command_keys(TrainConfig)
>>> next(k for k in keys if k.path == "trainer.epochs").default
'50'
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import io
import json
import re
import textwrap
import tokenize
import typing
from dataclasses import dataclass
from typing import Any

from flexseg.config.parse import MISSING, Section
from flexseg.errors import ConfigError

# The fields a model or loss section puts before the class's arguments (schema.model_schema,
# schema.loss_schema), described here as the class has no argument of that name.
LEADING = {
    "model._target_": "the model class, a dotted path; the other `model` keys are its arguments",
    "loss.name": "the loss; the other `loss` keys are its arguments, each loss taking its own",
}
# Keys whose value follows other settings unless given: said beside their description.
FOLLOWS = {
    "model.input_shape": "null: the dataset's patch or image size and channels",
    "model.num_classes": "null: `dataset.num_classes`",
}


class UndocumentedKeyError(ConfigError):
    """Keys of the schema that have no description."""


@dataclass(frozen=True)
class Key:
    """One setting: `path` as written on the command line (`trainer.reduce_lr.patience`)."""

    path: str
    type: str
    default: str
    allowed: str
    description: str
    section: str  # the section it belongs to: `trainer.reduce_lr`, `` for a command's own keys
    only: str = ""  # the loss names a `loss` key belongs to


def command_keys(schema: type[Section]) -> list[Key]:
    """Every key of a command's config (`TrainConfig`, `EvaluateConfig`, ...).

    Raises:
        UndocumentedKeyError: naming every key that has no description.
    """
    keys = list(_section_keys(schema, ""))
    missing = [k.path for k in keys if not k.description]
    if missing:
        raise UndocumentedKeyError(
            f"{len(missing)} config key(s) without a description: {', '.join(missing)}; write "
            "a comment beside the field in flexseg/config/schema.py (or an `Args:` line in "
            "the class's docstring for a model or loss argument)."
        )
    return keys


def _section_keys(cls: type, prefix: str):
    comments = field_comments(cls)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        path = f"{prefix}{f.name}"
        value = _default(f)
        kind = hints.get(f.name, Any)
        if path == "model":
            yield from _model_keys()
        elif path == "loss":
            yield from _loss_keys()
        elif isinstance(kind, type) and issubclass(kind, Section):
            yield from _section_keys(kind, f"{path}.")
        elif isinstance(value, Section):
            yield from _section_keys(type(value), f"{path}.")
        else:
            yield _key(path, f, comments.get(f.name, ""), prefix.rstrip("."))


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return MISSING


def _key(path: str, f: dataclasses.Field, description: str, section: str, only=()) -> Key:
    value = _default(f)
    meta = f.metadata
    if "choices" in meta:
        allowed = ", ".join(f"`{v}`" if isinstance(v, str) else f"`{_text(v)}`"
                            for v in meta["choices"])  # fmt: skip
    elif "rule" in meta:
        allowed = meta["rule"][1]
    else:
        allowed = ""
    if path in FOLLOWS:
        description = f"{description} ({FOLLOWS[path]})" if description else FOLLOWS[path]
    return Key(
        path=path,
        type=_type_text(f.type),
        default="required" if isinstance(value, str) and value == MISSING else _text(value),
        allowed=allowed,
        description=description,
        section=section,
        only=", ".join(only),
    )


def _text(value: Any) -> str:
    """A value as it is written on the command line (YAML flow style)."""
    try:
        return json.dumps(value)
    except TypeError:
        return str(value)


def _type_text(kind: Any) -> str:
    if isinstance(kind, str):
        return kind.replace("typing.", "")
    if isinstance(kind, type):
        return kind.__name__
    return str(kind).replace("typing.", "")


def _model_keys():
    from flexseg.config.schema import model_schema
    from flexseg.models import MODELS

    for target in MODELS.values():
        section = model_schema(target)
        described = argument_descriptions(_import(target))
        for f in dataclasses.fields(section):
            path = f"model.{f.name}"
            yield _key(path, f, LEADING.get(path) or described.get(f.name, ""), "model")


def _loss_keys():
    from flexseg.config.schema import DEFAULT_LOSS, loss_schema
    from flexseg.losses import LOSSES

    owners: dict[str, list[str]] = {}
    found: dict[str, tuple] = {}
    for name, cls in LOSSES.items():
        described = argument_descriptions(cls)
        for f in dataclasses.fields(loss_schema(name)):
            owners.setdefault(f.name, []).append(name)
            found.setdefault(f.name, (f, LEADING.get(f"loss.{f.name}") or described.get(f.name)))
    for field_name, (f, description) in found.items():
        only = () if field_name == "name" else owners[field_name]
        if field_name == "name":  # each loss's section defaults to its own name
            f = dataclasses.field(default=DEFAULT_LOSS, metadata=f.metadata)
            f.type = "str"
        yield _key(f"loss.{field_name}", f, description or "", "loss", only)


def _import(target: str):
    from flexseg.config.targets import import_target

    return import_target(target)


@functools.cache
def field_comments(cls: type) -> dict[str, str]:
    """The comment of each field of a dataclass (and of the dataclasses it extends): the
    comment on the field's own lines, after the comment lines right above it."""
    found: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            source = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):
            continue  # made at run time (a model or loss section)
        lines = source.splitlines()
        comments = _comments_by_line(source)
        names = {f.name for f in dataclasses.fields(klass)}
        body = ast.parse(source).body[0].body
        for node in body:
            if not isinstance(node, ast.AnnAssign) or not isinstance(node.target, ast.Name):
                continue
            if node.target.id not in names:
                continue  # a ClassVar (KEY)
            above = []
            line = node.lineno - 1  # 1-based line above the field
            while line >= 1 and lines[line - 1].strip().startswith("#"):
                above.insert(0, comments.get(line, ""))
                line -= 1
            own = [comments[n] for n in range(node.lineno, node.end_lineno + 1) if n in comments]
            text = " ".join(part for part in [*above, *own] if part)
            found[node.target.id] = re.sub(r"\s+", " ", text).strip()
    return found


def _comments_by_line(source: str) -> dict[int, str]:
    out = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            out[token.start[0]] = token.string.lstrip("#").strip()
    return out


def argument_descriptions(factory) -> dict[str, str]:
    """The `Args:` section of a class's docstring (Google style) as {argument: text}."""
    doc = inspect.getdoc(factory) or ""
    found: dict[str, str] = {}
    inside, name = False, None
    for line in doc.splitlines():
        if re.fullmatch(r"\s*Args:\s*", line):
            inside = True
            continue
        if not inside:
            continue
        if line and not line.startswith(" "):
            break  # the next section (Example:, Raises:)
        match = re.match(r"^ {4}(\*{0,2}\w+):\s*(.*)$", line)
        if match:
            name = match.group(1)
            found[name] = match.group(2).strip()
        elif name and line.strip():
            found[name] += " " + line.strip()
    return found


# The commands that compose each schema (conf/<command>.yaml names the schema it starts from).
COMMANDS = {
    "train": ("train", "check", "demo"),
    "preview_augment": ("preview-augment",),
    "plan": ("plan",),
    "stats": ("stats",),
    "evaluate": ("evaluate",),
    "infer": ("infer",),
    "export": ("export",),
}


def markdown(conf_dir) -> str:
    """The configuration reference page: the config groups of `conf_dir`, each command's own
    keys, and one table per section (`dataset`, `trainer.reduce_lr`, ...) that commands
    share."""
    from pathlib import Path

    from flexseg.config.schema import command_schemas

    schemas = command_schemas()
    unknown = set(schemas) - set(COMMANDS)
    if unknown:
        raise UndocumentedKeyError(
            f"schemas {sorted(unknown)} are not listed in flexseg.config.reference.COMMANDS: "
            "add the commands that compose them."
        )
    out = [
        "# Configuration reference",
        "",
        "Every key of every command, written from the schema (`flexseg/config/schema.py`, and "
        "the model and loss classes' arguments) when the site is built. Set any of them on "
        "the command line (`trainer.epochs=30`), in an experiment file, or in Python "
        "(`TrainConfig(trainer={'epochs': 30})`); a key that is not listed here is refused "
        "with its name. A default is the schema's; an option of a config group "
        "(`dataset=lgg`, `experiment=lgg`) may set another. `required`: the command stops "
        "until it is given.",
        "",
        "## Config groups",
        "",
        "One option of each group is chosen on the command line (`dataset=lgg`, "
        "`experiment=lgg`); an option is a YAML file that sets keys of the tables below.",
        "",
        "| group | option | what it is |",
        "|---|---|---|",
    ]
    conf = Path(conf_dir)
    for group in sorted(p for p in conf.iterdir() if p.is_dir()):
        for option in sorted(group.rglob("*.yaml")):
            name = option.relative_to(group).with_suffix("").as_posix()
            out.append(f"| `{group.name}` | `{name}` | {_cell(_first_comment(option))} |")
    sections: dict[str, list[Key]] = {}
    out += ["", "## Commands", ""]
    for schema_name, schema in schemas.items():
        keys = command_keys(schema)
        names = ", ".join(f"`flexseg-{c}`" for c in COMMANDS[schema_name])
        out += [f"### {names}", "", _cell(inspect.getdoc(schema) or "").replace("\\|", "|"), ""]
        own = [k for k in keys if not k.section]
        if own:
            out += _table(own)
        used = list(dict.fromkeys(k.section for k in keys if k.section))
        for section in used:
            sections.setdefault(section, [k for k in keys if k.section == section])
        if used:
            links = ", ".join(f"[`{s}`](#{_anchor(s)})" for s in used)
            out += ["", f"Sections: {links}.", ""]
    out += ["## Sections", ""]
    for section in sorted(sections):
        out += [f"### `{section}` {{#{_anchor(section)}}}", ""]
        out += _table(sections[section])
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def _table(keys: list[Key]) -> list[str]:
    losses = any(k.only for k in keys)
    head = "| key | type | default | allowed | description |"
    rows = [head + (" losses |" if losses else ""), "|---" * (5 + losses) + "|"]
    for k in keys:
        cells = [f"`{k.path}`", f"`{k.type}`", f"`{k.default}`", k.allowed, k.description]
        if losses:
            cells.append(k.only)
        rows.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return rows


def _cell(text: str) -> str:
    """Text for a table cell: one line, `|` escaped, and `*` outside code spans (`2**i`) kept
    from turning into emphasis."""
    parts = re.split(r"(`+[^`]*`+)", " ".join(str(text).split()))
    return "".join(
        part if part.startswith("`") else part.replace("*", "\\*") for part in parts
    ).replace("|", "\\|")


def _anchor(section: str) -> str:
    return "key-" + section.replace(".", "-").replace("_", "-")


def _first_comment(path) -> str:
    """The first sentence of the first comment block of a YAML file."""
    lines = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        text = line.lstrip("#").strip()
        if text != "@package _global_":
            lines.append(text)
    text = " ".join(lines)
    for end in re.finditer(r"\.(?=\s)", text):
        if not re.search(r"(\bal|e\.g|i\.e)\.$", text[: end.end()]):
            return text[: end.end()]
    return text
