"""How a training runs on this machine: optimizer, precision, XLA compilation, distribution.

The `auto` settings are resolved here, once per training, by what was measured per backend
and device (docs/performance.md).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass

import keras

from flexseg import backend
from flexseg.config.schema import TrainerConfig
from flexseg.errors import ConfigError

log = logging.getLogger("flexseg")


def build_optimizer(trainer: TrainerConfig) -> keras.optimizers.Optimizer:
    """Adam or AdamW with the configured learning rate and optional gradient clipping."""
    common = {"learning_rate": trainer.learning_rate, "clipnorm": trainer.clipnorm}
    if trainer.optimizer == "adamw":
        return keras.optimizers.AdamW(weight_decay=trainer.weight_decay, **common)
    return keras.optimizers.Adam(**common)


def resolve_precision(setting: str) -> str:
    """`trainer.precision`: "auto" is `backend.auto_precision()`, the rest as given."""
    return backend.auto_precision() if setting == "auto" else setting


def resolve_jit_compile(setting: bool | str) -> bool:
    """`trainer.jit_compile`: true, false, or "auto" (measured per backend and device).

    On CPU, XLA made TensorFlow's FlexUNet training slower than its oneDNN kernels, and JAX
    always compiles; so "auto" means XLA only where it pays (JAX, and GPUs).
    """
    if isinstance(setting, bool):
        return setting
    if backend.name() == "jax":
        return True
    return backend.has_gpu() and backend.name() == "tensorflow"


def resolve_distribution(setting: str) -> str:
    """`trainer.distribution`: "auto" is data parallel where JAX or TensorFlow sees several
    devices (GPUs, or CPUs split on purpose), else none."""
    if setting != "auto":
        return setting
    if len(backend.devices()) < 2:
        return "none"
    if backend.name() == "torch":
        log.warning("torch trains on one device: use JAX or TensorFlow for data parallel training")
        return "none"
    return "data_parallel"


@dataclass(frozen=True)
class Setup:
    """The resolved `auto` settings of one training."""

    precision: str
    jit_compile: bool
    distribution: str

    @classmethod
    def of(cls, trainer: TrainerConfig) -> Setup:
        return cls(
            precision=resolve_precision(trainer.precision),
            jit_compile=resolve_jit_compile(trainer.jit_compile),
            distribution=resolve_distribution(trainer.distribution),
        )


@contextlib.contextmanager
def precision_policy(precision: str) -> Iterator[None]:
    """Keras' global dtype policy set to `precision` inside, restored afterwards."""
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(precision)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


@contextlib.contextmanager
def distribution_scope(distribution: str, batch_size: int) -> Iterator[int]:
    """Builds and trains inside it to follow `distribution`; yields the replica count."""
    if distribution == "none":
        yield 1
        return
    with backend.data_parallel() as replicas:
        if batch_size % replicas:
            raise ConfigError(
                f"trainer.batch_size={batch_size} does not split evenly over {replicas} "
                f"devices; use a multiple of {replicas} (each device gets an equal share of "
                "every batch)."
            )
        log.info("data parallel over %d devices: %s", replicas, ", ".join(backend.devices()))
        yield replicas
