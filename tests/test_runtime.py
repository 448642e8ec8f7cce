"""prepare_process: the commands set XLA's CPU flags on JAX where jaxlib knows them, and only
there, quiet TensorFlow's start-up and turn its oneDNN kernels on."""

from __future__ import annotations

import os

import pytest

from flexseg import runtime

OURS = f"{runtime.YNN_FLAG}= {runtime.SCHEDULER_FLAG}=false"


@pytest.mark.parametrize(
    ("version", "before", "after"),
    [
        ((0, 10, 2), None, OURS),
        (
            (0, 8, 1),
            "--xla_force_host_platform_device_count=2",
            f"--xla_force_host_platform_device_count=2 {OURS}",
        ),
        ((0, 8, 0), None, None),  # the YNNPACK flag came in 0.8.1; XLA aborts on flags it lacks
        ((0, 11, 0), None, None),  # not checked: left to the user
        (None, None, None),  # no jaxlib
        (
            (0, 10, 2),
            f"{runtime.YNN_FLAG}=LIBRARY_FUSION_TYPE_DOT",
            f"{runtime.YNN_FLAG}=LIBRARY_FUSION_TYPE_DOT {runtime.SCHEDULER_FLAG}=false",
        ),
        (
            (0, 10, 2),
            f"{runtime.SCHEDULER_FLAG}=true {runtime.YNN_FLAG}=",
            f"{runtime.SCHEDULER_FLAG}=true {runtime.YNN_FLAG}=",
        ),
    ],
    ids=["current", "appended", "too-old", "unchecked", "no-jaxlib", "user-ynn", "user-both"],
)
def test_xla_cpu_flags_on_jax(version, before, after, monkeypatch):
    monkeypatch.setattr(runtime, "jaxlib_version", lambda: version)
    monkeypatch.setenv("XLA_FLAGS", before or "")  # so that teardown restores the real one
    if before is None:
        monkeypatch.delenv("XLA_FLAGS")
    runtime.set_xla_cpu_flags("jax")
    assert os.environ.get("XLA_FLAGS") == after


@pytest.mark.parametrize("backend", ["tensorflow", "torch"])
def test_other_backends_keep_xla_flags(backend, monkeypatch):
    # TensorFlow's XLA reads XLA_FLAGS too, and may not know the flags.
    monkeypatch.setattr(runtime, "jaxlib_version", lambda: (0, 10, 2))
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
    runtime.set_xla_cpu_flags(backend)
    assert os.environ["XLA_FLAGS"] == "--xla_force_host_platform_device_count=2"


def test_flags_are_set_on_import_exactly_on_jax():
    import keras

    first, unchecked = runtime.XLA_CPU_FLAGS_JAXLIB
    version = runtime.jaxlib_version()
    on_jax = keras.backend.backend() == "jax"
    expected = on_jax and version is not None and first <= version < unchecked
    flags = os.environ.get("XLA_FLAGS", "")
    assert (f"{runtime.YNN_FLAG}=" in flags) == expected
    assert (f"{runtime.SCHEDULER_FLAG}=false" in flags) == expected


@pytest.mark.parametrize(
    ("name", "ours", "users"),
    [("TF_CPP_MIN_LOG_LEVEL", "2", "0"), ("TF_ENABLE_ONEDNN_OPTS", "1", "0")],
    ids=["quiet-start-up", "onednn"],
)
def test_tensorflow_settings_unless_the_user_made_them(name, ours, users, monkeypatch):
    monkeypatch.delenv(name, raising=False)
    runtime.prepare_process()
    assert os.environ[name] == ours
    monkeypatch.setenv(name, users)
    runtime.prepare_process()
    assert os.environ[name] == users


def test_installed_jaxlib_version_is_read():
    version = runtime.jaxlib_version()
    assert version is None or (len(version) == 3 and version >= (0, 4, 0))


def test_tensorflow_runs_its_onednn_kernels():
    # The suite's process was prepared as the commands' are (tests/conftest.py).
    import keras

    if keras.backend.backend() != "tensorflow":
        assert os.environ["TF_ENABLE_ONEDNN_OPTS"] == "1"  # set for any TensorFlow it imports
        return
    from tensorflow.python.util import _pywrap_util_port

    assert _pywrap_util_port.IsMklEnabled()


def test_import_notices_are_dropped_and_everything_else_is_kept(capfd):
    with runtime.stderr_without(runtime.IMPORT_NOTICES):
        os.write(2, f"I0000 port.cc:153] {runtime.IMPORT_NOTICES[0]}. You may see\n".encode())
        os.write(2, b"E0000 a real problem\n")
        print("to stdout")
    out, err = capfd.readouterr()
    assert err == "E0000 a real problem\n"
    assert out == "to stdout\n"


def test_what_a_failing_import_wrote_is_kept(capfd):
    with pytest.raises(ImportError), runtime.stderr_without(runtime.IMPORT_NOTICES):
        os.write(2, b"cannot load libfoo.so\n")
        raise ImportError("libfoo")
    assert capfd.readouterr().err == "cannot load libfoo.so\n"
