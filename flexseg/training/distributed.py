"""Training over several processes: the glue between Keras' `fit` and the engines that do it.

One process per device (GPU), started by `flexseg-launch`, `torchrun` or SLURM and found by
`flexseg.cluster.find_processes`; `torch.distributed` or JAX's distributed runtime connects
them (`flexseg.backend.join_processes`). What this module adds:

- torch: each gradient is averaged over the processes before every optimizer update (a
  wrapper of the optimizer's `apply`, one collective per step), and the metric states of
  an epoch (loss sums, TP/FP/FN counts) are summed over the processes before Keras derives
  the epoch's values from them. JAX: Keras' `DataParallel` over the devices of every process
  does both inside its compiled step.
- Every backend: the same weights at the start (torch: process 0's) and a check that every
  process ends with the same; the flags that stop a training (a signal, a non-finite loss
  on torch, the time limit) agreed, so all processes stop at the same batch or epoch;
  liveness beats through the processes' shared store, so that a lost process is named and
  the others stop within `trainer.cluster.lost_after_s`.

The loader gives each process its own part of every batch (`SegmentationDataset`'s `shard`)
and only process 0 writes the run's files (`flexseg.training.train`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from pathlib import Path

import keras
import numpy as np

from flexseg import backend
from flexseg.cluster import Processes
from flexseg.config.schema import ClusterConfig
from flexseg.errors import TrainingError

log = logging.getLogger("flexseg")

BEAT_S = 1.0  # seconds between liveness beats
_PATH_BYTES = 4096  # room for the run folder's path when process 0 tells the others


class Group:
    """The processes (and replicas) of one training, and what they must agree on.

    Args:
        processes: this process among the training's processes.
        replicas: the model's copies that share each batch (devices over all processes).
        cluster: `trainer.cluster`, for the liveness limit.
    """

    def __init__(self, processes: Processes, replicas: int, cluster: ClusterConfig):
        self.processes = processes
        self.replicas = replicas
        self.lost_after_s = cluster.lost_after_s
        self._stop = threading.Event()
        self._watch = None
        self._calls: dict[str, int] = {}  # of `soon`, per name
        self._stop_at: dict[str, int] = {}

    @property
    def several(self) -> bool:
        return self.processes.several

    @property
    def main(self) -> bool:
        """Whether this process writes the run's files."""
        return self.processes.main

    @property
    def shard(self) -> tuple[int, int]:
        """(this process, processes): which part of every batch this process loads."""
        return self.processes.rank, self.processes.count

    @property
    def losses_apart(self) -> bool:
        """Whether each process computes the loss of its own part of a batch (torch); JAX's
        step computes that of the whole batch, the same in every process."""
        return self.several and backend.name() == "torch"

    def any(self, flag: bool) -> bool:
        """Whether `flag` is true in any process (a collective: every process calls it)."""
        if not self.several:
            return flag
        return bool(backend.all_sum(np.array([float(flag)]))[0] > 0)

    def soon(self, flag: bool, name: str) -> bool:
        """Whether to stop here: true in every process at the same call, the second call after
        the first at which any process passed `flag=True`; false until then.

        Every process calls it at each batch; the processes of a data-parallel training are
        never more than one batch apart (each step waits for all), so a stop two calls ahead
        is still ahead of all of them. It costs one look into the processes' shared store per
        call, where a collective costs a quarter of a second on JAX's CPU backend.
        """
        if not self.several:
            return flag
        calls = self._calls[name] = self._calls.get(name, 0) + 1
        key = f"flexseg/{name}/stop_at"
        if name not in self._stop_at:
            if flag:
                self._stop_at[name] = int(backend.store_set_once(key, str(calls + 2)))
            elif (value := backend.store_get(key)) is not None:
                self._stop_at[name] = int(value)
        return self._stop_at.get(name) == calls

    def barrier(self) -> None:
        """Returns when every process called it."""
        self.any(False)

    def shared_path(self, path: Path) -> Path:
        """Process 0's `path`, in every process (the run folder Hydra made there)."""
        if not self.several:
            return path
        data = np.zeros(_PATH_BYTES, np.uint8)
        encoded = str(path.resolve() if self.main else path).encode()[:_PATH_BYTES]
        data[: len(encoded)] = np.frombuffer(encoded, np.uint8)
        shared = backend.broadcast_from_first(data)
        return Path(bytes(shared[shared > 0]).decode())

    # --- the model -------------------------------------------------------------------------

    def attach(self, model: keras.Model, seed: int) -> None:
        """Starts every process from process 0's weights; on torch, averages gradients and
        sums epoch metrics over the processes (see the module's docstring)."""
        if not self.several or backend.name() != "torch":
            return  # JAX: each variable is made equal in every process (JAX checks it)
        self._assign(model, backend.broadcast_from_first(_flat(model.weights)))
        backend.seed_global_rng(seed * 1_000_003 + self.processes.rank)  # own dropout draws
        optimizer = model.optimizer
        apply = optimizer.apply

        def apply_averaged(gradients, trainable_variables=None):
            backend.average_gradients(gradients)
            return apply(gradients, trainable_variables)

        optimizer.apply = apply_averaged
        own_results = model._get_metrics_result_or_logs

        def results_over_processes(logs):
            own = own_results(logs)
            if own is logs:  # not the model's metrics: nothing to sum
                return logs
            return summed_results(model)

        model._get_metrics_result_or_logs = results_over_processes

    def check_same_weights(self, model: keras.Model, when: str) -> None:
        """Raises TrainingError in every process unless all hold process 0's weights."""
        if not self.several:
            return
        mine = _flat(model.weights)
        first = backend.broadcast_from_first(mine)
        if self.any(not np.array_equal(mine, first)):
            raise TrainingError(
                f"the processes hold different weights {when}; the training is not data "
                "parallel (a custom layer outside the model's weights, or a process that "
                "skipped an update)."
            )
        log.info("the %d processes hold the same weights %s", self.processes.count, when)

    def _assign(self, model: keras.Model, flat: np.ndarray) -> None:
        for variable, value in zip(model.weights, _unflat(flat, model.weights), strict=True):
            variable.assign(value.astype(keras.backend.standardize_dtype(variable.dtype)))

    # --- liveness --------------------------------------------------------------------------

    def start_watch(self) -> None:
        """Beats for this process and watches the others' beats in a thread."""
        if self.several and self._watch is None:
            self._watch = threading.Thread(target=self._beat_and_watch, daemon=True)
            self._watch.start()

    def leave(self, failure: str | None = None) -> None:
        """Tells the others this process is done (or failed, and why), stops beating."""
        if not self.several:
            return
        self._stop.set()
        if self._watch is not None:  # a daemon thread still inside a store call when Python
            self._watch.join(timeout=10 * BEAT_S)  # exits aborts the process
        with contextlib.suppress(Exception):  # the store's process is gone: nobody to tell
            backend.store_set(_key("left", self.processes.rank), failure or "")

    def lost(self, wait_s: float = 4 * BEAT_S) -> list[str]:
        """The other processes that stopped, each with what is known of why (after `wait_s`
        of watching their beats)."""
        others = [r for r in range(self.processes.count) if r != self.processes.rank]
        try:
            before = {r: backend.store_add(_key("beat", r), 0) for r in others}
            time.sleep(wait_s)
            found = []
            for r in others:
                left = backend.store_get(_key("left", r))
                if left:
                    found.append(f"process {r} ({left})")
                elif left is None and backend.store_add(_key("beat", r), 0) == before[r]:
                    found.append(f"process {r} (no sign of life for {wait_s:.0f} s)")
            return found
        except Exception:  # the store lives in process 0
            return ["process 0 (it holds the processes' store, which stopped answering)"]

    def explain(self, error: BaseException) -> TrainingError | None:
        """A TrainingError naming the lost processes, when `error` came from losing one."""
        if not self.several:
            return None
        lost = self.lost()
        if not lost:
            return None
        message = (
            f"process {self.processes.rank} of {self.processes.count} stopped: lost "
            f"{', '.join(lost)}; {type(error).__name__}: {first_line(error)}"
        )
        if backend.name() == "jax":  # its runtime would wait at exit for the lost process,
            _stop_process(message)  # until its heartbeat timeout, and then abort
        return TrainingError(message)

    def _beat_and_watch(self) -> None:
        rank, count = self.processes.rank, self.processes.count
        now = time.monotonic()
        changed = {r: (-1, now) for r in range(count) if r != rank}  # beats seen, since when
        failed_since: dict[int, float] = {}
        answered = now  # the last time the store answered
        while not self._stop.wait(BEAT_S):
            now = time.monotonic()
            try:
                backend.store_add(_key("beat", rank), 1)
                for r, (seen, since) in changed.items():
                    left = backend.store_get(_key("left", r))
                    if left:  # it failed: its error reaches this process's training first,
                        if now - failed_since.setdefault(r, now) > self.lost_after_s:
                            _stop_process(
                                f"process {rank} of {count} stopped: process {r} failed ({left})"
                            )
                        continue  # unless that waits in a collective
                    if left is not None:  # it finished
                        continue
                    beats = backend.store_add(_key("beat", r), 0)
                    if beats != seen:
                        changed[r] = (beats, now)
                    elif now - since > self.lost_after_s:
                        _stop_process(
                            f"process {rank} of {count} stopped: lost process {r}, no sign "
                            f"of life for {self.lost_after_s:.0f} s (trainer.cluster."
                            "lost_after_s)"
                        )
                answered = now
            except Exception:
                if self._stop.is_set():
                    return
                if now - answered > self.lost_after_s:
                    _stop_process(
                        f"process {rank} of {count} stopped: lost process 0, whose store stopped "
                        f"answering {self.lost_after_s:.0f} s ago"
                    )


