"""Import rules that keep the package backend-agnostic."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from flexseg import backend
from tests.helpers import TINY_RUN, make_flat_dataset

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


def test_a_jax_or_torch_run_never_imports_tensorflow(tmp_path):
    """Keras would import it to seed it and to save a model: 2-5 s and 420 MB for nothing."""
    make_flat_dataset(tmp_path / "data", slices=4, size=(32, 32))
    overrides = [
        f"dataset.root={tmp_path / 'data'}", *TINY_RUN, "trainer.epochs=1",
        "trainer.batch_size=2", "trainer.preview_images=0",
        "dataset.split.groups={train:[p01],valid:[p02],test:[p03]}",
    ]  # fmt: skip
    code = (
        "import sys\n"
        "from flexseg.config import load_config\n"
        "from flexseg.training import train\n"
        f"cfg = load_config({overrides!r})\n"
        f"cfg['_run_dir_'] = {str(tmp_path / 'run')!r}\n"
        "train(cfg)\n"  # seeds, and saves two checkpoints
        "print('tensorflow' in sys.modules)\n"
        "from keras.src.utils.module_utils import tensorflow\n"
        "print(tensorflow.available)\n"  # installed: still there for code that asks for it
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env={**os.environ}, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    imported, available = result.stdout.split()[-2:]
    assert imported == str(backend.name() == "tensorflow")
    assert available == "True"
