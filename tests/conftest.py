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

from flexseg.runtime import prepare_process  # noqa: E402

prepare_process()  # as the commands do: before Keras starts

import keras  # noqa: E402  (after the cache settings, which JAX reads at import)
import pytest  # noqa: E402

from flexseg import backend  # noqa: E402
from tests.helpers import TINY_RUN, make_flat_dataset  # noqa: E402


def pytest_report_header(config) -> str:
    return f"keras {keras.__version__}, backend {keras.backend.backend()}"


@pytest.fixture(autouse=True)
def _fresh_keras_state():
    """Each test starts from the same seed and an empty Keras name scope. Python's collector
    runs as usual: a full collection before every test (clear_session's default) took about
    0.6 s a test in a process holding TensorFlow (103 s of a 165 s run of four test folders)."""
    keras.backend.clear_session(free_memory=False)
    backend.set_random_seed(0)
    yield


# A run trained once per session, that evaluation, inference and run-folder tests read: three
# patients of 6 slices, two to train on (a quarter held out to validate), one to test on.
TRAINED_RUN = [
    *TINY_RUN,
    "dataset.cache=none",
    "dataset.split.groups={train:[p01,p02],test:[p03]}",
    "dataset.split.holdout_fraction=0.25",
    "trainer.epochs=2",
    "trainer.batch_size=4",
    "trainer.preview_images=2",
    "augment=strong",
]


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """(data folder, run folder, training summary) of one tiny training run. Tests that
    change the run work on a copy."""
    from flexseg.commands._compose import load_config
    from flexseg.training import train

    root = tmp_path_factory.mktemp("data")
    make_flat_dataset(root, slices=6, size=(30, 28))
    run_dir = tmp_path_factory.mktemp("run")
    keras.backend.clear_session()
    backend.set_random_seed(0)
    summary = train(load_config([f"dataset.root={root}", *TRAINED_RUN]), run_dir)
    return root, run_dir, summary