def summed_results(model: keras.Model) -> dict:
    """The model's metric values from their states summed over the processes (losses are
    sums and counts, confusion metrics TP/FP/FN counts: sums of sums are exact)."""
    states = [v for metric in model.metrics for v in metric.variables]
    summed = iter(_unflat(backend.all_sum(_flat(states)), states))
    results = {}
    for metric in model.metrics:
        values = [next(summed).astype("float32") for _ in metric.variables]
        result = metric.stateless_result(values)
        if isinstance(result, dict):
            results.update(result)
        else:
            results[metric.name] = result
    return results


def first_line(error: BaseException, limit: int = 200) -> str:
    """The start of an error's message, for a one-line report."""
    text = str(error)
    return text.splitlines()[0][:limit] if text else ""


def _flat(variables) -> np.ndarray:
    if not variables:
        return np.zeros(0, np.float64)
    return np.concatenate(
        [np.asarray(keras.ops.convert_to_numpy(v), np.float64).ravel() for v in variables]
    )


def _unflat(flat: np.ndarray, variables) -> list[np.ndarray]:
    """`_flat`'s vector cut back into arrays of the variables' shapes."""
    sizes = [int(np.prod(v.shape)) for v in variables]
    parts = np.split(flat, np.cumsum(sizes)[:-1]) if sizes else []
    return [part.reshape(v.shape) for part, v in zip(parts, variables, strict=True)]


def _key(kind: str, rank: int) -> str:
    return f"flexseg/{kind}/{rank}"


def _stop_process(message: str) -> None:
    """Ends this process from the watching thread: the training thread may be stuck in a
    collective that would wait for the lost process until its timeout."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    os._exit(2)
