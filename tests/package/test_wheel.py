"""The wheel as a user who never cloned flexseg meets it: built, installed into a fresh virtual
environment outside the repository, and run from an empty folder.

The fresh environment gets the wheel and nothing else; the dependencies (Keras, the backends,
Hydra) come from this environment through a `.pth` line, so the test needs no network.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

pytestmark = pytest.mark.once  # the package and its examples, on one backend

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("pyproject.toml", "setup.py", "README.md", "flexseg", "conf")
SAMPLE = ROOT / "flexseg" / "sample_data" / "ms-lesjak-flair"
USER_DATASET = """\
defaults:
  - dataset_schema
  - _self_
name: my_scans
root: {root}
group_regex: '^(p\\d+)_'
split:
  groups: {{train: [p07], valid: [p19], test: [p26]}}
rgb_map:
  - {{name: background, color: [0, 0, 0], id: 0}}
  - {{name: lesion, color: [255, 255, 255], id: 1}}
image_size: [224, 192]
"""


def run(*args, cwd=None, env=None) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, f"{args}:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, dict]:
    """(bin folder, environment) of a fresh virtual environment holding only the wheel."""
    source = tmp_path_factory.mktemp("source")  # built from a copy: the clone stays clean
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__py*"))
        else:
            shutil.copy(ROOT / name, source / name)
    wheels = tmp_path_factory.mktemp("wheels")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    run(*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", wheels, source)
    (wheel,) = wheels.glob("flexseg-*.whl")
    env_dir = tmp_path_factory.mktemp("venv")
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    run(*pip, "--python", python, "install", "--no-deps", "--no-index", wheel)
    site_packages = Path(
        run(
            python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"
        ).stdout.strip()
    )
    (site_packages / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env |= {"KERAS_BACKEND": "torch", "PATH": f"{env_dir / 'bin'}:{env['PATH']}"}
    return env_dir / "bin", env


def test_the_installed_package_is_the_wheel_with_its_configs(installed, tmp_path):
    bin_dir, env = installed
    code = "import flexseg.commands._compose as c; print(c.__file__, c.CONF_DIR, c.SAMPLE_DATA)"
    paths = run(bin_dir / "python", "-c", code, cwd=tmp_path, env=env).stdout.split()
    module, conf, sample = (Path(p) for p in paths)
    for path in (module, conf, sample):
        assert path.is_relative_to(bin_dir.parent) and not path.is_relative_to(ROOT)
    assert len(list((sample / "ms-lesjak-flair" / "images").glob("*.png"))) == 345
    assert (Path(conf) / "train.yaml").is_file() and (
        Path(conf) / "experiment" / "demo.yaml"
    ).is_file()


def test_every_command_module_is_a_console_script(installed):
    bin_dir, _ = installed
    from flexseg import commands

    scripts = {p.name.removeprefix("flexseg-") for p in bin_dir.glob("flexseg-*")}
    assert scripts == set(commands.names())
    assert "preview-augment" in scripts and "launch" in scripts


def test_check_and_a_short_training_from_an_empty_folder(installed, tmp_path):
    bin_dir, env = installed
    result = run(bin_dir / "flexseg-check", "experiment=demo", cwd=tmp_path, env=env)
    assert "check passed" in result.stdout
    run(
        bin_dir / "flexseg-train", "experiment=demo", "model.base_filters=4",
        "model.num_layers=3", "trainer.epochs=1", "trainer.steps_per_epoch=2",
        "trainer.max_minutes=null", "trainer.preview_images=0", "trainer.verbose=0",
        "hydra.run.dir=run", cwd=tmp_path, env=env,
    )  # fmt: skip
    assert (tmp_path / "run" / "checkpoints" / "best.keras").is_file()
    assert (tmp_path / "run" / "history.csv").is_file()


def test_a_users_own_config_folder_joins_the_search_path(installed, tmp_path):
    bin_dir, env = installed
    data = tmp_path / "scans"
    for folder in ("images", "masks"):
        (data / folder).mkdir(parents=True)
        for path in sorted((SAMPLE / folder).glob("*.png"))[::8]:
            shutil.copy(path, data / folder / path.name)
    (tmp_path / "my_conf" / "dataset").mkdir(parents=True)
    (tmp_path / "my_conf" / "dataset" / "my_scans.yaml").write_text(USER_DATASET.format(root=data))
    for search in (
        ["--config-dir", "my_conf"],
        [f"hydra.searchpath=[file://{tmp_path / 'my_conf'}]"],
    ):
        result = run(bin_dir / "flexseg-check", *search, "dataset=my_scans", cwd=tmp_path, env=env)
        assert "check passed" in result.stdout and "outputs/my_scans/" in result.stdout
