"""Import rules that keep the package backend-agnostic."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from flexseg import backend
from tests.helpers import run_python

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


def test_seeding_and_checkpoints_leave_tensorflow_out_of_jax_and_torch(tmp_path):
    """Keras imported it to seed it and to save a model: 2-5 s and 420 MB for nothing."""
    path = tmp_path / "model.keras"
    code = (
        "import sys, keras\n"
        "from flexseg import backend\n"
        "from flexseg.models import FlexUNet\n"
        "from flexseg.training.callbacks import atomic_save\n"
        "backend.set_random_seed(0)\n"
        "model = FlexUNet(input_shape=(16, 16, 1), base_filters=2, num_layers=2)\n"
        f"atomic_save(model, {str(path)!r})\n"
        f"keras.saving.load_model({str(path)!r})\n"
        "print('tensorflow' in sys.modules)\n"
        "from keras.src.utils.module_utils import tensorflow\n"
        "print(tensorflow._available)\n"  # None: looked up again by code that wants it
    )
    imported, available = run_python(code).split()[-2:]
    on_tensorflow = backend.name() == "tensorflow"
    assert imported == str(on_tensorflow)
    assert available == ("True" if on_tensorflow else "None")
