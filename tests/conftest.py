"""Shared test setup: the backend comes from KERAS_BACKEND, set before Python starts."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    # Many tests, and the training subprocesses they start, compile the same small JAX steps:
    # one persistent compilation cache for the session halves the JAX suite's time on CPU.
    cache = tempfile.mkdtemp(prefix="flexseg-jax-cache-")
    atexit.register(shutil.rmtree, cache, ignore_errors=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = cache
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"

import keras  # noqa: E402  (after the cache settings, which JAX reads at import)
import pytest  # noqa: E402

from flexseg import backend  # noqa: E402


def pytest_report_header(config) -> str:
    return f"keras {keras.__version__}, backend {keras.backend.backend()}"


@pytest.fixture(autouse=True)
def _fresh_keras_state():
    """Each test starts from the same seed and an empty Keras name scope."""
    keras.backend.clear_session()
    backend.set_random_seed(0)
    yield
