"""Loader worker processes: batches decoded and augmented beside the training process.

Threads share one interpreter lock and PNG decoding and albumentations hold it much of the
time, so the loader uses processes. `LoaderPool` starts them fresh (the `spawn` method: no
copy of a framework's threads or device state) with the batch makers of every split; each
worker computes whole batches (`Batches.batch`, a function of the epoch and index only, so
the worker count changes nothing in the data) and writes them into a shared-memory slot,
from which the training process copies them once: no pickling of arrays. At most `depth`
batches are in flight or waiting (the bounded prefetch queue).
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import queue
import shutil
import signal
import sys
import threading
import traceback
import weakref
from collections.abc import Mapping
from typing import Any

import cv2
import numpy as np

from flexseg.data.cache import scratch_dir
from flexseg.errors import ConfigError, DataError

_POLL_S = 1.0  # how often a waiting worker or trainer checks that the other side lives


def usable_cores() -> int:
    """The cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def resolve_workers(setting: int | str, sharing: int = 1) -> int:
    """`trainer.workers`: a count, or `"auto"`: the cores this process may use, divided among
    the `sharing` training processes that may use the same cores, minus one (for the
    training process). 0 loads in the training process itself."""
    if setting == "auto":
        return max(usable_cores() // max(sharing, 1) - 1, 0)
    if isinstance(setting, bool) or not isinstance(setting, int) or setting < 0:
        raise ConfigError(f"trainer.workers must be auto or an integer >= 0. Received: {setting!r}")
    return setting


class LoaderPool:
    """Worker processes that compute the batches of several named batch makers.

    Args:
        workers: processes to start (at the first `get`).
        prefetch: batches each worker may have in flight or waiting.

    Example:
    >>> pool = LoaderPool(workers=2)
    >>> pool.add("train", batches)  # a flexseg.data.batches.Batches
    >>> images, masks = pool.get("train", epoch=0, index=0)
    """

    def __init__(self, workers: int, prefetch: int = 2):
        if workers < 1 or prefetch < 1:
            raise ConfigError(
                f"a loader pool needs workers >= 1 and prefetch >= 1. Received: "
                f"workers={workers}, prefetch={prefetch}"
            )
        self.workers = workers
        self.depth = workers * prefetch
        self._makers: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._processes: list = []
        self._inflight: dict[tuple, int] = {}  # (name, epoch, index) -> slot
        self._ready: dict[tuple, Any] = {}  # (name, epoch, index) -> batch or exception
        self._free: list[int] = []
        self._received = False

    def add(self, name: str, batches: Any) -> None:
        """Registers a batch maker (before the first `get`)."""
        if self._processes:
            raise RuntimeError("add every batch maker before the pool starts")
        self._makers[name] = batches

    def get(self, name: str, epoch: int, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Batch `index` of epoch `epoch` of `name`; the next ones are queued behind it.

        Raises:
            DataError: a file of the batch cannot be read, or a worker process died.
        """
        key = (name, epoch, index)
        with self._lock:
            if not self._processes:
                self._start()
            for old in [k for k in self._ready if k[0] == name]:
                if old[1] != epoch or old[2] < index:  # a batch that will not be asked for
                    del self._ready[old]
            while key not in self._ready:
                self._submit(name, epoch, index)
                self._receive()
            batch = self._ready.pop(key)
            self._submit(name, epoch, index + 1)
        if isinstance(batch, BaseException):
            raise batch
        return batch

    def _submit(self, name: str, epoch: int, index: int) -> None:
        """Queues batch `index` (whenever a slot is free) and the ones after it (while fewer
        than `depth` are in flight or waiting)."""
        for i in range(index, min(len(self._makers[name]), index + self.depth)):
            key = (name, epoch, i)
            if key in self._ready or key in self._inflight:
                continue
            full = len(self._ready) + len(self._inflight) >= self.depth
            if not self._free or (full and i > index):
                return
            slot = self._free.pop()
            self._inflight[key] = slot
            self._tasks.put((*key, slot))

    def _receive(self) -> None:
        try:
            key, kind, payload = self._results.get(timeout=_POLL_S)
        except queue.Empty:
            self._check_alive()
            return
        slot = self._inflight.pop(key)
        self._received = True
        if kind == "slot":
            shapes, at = payload, slot * self._slot_bytes
            batch = []
            for shape in shapes:
                count = int(np.prod(shape))
                batch.append(np.frombuffer(self._slots, np.float32, count, at).reshape(shape))
                at += count * 4
            payload = tuple(array.copy() for array in batch)
        elif kind == "crash":
            failed = f"a loader worker failed on batch {key[2]} of {key[0]}"
            payload = RuntimeError(f"{failed}:\n{payload}")
        self._free.append(slot)
        self._ready[key] = payload

    def _check_alive(self) -> None:
        for rank, process in enumerate(self._processes):
            if process.exitcode is not None:
                code = process.exitcode
                how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
                hint = " (out of memory?)" if code == -signal.SIGKILL else ""
                if code == 1 and not self._received:
                    # Each worker imports the program's main module, as Python's spawn does.
                    hint = (
                        " before it loaded anything (its error is printed above); in a script "
                        'of your own, put the code under `if __name__ == "__main__":`'
                    )
                self.close()
                raise DataError(
                    f"loader worker {rank + 1} of {self.workers} stopped with {how}{hint}; "
                    "lower trainer.workers or trainer.batch_size, or set trainer.workers=0 "
                    "to load in the training process."
                )

    def _start(self) -> None:
        sizes = [maker.batch_nbytes() for maker in self._makers.values()]
        self._slot_bytes = max(sizes) if None not in sizes else 0
        self._folder = path = None
        self._slots = np.zeros(0, np.uint8)
        if self._slot_bytes:
            self._folder = scratch_dir("batches", self.depth * self._slot_bytes)
            path = str(self._folder / "slots.bin")
            self._slots = np.memmap(path, np.uint8, "w+", shape=(self.depth * self._slot_bytes,))
        self._free = list(range(self.depth))
        context = multiprocessing.get_context("spawn")
        self._tasks, self._results = context.Queue(), context.Queue()
        blob = pickle.dumps(self._makers, protocol=pickle.HIGHEST_PROTOCOL)
        for _ in range(self.workers):
            process = context.Process(
                target=_serve,
                args=(blob, self._tasks, self._results, path, self._slot_bytes, os.getpid()),
                daemon=True,
            )
            process.start()
            self._processes.append(process)
        self._finalizer = weakref.finalize(
            self, _shutdown, self._processes, self._tasks, self._folder
        )

    def close(self) -> None:
        """Stops the worker processes and frees the shared memory (also done at exit)."""
        if self._processes:
            self._finalizer()
            self._processes = []
            self._inflight.clear()
            self._ready.clear()

    def __getstate__(self) -> dict:
        raise TypeError("a LoaderPool belongs to the process that started it")


def _shutdown(processes: list, tasks: Any, folder: Any) -> None:
    for _ in processes:
        tasks.put(None)
    for process in processes:
        process.join(timeout=2)
        if process.is_alive():
            process.terminate()
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)


def _serve(
    blob: bytes, tasks: Any, results: Any, path: str | None, slot_bytes: int, parent: int
) -> None:
    """A worker process: computes the batches asked for until told to stop or orphaned."""
    # albumentations imports torch when it is installed, for transforms that return tensors;
    # batches are numpy arrays, so a worker spares itself that import (~250 MiB, 2.5 s).
    sys.modules.setdefault("torch", None)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the training process's to handle
    # One thread each: the workers are the parallelism, and OpenCV's own threads would take
    # cores from the other workers and from training.
    cv2.setNumThreads(1)
    results.cancel_join_thread()  # an orphaned worker exits without waiting for a reader
    makers: Mapping[str, Any] = pickle.loads(blob)
    slots = np.memmap(path, np.uint8, "r+") if path else None
    while True:
        try:
            task = tasks.get(timeout=_POLL_S)
        except queue.Empty:
            if os.getppid() != parent:  # the training process is gone
                return
            continue
        if task is None:
            return
        name, epoch, index, slot = task
        key = (name, epoch, index)
        try:
            batch = makers[name].batch(epoch, index)
        except DataError as error:
            results.put((key, "error", error))
            continue
        except Exception:  # noqa: BLE001 (sent to the training process, which raises it)
            results.put((key, "crash", traceback.format_exc()))
            continue
        if slots is not None and sum(a.nbytes for a in batch) <= slot_bytes:
            at = slot * slot_bytes
            for array in batch:
                flat = np.ascontiguousarray(array, np.float32).view(np.uint8).ravel()
                slots[at : at + array.nbytes] = flat
                at += array.nbytes
            results.put((key, "slot", [a.shape for a in batch]))
        else:
            results.put((key, "data", batch))
