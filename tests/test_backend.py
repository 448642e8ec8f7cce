"""flexseg.backend: seeding, the precision `auto` picks, and JAX's compile cache
(`trainer.compile_cache`: JAX keeps its compiled programs for the next run; other backends
are left alone)."""

from __future__ import annotations

import os
import random
from pathlib import Path

import jax
import keras
import numpy as np
import pytest

from flexseg import backend
from flexseg.errors import ConfigError
from tests.helpers import run_python

ON_JAX = backend.name() == "jax"
SETTINGS = (
    "jax_compilation_cache_dir",
    "jax_compilation_cache_max_size",
    "jax_enable_compilation_cache",
    "jax_persistent_cache_min_compile_time_secs",
)


@pytest.fixture
def jax_config(monkeypatch):
    """JAX's cache settings as a fresh process has them; restored afterwards."""
    saved = {name: getattr(jax.config, name) for name in SETTINGS}
    jax.config.update("jax_compilation_cache_dir", None)
    jax.config.update("jax_compilation_cache_max_size", -1)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    monkeypatch.delenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", raising=False)
    yield jax.config
    for name, value in saved.items():
        jax.config.update(name, value)


@pytest.mark.parametrize("setting", ["", "  ", None, 3])
def test_a_setting_that_is_no_folder_is_refused(setting):
    with pytest.raises(ConfigError, match="compile_cache must be auto, none or a folder"):
        backend.use_compile_cache(setting)


def test_auto_keeps_the_programs_in_the_user_cache_on_jax_only(jax_config, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    folder = backend.use_compile_cache("auto")
    if ON_JAX:
        assert folder == tmp_path / "flexseg" / "jax"
        assert jax_config.jax_compilation_cache_dir == str(folder)
        assert jax_config.jax_compilation_cache_max_size == backend.COMPILE_CACHE_MAX_BYTES
        # JAX's default keeps only programs that took 1 s; each initialiser takes less.
        assert jax_config.jax_persistent_cache_min_compile_time_secs == 0
    else:
        assert folder is None
        assert jax_config.jax_compilation_cache_dir is None
        assert jax_config.jax_persistent_cache_min_compile_time_secs == 1.0


def test_auto_keeps_a_folder_jax_already_has(jax_config, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "2")
    jax_config.update("jax_compilation_cache_dir", str(tmp_path / "mine"))
    jax_config.update("jax_persistent_cache_min_compile_time_secs", 2.0)
    folder = backend.use_compile_cache("auto")
    assert jax_config.jax_compilation_cache_dir == str(tmp_path / "mine")
    assert jax_config.jax_compilation_cache_max_size == -1  # the user's folder: no limit set
    assert jax_config.jax_persistent_cache_min_compile_time_secs == 2.0
    assert folder == (tmp_path / "mine" if ON_JAX else None)


def test_a_folder_setting_wins_over_jax_own(jax_config, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    jax_config.update("jax_compilation_cache_dir", str(tmp_path / "other"))
    folder = backend.use_compile_cache("~/programs")
    if ON_JAX:
        assert folder == tmp_path / "programs"
        assert jax_config.jax_compilation_cache_dir == str(tmp_path / "programs")
    else:
        assert folder is None
        assert jax_config.jax_compilation_cache_dir == str(tmp_path / "other")


def test_none_turns_the_cache_off(jax_config, tmp_path):
    jax_config.update("jax_compilation_cache_dir", str(tmp_path))
    assert backend.use_compile_cache("none") is None
    assert jax_config.jax_enable_compilation_cache is not ON_JAX


def test_a_process_leaves_its_compiled_programs_for_the_next(tmp_path):
    """The cache at work: a fresh process that builds a layer writes its programs to disk."""
    code = (
        "import keras\n"
        "from flexseg import backend\n"
        "backend.use_compile_cache('auto')\n"
        "keras.layers.Conv2D(4, 3).build((1, 8, 8, 2))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_PERSISTENT")}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    env["XDG_CACHE_HOME"] = str(tmp_path)
    run_python(code, env)
    folder = Path(tmp_path, "flexseg", "jax")
    programs = sorted(folder.glob("*-cache")) if folder.is_dir() else []
    if ON_JAX:
        assert programs, f"nothing in {folder}"
    else:
        assert programs == []


def draws(seed: int) -> tuple:
    backend.set_random_seed(seed)
    layer = keras.layers.Dense(3)
    layer.build((None, 4))
    return (
        random.random(),
        float(np.random.rand()),
        keras.ops.convert_to_numpy(keras.random.uniform((2,))).tolist(),
        keras.ops.convert_to_numpy(layer.kernel).tolist(),
    )


def test_set_random_seed_repeats_python_numpy_and_keras_draws():
    first, second, other = draws(5), draws(5), draws(6)
    assert first == second
    assert all(a != b for a, b in zip(first, other, strict=True))


def test_auto_precision_follows_the_measurements(monkeypatch):
    monkeypatch.setattr(backend, "gpu_compute_capability", lambda: (9, 0))  # H100
    assert backend.auto_precision() == "mixed_bfloat16"
    monkeypatch.setattr(backend, "gpu_compute_capability", lambda: (7, 5))  # T4: no bfloat16
    assert backend.auto_precision() == "mixed_float16"
    monkeypatch.setattr(backend, "gpu_compute_capability", lambda: None)
    monkeypatch.setattr(backend, "cpu_has_bf16_matrix_units", lambda: False)
    assert backend.auto_precision() == "float32"
    monkeypatch.setattr(backend, "cpu_has_bf16_matrix_units", lambda: True)
    expected = "float32" if backend.name() == "jax" else "mixed_bfloat16"
    assert backend.auto_precision() == expected
