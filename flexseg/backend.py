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


def cpu_has_bf16_matrix_units() -> bool:
    """Whether this CPU multiplies bfloat16 matrices in hardware (Intel AMX or AVX-512 BF16)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:  # not Linux: no cheap way to know, so assume not
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def gpu_compute_capability() -> tuple[int, int] | None:
    """(major, minor) CUDA compute capability of the first GPU, or None without one."""
    if not has_gpu():
        return None
    backend = name()
    if backend == "tensorflow":
        import tensorflow as tf

        details = tf.config.experimental.get_device_details(
            tf.config.list_physical_devices("GPU")[0]
        )
        return details.get("compute_capability")
    if backend == "jax":
        import jax

        major, minor = str(getattr(jax.devices()[0], "compute_capability", "0.0")).split(".")
        return int(major), int(minor)
    import torch

    return torch.cuda.get_device_capability(0)


def auto_precision() -> str:
    """The precision `trainer.precision=auto` picks, as measured (docs/performance.md).

    GPUs: tensor cores in 16 bits; mixed_bfloat16 from Ampere on (compute capability 8.0:
    float32's range, no loss scaling), mixed_float16 with loss scaling before. CPUs with
    bfloat16 matrix units: mixed_bfloat16 on TensorFlow and torch (1.7-2x faster FlexUNet
    training than float32); JAX's CPU convolutions gain nothing from it. Else float32.
    """
    capability = gpu_compute_capability()
    if capability is not None:
        return "mixed_bfloat16" if capability >= (8, 0) else "mixed_float16"
    if name() in ("tensorflow", "torch") and cpu_has_bf16_matrix_units():
        return "mixed_bfloat16"
    return "float32"
