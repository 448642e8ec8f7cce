"""Process settings the commands make before Keras starts; `prepare_process` is the one call.

Importing flexseg changes nothing in a process. flexseg's commands (and the test suite) call
`prepare_process()` first; a Python user who wants the same settings calls it before
importing Keras (or, for the XLA flag, at least before JAX first computes).
"""

from __future__ import annotations

import os
import re
from importlib import metadata

# XLA's CPU backend in jaxlib 0.10 hands convolutions, reductions and element-wise fusions to
# YNNPACK by default; FlexUNet trains 1.4-1.6x slower that way than with XLA's own code
# (docs/performance.md). Only for the jaxlib versions known to have the flag: XLA aborts on
# one it does not know.
YNN_FLAG = "--xla_cpu_experimental_ynn_fusion_type"
YNN_FLAG_JAXLIB = ((0, 8, 1), (0, 11, 0))  # first version with the flag, first one not checked


def prepare_process() -> None:
    """Quiet TensorFlow's start-up banner and turn XLA's CPU YNNPACK fusions off on JAX.

    `TF_CPP_MIN_LOG_LEVEL=2` unless set (TensorFlow's C++ banner of CPU features and CUDA
    probing drowns the useful output; it must be set before TensorFlow is imported), and
    `--xla_cpu_experimental_ynn_fusion_type=` appended to `XLA_FLAGS` when the Keras backend
    is JAX and jaxlib is 0.8.1-0.10.x (TensorFlow's XLA reads XLA_FLAGS too, so only on JAX).
    A user's own setting of either is left alone.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    turn_off_xla_cpu_ynnpack(keras.backend.backend())


def jaxlib_version() -> tuple[int, ...] | None:
    """The installed jaxlib's (major, minor, patch), or None without jaxlib."""
    try:
        return tuple(int(part) for part in re.findall(r"\d+", metadata.version("jaxlib"))[:3])
    except metadata.PackageNotFoundError:
        return None


def turn_off_xla_cpu_ynnpack(backend: str) -> None:
    """Adds the YNNPACK flag to XLA_FLAGS for JAX, where jaxlib is known to have it."""
    flags = os.environ.get("XLA_FLAGS", "")
    version = jaxlib_version()
    if backend != "jax" or YNN_FLAG in flags or version is None:
        return
    if YNN_FLAG_JAXLIB[0] <= version < YNN_FLAG_JAXLIB[1]:
        os.environ["XLA_FLAGS"] = f"{flags} {YNN_FLAG}=".strip()
