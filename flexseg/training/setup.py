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
from flexseg.cluster import ONE_PROCESS, Processes, find_processes
from flexseg.config.schema import TrainerConfig
from flexseg.errors import ConfigError
from flexseg.training.distributed import Group, first_line

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


def resolve_distribution(setting: str, processes: Processes = ONE_PROCESS) -> str:
    """`trainer.distribution`: "auto" is data parallel when several processes train together
    (one per GPU: torch or JAX), or where JAX or TensorFlow sees several devices in its one
    process (GPUs, or CPUs split on purpose); else none."""
    if processes.several:
        if setting == "none":
            raise ConfigError(
                f"trainer.distribution=none, but this is process {processes.rank} of "
                f"{processes.count} ({processes.source}); set trainer.distribution=auto, or "
                "start one process."
            )
        return "data_parallel"
    if setting != "auto":
        return setting
    count = len(backend.devices())
    if count < 2:
        return "none"
    if backend.name() == "torch":
        log.warning(
            "torch trains one process per GPU: flexseg-launch --nproc %d train ... uses all %d "
            "(this training uses one)",
            count,
            count,
        )
        return "none"
    return "data_parallel"


@dataclass(frozen=True)
class Setup:
    """The resolved `auto` settings of one training."""

    precision: str
    jit_compile: bool
    distribution: str

    @classmethod
    def of(cls, trainer: TrainerConfig, processes: Processes = ONE_PROCESS) -> Setup:
        return cls(
            precision=resolve_precision(trainer.precision),
            jit_compile=resolve_jit_compile(trainer.jit_compile),
            distribution=resolve_distribution(trainer.distribution, processes),
        )


@contextlib.contextmanager
def precision_policy(precision: str) -> Iterator[None]:
    """Keras' global dtype policy set to `precision` inside, restored afterwards."""
    policy = keras.mixed_precision
    with backend.swapped(policy.global_policy, policy.set_global_policy, precision):
        yield


def join(trainer: TrainerConfig) -> Processes:
    """Finds the processes of this training and, when there are several, connects them
    (before the backend's first computation: JAX allows no other order)."""
    cluster = trainer.cluster
    processes = find_processes(cluster.coordinator, cluster.num_processes, cluster.process_id)
    if processes.several:
        backend.join_processes(
            processes.rank,
            processes.count,
            processes.local_rank,
            processes.coordinator,
            cluster.timeout_s,
        )
    return processes


@contextlib.contextmanager
def distribution_scope(
    distribution: str, trainer: TrainerConfig, processes: Processes = ONE_PROCESS
) -> Iterator[Group]:
    """Builds and trains inside it to follow `distribution`; yields the processes' `Group`."""
    if distribution == "none":
        yield Group(processes, 1, trainer.cluster)
        return
    batch_size = trainer.batch_size
    with backend.data_parallel(processes.count) as replicas:
        if batch_size % replicas or batch_size % processes.count:
            raise ConfigError(
                f"trainer.batch_size={batch_size} does not split evenly over {replicas} "
                f"devices; use a multiple of {replicas} (each device gets an equal share of "
                "every batch)."
            )
        where = f" in {processes.count} processes" if processes.several else ""
        log.info(
            "data parallel over %d devices%s: %s", replicas, where, ", ".join(backend.devices())
        )
        group = Group(processes, replicas, trainer.cluster)
        group.start_watch()
        try:
            yield group
        except BaseException as error:
            group.leave(f"{type(error).__name__}: {first_line(error)}")
            raise
        group.leave()
