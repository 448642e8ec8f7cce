"""The processes of one training: how many there are, which one this is, where they meet.

Found before any framework starts, from (first that applies):

1. explicit settings, `trainer.cluster.num_processes`, `process_id` and `coordinator`;
2. `WORLD_SIZE`, `RANK`, `LOCAL_RANK`, `LOCAL_WORLD_SIZE`, `MASTER_ADDR`, `MASTER_PORT`, as
   `torchrun` and `flexseg-launch` set them;
3. a SLURM job step of several tasks (`srun`, or submitit's `tasks_per_node`): `SLURM_NTASKS`,
   `SLURM_PROCID`, `SLURM_LOCALID`, the first host of `SLURM_STEP_NODELIST`, and a port
   derived from `SLURM_JOB_ID`, so that every job (each job of a sweep too) meets on its own;
4. a job of several tasks of submitit's local executor (`hydra/launcher=submitit_local
   hydra.launcher.tasks_per_node=2`, to try a sweep of multi-process jobs on one machine).

Otherwise the training is one process.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from flexseg.errors import ConfigError

# SLURM jobs meet on PORT_BASE + job id % PORT_SPAN: below Linux's ephemeral ports (32768+).
PORT_BASE, PORT_SPAN = 12000, 20000


@dataclass(frozen=True)
class Processes:
    """Where this process stands among the processes of one training.

    Args:
        rank: this process, 0 to `count - 1`; process 0 writes the run's files.
        count: processes of the training (one per GPU, or per CPU device in a test).
        local_rank: this process among those on its machine (its GPU's index).
        local_count: processes on this machine that share its CPU cores.
        coordinator: "host:port" where the processes meet (process 0 listens there).
        source: where the numbers came from, for messages.
    """

    rank: int = 0
    count: int = 1
    local_rank: int = 0
    local_count: int = 1
    coordinator: str | None = None
    source: str = "one process"

    @property
    def several(self) -> bool:
        return self.count > 1

    @property
    def main(self) -> bool:
        """Whether this process writes the run's files."""
        return self.rank == 0

    @property
    def host(self) -> str:
        return self.coordinator.rsplit(":", 1)[0]

    @property
    def port(self) -> int:
        return int(self.coordinator.rsplit(":", 1)[1])


ONE_PROCESS = Processes()


def find_processes(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    environ: Mapping[str, str] | None = None,
) -> Processes:
    """The processes of this training (see the module's docstring for the order of sources).

    Raises:
        ConfigError: explicit settings that are incomplete or out of range, or an environment
            variable that is not a number.
    """
    env = os.environ if environ is None else environ
    if num_processes is not None or process_id is not None:
        return _explicit(coordinator, num_processes, process_id, env)
    if "WORLD_SIZE" in env and "RANK" in env:
        count = _number(env, "WORLD_SIZE")
        if count < 2:
            return ONE_PROCESS
        address = f"{env.get('MASTER_ADDR', '127.0.0.1')}:{env.get('MASTER_PORT', '29500')}"
        return Processes(
            rank=_number(env, "RANK"),
            count=count,
            local_rank=_number(env, "LOCAL_RANK", 0),
            local_count=_number(env, "LOCAL_WORLD_SIZE", 1),
            coordinator=coordinator or address,
            source="WORLD_SIZE and RANK (torchrun, flexseg-launch)",
        )
    if "SLURM_STEP_NODELIST" in env and _number(env, "SLURM_NTASKS", 1) > 1:
        port = PORT_BASE + _number(env, "SLURM_JOB_ID") % PORT_SPAN
        return Processes(
            rank=_number(env, "SLURM_PROCID"),
            count=_number(env, "SLURM_NTASKS"),
            local_rank=_number(env, "SLURM_LOCALID", 0),
            coordinator=coordinator or f"{first_host(env['SLURM_STEP_NODELIST'])}:{port}",
            source="SLURM (SLURM_NTASKS, SLURM_PROCID)",
        )
    if _number(env, "SUBMITIT_LOCAL_NTASKS", 1) > 1 and "SUBMITIT_LOCAL_GLOBALID" in env:
        port = PORT_BASE + _number(env, "SUBMITIT_LOCAL_JOB_ID") % PORT_SPAN
        return Processes(
            rank=_number(env, "SUBMITIT_LOCAL_GLOBALID"),
            count=_number(env, "SUBMITIT_LOCAL_NTASKS"),
            local_rank=_number(env, "SUBMITIT_LOCAL_LOCALID", 0),
            local_count=_number(env, "SUBMITIT_LOCAL_NTASKS"),
            coordinator=coordinator or f"127.0.0.1:{port}",
            source="submitit's local executor (SUBMITIT_LOCAL_NTASKS)",
        )
    return ONE_PROCESS


def check_backend(processes: Processes, backend: str) -> None:
    """Refuses a TensorFlow training of several processes, before anything is made."""
    if processes.several and backend == "tensorflow":
        raise ConfigError(
            f"this is process {processes.rank} of {processes.count} ({processes.source}), but "
            "Keras 3 cannot train TensorFlow over several processes (its "
            "MultiWorkerMirroredStrategy is broken under Keras 3: keras-team/keras issue "
            "20585). Train several processes with KERAS_BACKEND=jax or torch, or one "
            "TensorFlow process over the GPUs of one machine (trainer.distribution=auto)."
        )


def _explicit(coordinator, num_processes, process_id, env) -> Processes:
    missing = [
        f"trainer.cluster.{key}"
        for key, value in (
            ("coordinator", coordinator),
            ("num_processes", num_processes),
            ("process_id", process_id),
        )
        if value is None
    ]
    if missing:
        raise ConfigError(
            f"{', '.join(missing)} not set: a training of several processes started by hand "
            "needs trainer.cluster.coordinator (host:port of process 0), num_processes and "
            "process_id together (or none of them, under torchrun, flexseg-launch or SLURM)."
        )
    if not 0 <= process_id < num_processes:
        raise ConfigError(
            f"trainer.cluster.process_id={process_id} is not a process of "
            f"trainer.cluster.num_processes={num_processes}; use 0 to {num_processes - 1}."
        )
    if not re.fullmatch(r"[^\s:]+:\d+", coordinator):
        raise ConfigError(
            f"trainer.cluster.coordinator={coordinator!r} is not host:port, e.g. node01:12345."
        )
    if num_processes < 2:
        return ONE_PROCESS
    return Processes(
        rank=process_id,
        count=num_processes,
        local_rank=_number(env, "LOCAL_RANK", 0),
        coordinator=coordinator,
        source="trainer.cluster",
    )


def first_host(nodelist: str) -> str:
    """The first host of a SLURM node list: "gpu[07-09,12],cpu1" -> "gpu07"."""
    match = re.match(r"([^,\[]+)(?:\[([^,\-\]]+))?", nodelist.strip())
    if match is None:
        raise ConfigError(f"SLURM_STEP_NODELIST={nodelist!r} names no host.")
    prefix, first = match.groups()
    return prefix + (first or "")


def _number(env: Mapping[str, str], key: str, default: int | None = None) -> int:
    value = env.get(key)
    if value is None and default is not None:
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ConfigError(
            f"the environment variable {key}={value!r} is not a number; it tells flexseg how "
            "the processes of a training are numbered (unset it, or fix the launcher)."
        ) from None
