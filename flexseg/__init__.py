"""flexseg: image segmentation training on Keras 3 (TensorFlow, JAX or PyTorch)."""

import os
import re
from importlib import metadata

# TensorFlow's C++ start-up banner (CPU features, CUDA probing) drowns the useful output;
# a user who wants it sets TF_CPP_MIN_LOG_LEVEL=0. Set before Keras imports TensorFlow.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

# XLA's CPU backend in jaxlib 0.10 hands convolutions, reductions and element-wise fusions to
# YNNPACK by default; FlexUNet trains 1.4-1.6x slower that way than with XLA's own code
# (docs/performance.md). XLA reads XLA_FLAGS when JAX first computes, so setting it here,
# before any model runs, takes effect. Only for the jaxlib versions known to have the flag:
# XLA aborts on one it does not know; and only for JAX, as TensorFlow's XLA reads XLA_FLAGS
# too. A user's own setting of the flag is left alone.
YNN_FLAG = "--xla_cpu_experimental_ynn_fusion_type"
YNN_FLAG_JAXLIB = ((0, 8, 1), (0, 11, 0))  # first version with the flag, first one not checked


def _jaxlib_version() -> tuple[int, ...] | None:
    try:
        return tuple(int(part) for part in re.findall(r"\d+", metadata.version("jaxlib"))[:3])
    except metadata.PackageNotFoundError:
        return None


def _turn_off_xla_cpu_ynnpack(backend: str) -> None:
    flags = os.environ.get("XLA_FLAGS", "")
    version = _jaxlib_version()
    if backend != "jax" or YNN_FLAG in flags or version is None:
        return
    if YNN_FLAG_JAXLIB[0] <= version < YNN_FLAG_JAXLIB[1]:
        os.environ["XLA_FLAGS"] = f"{flags} {YNN_FLAG}=".strip()


_turn_off_xla_cpu_ynnpack(keras.backend.backend())

__version__ = "0.1.0"
