"""Import rules: the layers, one module per backend framework, Hydra at the edge, no import
cycles, data and models free of the config, and a library import that changes nothing in the
user's process."""

from __future__ import annotations

import ast
import json
import os
import shutil
from pathlib import Path

import pytest

from flexseg import backend
from tests.helpers import run_python

PACKAGE = Path(__file__).resolve().parents[1] / "flexseg"
RULES = {
    ("tensorflow", "jax", "torch"): {"backend.py"},
    ("hydra", "omegaconf"): {"commands/_compose.py", "commands/_app.py"},
}
# The layers, lowest first: a module imports modules of its own layer and of those below it,
# never of one above (imports inside functions included). A module is in the layer of the
# longest name here that it is, or that it is inside.
LAYERS = [
    # what everything may use
    ["flexseg", "flexseg.errors", "flexseg.backend", "flexseg.cluster", "flexseg.runtime",
     "flexseg.progress", "flexseg.plots"],
    # the parts, which take plain typed settings
    ["flexseg.data", "flexseg.models", "flexseg.losses", "flexseg.metrics"],
    # the schema: it reads the parts' option lists and defaults
    ["flexseg.config"],
    # a run's folder, and the config's sections as the parts' settings
    ["flexseg.runs", "flexseg.from_config"],
    # training, and prediction: each needs nothing of the other
    ["flexseg.training", "flexseg.predict"],
    # plans of a training: a data set's fingerprint, candidate models timed
    ["flexseg.planner"],
    # the commands: Hydra, the command line, sweeps
    ["flexseg.commands", "flexseg.__main__"],
]  # fmt: skip
APART = ("flexseg.training", "flexseg.predict")  # one layer, no import between them
FREE_OF_CONFIG = ("flexseg.data", "flexseg.models")


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize(("modules", "owners"), RULES.items(), ids=["backends", "hydra"])
def test_only_the_owner_modules_import(modules, owners):
    offenders = [
        str(path.relative_to(PACKAGE))
        for path in sorted(PACKAGE.rglob("*.py"))
        if str(path.relative_to(PACKAGE)) not in owners and imported_roots(path) & set(modules)
    ]
    assert offenders == []


