"""Everything that depends on the Keras backend in use.

This is the only flexseg module that imports tensorflow, jax or torch; the rest of the
package speaks `keras.ops` only. Choose the backend with ``KERAS_BACKEND`` before Python
starts (``tensorflow``, ``jax`` or ``torch``); Keras reads it once, at import.
"""

from __future__ import annotations

import importlib

import keras

BACKENDS = ("tensorflow", "jax", "torch")


def name() -> str:
    """The active Keras backend: ``"tensorflow"``, ``"jax"`` or ``"torch"``."""
    return keras.backend.backend()


def version() -> str:
    """Version string of the active backend's framework."""
    return importlib.import_module(name()).__version__


def devices() -> list[str]:
    """Names of the devices the active backend computes on, accelerators first."""
    backend = name()
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_logical_devices("GPU")
        return [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
    if backend == "jax":
        import jax

        return [str(d) for d in jax.devices()]
    if backend == "torch":
        import torch

        if torch.cuda.is_available():
            return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
        return ["cpu"]
    raise ValueError(
        f"Unsupported Keras backend {backend!r}. Set KERAS_BACKEND to one of {BACKENDS}."
    )


def has_gpu() -> bool:
    """Whether the active backend computes on a GPU."""
    return any("GPU" in d.upper() or "CUDA" in d.upper() for d in devices())
