"""prepare_process: the commands turn XLA's CPU YNNPACK fusions off where jaxlib knows the flag,
and only there, and quiet TensorFlow's start-up."""

from __future__ import annotations

import os

import pytest

from flexseg import runtime

OFF = f"{runtime.YNN_FLAG}="


@pytest.mark.parametrize(
    ("version", "before", "after"),
    [
        ((0, 10, 2), None, OFF),
        (
            (0, 8, 1),
            "--xla_force_host_platform_device_count=2",
            f"--xla_force_host_platform_device_count=2 {OFF}",
        ),
        ((0, 8, 0), None, None),  # the flag came in 0.8.1; XLA aborts on flags it lacks
        ((0, 11, 0), None, None),  # not checked: left to the user
        (None, None, None),  # no jaxlib
        (
            (0, 10, 2),
            f"{runtime.YNN_FLAG}=LIBRARY_FUSION_TYPE_DOT",
            f"{runtime.YNN_FLAG}=LIBRARY_FUSION_TYPE_DOT",
        ),
    ],
    ids=["current", "appended", "too-old", "unchecked", "no-jaxlib", "user-set"],
)
def test_ynnpack_flag_on_jax(version, before, after, monkeypatch):
    monkeypatch.setattr(runtime, "jaxlib_version", lambda: version)
    monkeypatch.setenv("XLA_FLAGS", before or "")  # so that teardown restores the real one
    if before is None:
        monkeypatch.delenv("XLA_FLAGS")
    runtime.turn_off_xla_cpu_ynnpack("jax")
    assert os.environ.get("XLA_FLAGS") == after


@pytest.mark.parametrize("backend", ["tensorflow", "torch"])
def test_other_backends_keep_xla_flags(backend, monkeypatch):
    # TensorFlow's XLA reads XLA_FLAGS too, and may not know the flag.
    monkeypatch.setattr(runtime, "jaxlib_version", lambda: (0, 10, 2))
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
    runtime.turn_off_xla_cpu_ynnpack(backend)
    assert os.environ["XLA_FLAGS"] == "--xla_force_host_platform_device_count=2"


def test_flag_is_set_on_import_exactly_on_jax():
    import keras

    first, unchecked = runtime.YNN_FLAG_JAXLIB
    version = runtime.jaxlib_version()
    on_jax = keras.backend.backend() == "jax"
    expected = on_jax and version is not None and first <= version < unchecked
    assert (OFF in os.environ.get("XLA_FLAGS", "")) == expected


def test_tensorflow_start_up_is_quiet_unless_the_user_asks(monkeypatch):
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    runtime.prepare_process()
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "2"
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "0")
    runtime.prepare_process()
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0"


def test_installed_jaxlib_version_is_read():
    version = runtime.jaxlib_version()
    assert version is None or (len(version) == 3 and version >= (0, 4, 0))