def test_the_rule_sees_imports(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("import torch.nn\nfrom jax import numpy\n")
    assert imported_roots(probe) == {"torch", "jax"}


def import_graph(package: Path) -> dict[str, set[str]]:
    """Module -> the package's modules it imports, at the top or inside functions."""
    modules = {}
    for path in package.rglob("*.py"):
        parts = path.relative_to(package.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    graph = {}
    for name, path in modules.items():
        own_package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = own_package.split(".")[: len(own_package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, *([base] if base else [])])
                # `from package import module` imports the module; else the names' module.
                targets.update(
                    f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                    for a in node.names
                )
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None."""
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                return path[path.index(target) :] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        state[node] = "done"
        path.pop()
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_the_package_has_no_import_cycle():
    cycle = find_cycle(import_graph(PACKAGE))
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for target in graph[todo.pop()] - seen:
            seen.add(target)
            todo.append(target)
    return seen


def inside(module: str, package: str) -> bool:
    return module == package or module.startswith(f"{package}.")


def layer_of(module: str) -> int:
    """The index in LAYERS of the layer `module` is in."""
    found = [
        (len(name), k) for k, layer in enumerate(LAYERS) for name in layer if inside(module, name)
    ]
    if not found:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS")
    return max(found)[1]


def upward_imports(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """(module, what it imports) for each import of a higher layer's module, and each import
    between the packages of APART."""
    found = []
    for module, targets in sorted(graph.items()):
        for target in sorted(targets):
            sides = {p for p in APART for m in (module, target) if inside(m, p)}
            if layer_of(target) > layer_of(module) or len(sides) == 2:
                found.append((module, target))
    return found


def config_imports(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """(module, config module) for each import of `flexseg.config` by data or models."""
    return [
        (module, target)
        for module, targets in sorted(graph.items())
        if any(inside(module, package) for package in FREE_OF_CONFIG)
        for target in sorted(targets)
        if inside(target, "flexseg.config")
    ]


def test_every_module_is_in_a_layer_and_imports_none_above_it():
    assert upward_imports(import_graph(PACKAGE)) == []


def test_data_and_models_import_nothing_of_the_config():
    assert config_imports(import_graph(PACKAGE)) == []


@pytest.mark.parametrize(
    ("module", "added", "check", "found"),
    [
        ("data/sources.py", "from flexseg.commands import names", upward_imports,
         ("flexseg.data.sources", "flexseg.commands")),
        ("predict/postprocess.py", "import flexseg.training.train", upward_imports,
         ("flexseg.predict.postprocess", "flexseg.training.train")),
        ("data/splits.py", "from flexseg.config.schema import SPLITS", config_imports,
         ("flexseg.data.splits", "flexseg.config.schema")),
        ("models/flex_unet.py", "from flexseg.config import TrainConfig", config_imports,
         ("flexseg.models.flex_unet", "flexseg.config")),
    ],
)  # fmt: skip
def test_the_layer_checks_find_an_import_made_on_purpose(tmp_path, module, added, check, found):
    """The tests of the tests: a copy of the package, one import added inside a function."""
    copy = tmp_path / "flexseg"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("sample_data", "__pycache__"))
    assert check(import_graph(copy)) == []
    path = copy / module
    path.write_text(path.read_text() + f"\n\ndef _planted():\n    {added}\n")
    assert check(import_graph(copy)) == [found]


def test_prediction_reaches_no_training_module():
    needed = reachable(import_graph(PACKAGE), "flexseg.predict")
    assert not {m for m in needed if inside(m, "flexseg.training") or inside(m, "flexseg.commands")}


def test_the_commands_start_without_keras(tmp_path):
    """Every command module and the schema import without Keras, so that a command prepares
    the process (flexseg.runtime.prepare_process) before Keras and its backend start."""
    from flexseg import commands

    modules = ", ".join(f"flexseg.commands.{n.replace('-', '_')}" for n in commands.names())
    code = f"import sys, flexseg.config, flexseg.commands, {modules}\nprint('keras' in sys.modules)"
    assert run_python(code).splitlines()[-1] == "False"


def test_the_cycle_check_finds_a_cycle_made_on_purpose(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("from pkg.sub.b import thing\n")
    (package / "a.py").write_text("from pkg import sub\n")
    (package / "sub" / "b.py").write_text("def thing():\n    from ..a import x\n")
    assert import_graph(package)["pkg.sub.b"] == {"pkg.a"}
    assert find_cycle(import_graph(package)) == ["pkg.a", "pkg.sub", "pkg.sub.b", "pkg.a"]
    (package / "sub" / "b.py").write_text("def thing():\n    import json\n")
    assert find_cycle(import_graph(package)) is None


def test_the_library_changes_nothing_in_the_users_process(tmp_path):
    """No Hydra, no plotting backend switch (pictures are drawn without pyplot), no environment
    flags, no TensorFlow in a JAX or torch process (Keras imported it to seed it and to save a
    model, TensorBoard's writer to write files: 2-5 s and 420 MB)."""
    path = tmp_path / "model.keras"
    code = (
        "import json, os, sys, keras, matplotlib\n"
        "env = dict(os.environ)\n"  # as Keras and its backend left it (JAX sets a TF variable)
        "plotting = repr(dict.__getitem__(matplotlib.rcParams, 'backend'))\n"
        "import flexseg, flexseg.models, flexseg.data, flexseg.training, flexseg.predict\n"
        "import flexseg.config, flexseg.from_config, flexseg.runs\n"
        "from flexseg import backend, plots\n"
        "from flexseg.models import FlexUNet\n"
        "from flexseg.training.callbacks import atomic_save\n"
        f"plots.save_curves({str(tmp_path / 'c.png')!r}, {{'loss': [1, 0.5]}}, ['loss'], 't')\n"
        "report = {m: m in sys.modules for m in ('hydra', 'omegaconf')}\n"
        "report['plotting'] = [plotting, repr(dict.__getitem__(matplotlib.rcParams, 'backend'))]\n"
        "report['env'] = sorted(k for k in os.environ.keys() ^ env.keys())\n"
        "backend.set_random_seed(0)\n"
        "model = FlexUNet(input_shape=(16, 16, 1), base_filters=2, num_layers=2)\n"
        f"atomic_save(model, {str(path)!r})\n"
        f"keras.saving.load_model({str(path)!r})\n"
        "from flexseg.training.logs import TensorBoardLog\n"
        f"TensorBoardLog({str(tmp_path / 'tb')!r}).on_train_begin()\n"
        "report['tensorflow'] = 'tensorflow' in sys.modules\n"
        "from keras.src.utils.module_utils import tensorflow\n"
        "report['available'] = tensorflow._available\n"  # None: looked up again by who wants it
        "print(json.dumps(report))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "TF_CPP_MIN_LOG_LEVEL")}
    report = json.loads(run_python(code, env).splitlines()[-1])
    assert report["hydra"] is report["omegaconf"] is False
    assert report["plotting"][1] == report["plotting"][0]  # the plotting backend untouched
    assert report["env"] == []
    on_tensorflow = backend.name() == "tensorflow"
    assert report["tensorflow"] is on_tensorflow
    assert report["available"] is (True if on_tensorflow else None)
