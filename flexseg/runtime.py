"""Process settings the commands make before Keras starts; `prepare_process` is the one call.

Importing flexseg changes nothing in a process. flexseg's commands (and the test suite) call
`prepare_process()` first; a Python user who wants the same settings calls it before
importing Keras (or, for the XLA flag, at least before JAX first computes).
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from importlib import metadata

# XLA CPU settings for FlexUNet on JAX (docs/performance.md): no YNNPACK fusions (jaxlib 0.10
# hands convolutions, reductions and element-wise fusions to YNNPACK by default, and FlexUNet
# trains 1.4-1.6x slower that way than with XLA's own code), and not the scheduler that orders
# a step for concurrency (8-10% slower on the `small` benchmark model on 2 cores). Only for the
# jaxlib versions known to have both flags: XLA aborts on one it does not know.
YNN_FLAG = "--xla_cpu_experimental_ynn_fusion_type"
SCHEDULER_FLAG = "--xla_cpu_enable_concurrency_optimized_scheduler"
XLA_CPU_FLAGS = {YNN_FLAG: "", SCHEDULER_FLAG: "false"}
XLA_CPU_FLAGS_JAXLIB = ((0, 8, 1), (0, 11, 0))  # first version with the flags, first unchecked

# What TensorFlow's import writes to stderr past TF_CPP_MIN_LOG_LEVEL (absl logs before its
# level is set): a notice that oneDNN is on, twice, each after absl's own warning.
IMPORT_NOTICES = (
    "oneDNN custom operations are on",
    "All log messages before absl::InitializeLog() is called are written to STDERR",
)


def prepare_process() -> None:
    """Quiet TensorFlow's start-up, give it oneDNN on every CPU, and set XLA's CPU flags on JAX.

    Before TensorFlow is imported: `TF_CPP_MIN_LOG_LEVEL=2` (its C++ banner of CPU features and
    CUDA probing drowns the useful output) and `TF_ENABLE_ONEDNN_OPTS=1` (TensorFlow turns its
    oneDNN kernels on by itself only on CPUs with AVX-512 VNNI, bfloat16 or AMX units; on an
    AVX2 CPU its own kernels trained the demo model 3.3x slower: 2.0 against 0.6 s a step).
    `--xla_cpu_experimental_ynn_fusion_type=` and
    `--xla_cpu_enable_concurrency_optimized_scheduler=false` are appended to `XLA_FLAGS` when
    the Keras backend is JAX and jaxlib is 0.8.1-0.10.x (TensorFlow's XLA reads XLA_FLAGS too,
    so only on JAX). A user's own setting of any of them is left alone.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
    with stderr_without(IMPORT_NOTICES):
        import keras

    set_xla_cpu_flags(keras.backend.backend())


@contextlib.contextmanager
def stderr_without(notices: tuple[str, ...]):
    """Everything written to file descriptor 2 inside (C++ libraries included) goes to stderr
    afterwards, less the lines that contain one of `notices`; also when the body raises."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            lines = caught.read().decode(errors="replace").splitlines(keepends=True)
            kept = "".join(line for line in lines if not any(n in line for n in notices))
            if kept:
                sys.stderr.write(kept)
                sys.stderr.flush()


def jaxlib_version() -> tuple[int, ...] | None:
    """The installed jaxlib's (major, minor, patch), or None without jaxlib."""
    try:
        return tuple(int(part) for part in re.findall(r"\d+", metadata.version("jaxlib"))[:3])
    except metadata.PackageNotFoundError:
        return None


def set_xla_cpu_flags(backend: str) -> None:
    """Appends `XLA_CPU_FLAGS` to XLA_FLAGS for JAX, where jaxlib is known to have them; a
    flag already in XLA_FLAGS keeps the user's value."""
    flags = os.environ.get("XLA_FLAGS", "")
    version = jaxlib_version()
    if backend != "jax" or version is None:
        return
    if not XLA_CPU_FLAGS_JAXLIB[0] <= version < XLA_CPU_FLAGS_JAXLIB[1]:
        return
    added = [f"{flag}={value}" for flag, value in XLA_CPU_FLAGS.items() if flag not in flags]
    if added:
        os.environ["XLA_FLAGS"] = " ".join([flags, *added]).strip()
