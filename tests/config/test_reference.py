"""The configuration reference is written from the schema: every key of every command is in
it with its default, a key without a description is refused, and the site builds strict."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import pytest

from flexseg.config.parse import Section
from flexseg.config.reference import (
    COMMANDS,
    UndocumentedKeyError,
    argument_descriptions,
    command_keys,
    field_comments,
    markdown,
)
from flexseg.config.schema import TrainConfig, command_schemas, loss_schema, model_schema
from flexseg.losses import LOSSES
from flexseg.models import MODELS

ROOT = Path(__file__).resolve().parents[2]


def _paths(schema, prefix=""):
    """Every key of a schema, walked here apart from the reference's own walk."""
    hints = typing.get_type_hints(schema)
    for f in dataclasses.fields(schema):
        path = f"{prefix}{f.name}"
        kind = hints[f.name]
        if path == "model":
            for target in MODELS.values():
                yield from (f"model.{g.name}" for g in dataclasses.fields(model_schema(target)))
        elif path == "loss":
            for name in LOSSES:
                yield from (f"loss.{g.name}" for g in dataclasses.fields(loss_schema(name)))
        elif isinstance(kind, type) and issubclass(kind, Section):
            yield from _paths(kind, f"{path}.")
        else:
            yield path


def test_the_reference_lists_every_key_of_every_command_with_its_default():
    page = markdown(ROOT / "conf")
    rows = {line.split(" | ")[0].strip("| `"): line for line in page.splitlines()
            if line.startswith("| `")}  # fmt: skip
    assert set(command_schemas()) == set(COMMANDS)
    for name, schema in command_schemas().items():
        keys = {k.path: k for k in command_keys(schema)}
        wanted = set(_paths(schema))
        assert wanted == set(keys), name
        for path, key in keys.items():
            assert path in rows, f"{name}: {path} is not in the reference"
            assert f"| `{key.default}` |" in rows[path], path
            assert key.description, path
    # spot checks against the schema's own values
    train = {k.path: k for k in command_keys(TrainConfig)}
    assert train["trainer.epochs"].default == "50"
    assert train["trainer.optimizer"].allowed == "`adam`, `adamw`"
    assert train["dataset.root"].default == "required"
    assert train["loss.name"].default == '"ce_dice"'
    assert train["loss.gamma"].only == "focal"
    assert train["model.base_filters"].default == "16"
    assert "first level" in train["model.base_filters"].description
    assert "## Config groups" in page and "| `experiment` | `lgg` |" in page


@dataclass
class _Documented(Section):
    KEY: ClassVar[str] = "toy"
    # the first setting,
    # over two lines
    first: int = 1
    second: str = "a"  # the second setting
    third: list[int] = field(default_factory=list)  # the third one


@dataclass
class _Undocumented(Section):
    KEY: ClassVar[str] = "toy"
    described: int = 1  # this one says what it is
    added_later: float = 0.5


@dataclass
class _Whole(Section):
    toy: _Documented = field(default_factory=_Documented)
    other: _Undocumented = field(default_factory=_Undocumented)


def test_comments_beside_and_above_a_field_are_its_description():
    comments = field_comments(_Documented)
    assert comments == {
        "first": "the first setting, over two lines",
        "second": "the second setting",
        "third": "the third one",
    }


def test_a_key_added_without_a_description_is_refused_by_name():
    with pytest.raises(UndocumentedKeyError, match=r"1 config key\(s\).*other\.added_later"):
        command_keys(_Whole)


def test_arguments_are_read_from_a_docstring():
    class Toy:
        """A toy.

        Args:
            size: how big,
                in pixels.
            name: what it is called.

        Example:
            not an argument: no
        """

    assert argument_descriptions(Toy) == {
        "size": "how big, in pixels.",
        "name": "what it is called.",
    }


@pytest.mark.once
def test_the_site_builds_strict_and_the_readme_stays_short(tmp_path):
    readme = (ROOT / "README.md").read_text().splitlines()
    assert len(readme) <= 150
    assert any("make demo" in line for line in readme) and any(
        "make test" in line for line in readme
    )
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    site = tmp_path / "site"
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "-d", str(site)],
        cwd=ROOT, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert (site / "index.html").is_file()
    reference = (site / "reference" / "configuration" / "index.html").read_text()
    assert "trainer.reduce_lr.patience" in reference
