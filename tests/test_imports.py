"""Import rules that keep the package backend-agnostic."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "flexseg"
RULES = {
    ("tensorflow", "jax", "torch"): "backend.py",
    ("hydra", "omegaconf"): "config.py",
}


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize(("modules", "owner"), RULES.items(), ids=["backends", "hydra"])
def test_only_the_owner_module_imports(modules, owner):
    offenders = [
        str(path.relative_to(PACKAGE.parent))
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.name != owner and imported_roots(path) & set(modules)
    ]
    assert offenders == []


def test_the_rule_sees_imports(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("import torch.nn\nfrom jax import numpy\n")
    assert imported_roots(probe) == {"torch", "jax"}
