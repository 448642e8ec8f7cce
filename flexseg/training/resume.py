"""Preemption-safe training: a resume state after every epoch, a clean stop on a signal.

`checkpoints/resume.npz` holds, written atomically after each epoch: the model's weights, the
state of the random generators dropout draws from, the optimizer's variables (step count and
learning rate included), the number of finished epochs and the state of the callbacks that
carry one (best checkpoint score, plateau reducer, early stopping). `trainer.resume=auto`
continues a run folder from it; the order of batches and the augmentation of every epoch
depend only on the seed and the epoch, so they continue too.
"""

from __future__ import annotations

import io
import json
import os
import signal
import zipfile
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np

from flexseg import backend
from flexseg.errors import DataError, PreemptedError

RESUME_FILE = "resume.npz"
# SLURM's `--signal` (USR1 by hand, USR2 from submitit) and the TERM of a preemption.
SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)


def _state_of(callback) -> dict | None:
    """The fields of a callback that must survive a restart."""
    if isinstance(callback, keras.callbacks.ReduceLROnPlateau):
        return {"wait": callback.wait, "best": callback.best, "cooldown": callback.cooldown_counter}
    if isinstance(callback, keras.callbacks.EarlyStopping):
        return {"wait": callback.wait, "best": callback.best, "best_epoch": callback.best_epoch}
    if hasattr(callback, "resume_state"):
        return callback.resume_state()
    return None


def _restore(callback, state: dict) -> None:
    if isinstance(callback, keras.callbacks.ReduceLROnPlateau):
        callback.wait, callback.best = state["wait"], state["best"]
        callback.cooldown_counter = state["cooldown"]
    elif isinstance(callback, keras.callbacks.EarlyStopping):
        callback.wait, callback.best = state["wait"], state["best"]
        callback.best_epoch = state["best_epoch"]
    else:
        callback.restore_state(state)


def _numbers(value):
    """JSON-safe copies of callback fields (numpy and backend scalars become floats)."""
    if isinstance(value, dict):
        return {k: _numbers(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_numbers(v) for v in value]
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return float(keras.ops.convert_to_numpy(value))


class ResumeState(keras.callbacks.Callback):
    """Writes the resume state after every epoch and, on resume, puts it back.

    Put it last among the callbacks: its `on_train_begin` restores the others after they
    reset themselves, and its `on_epoch_end` sees their state of that epoch. The backend's
    global random state is put back there too, after `fit` has built the model (a build that
    draws dropout masks on torch).
    """

    def __init__(
        self,
        folder: str | Path,
        callbacks: list,
        restored: tuple | None = None,
        write: bool = True,
    ):
        super().__init__()
        self.path = Path(folder) / RESUME_FILE
        self.write = write  # False in the processes other than 0, which only read it
        self.callbacks = callbacks
        self.restored = restored  # (meta, arrays) of read_resume_state

    def on_train_begin(self, logs=None):
        if self.restored is None:
            return
        meta, arrays = self.restored
        prefix = "global_rng_"
        if self.write:  # the other processes of a training keep dropout draws of their own
            backend.set_global_rng_state(
                {k.removeprefix(prefix): v for k, v in arrays.items() if k.startswith(prefix)}
            )
        states = meta["callbacks"]
        for i, callback in enumerate(self.callbacks):
            if str(i) in states:
                _restore(callback, states[str(i)])
            best = self.path.parent / "best.keras"  # early stopping's best is the best checkpoint
            if getattr(callback, "restore_best_weights", False) and best.is_file():
                callback.best_weights = keras.saving.load_model(best, compile=False).get_weights()

    def on_epoch_end(self, epoch, logs=None):
        if not self.write:
            return
        states = {}
        for i, callback in enumerate(self.callbacks):
            state = _state_of(callback)
            if state is not None:
                states[str(i)] = _numbers(state)
        meta = {"epoch": epoch + 1, "callbacks": states}
        numpy = keras.ops.convert_to_numpy
        arrays = {f"weight_{i}": numpy(v) for i, v in enumerate(self.model.weights)}
        arrays |= {f"rng_{i}": numpy(v) for i, v in enumerate(_rng_states(self.model))}
        arrays |= {f"global_rng_{k}": v for k, v in backend.global_rng_state().items()}
        optimizer = self.model.optimizer.variables
        arrays |= {f"optimizer_{i}": numpy(v) for i, v in enumerate(optimizer)}
        buffer = io.BytesIO()
        np.savez(buffer, meta=np.array(json.dumps(meta)), **arrays)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_bytes(buffer.getvalue())
        os.replace(tmp, self.path)


def _rng_states(model: keras.Model) -> list:
    """The model's random-generator states (dropout's seeds): variables that are not weights."""
    weights = {id(v) for v in model.weights}
    return [v for v in model.variables if id(v) not in weights]


def read_resume_state(folder: str | Path) -> tuple[dict, dict[str, np.ndarray]] | None:
    """(meta, arrays) of a run's resume state, or None when it has none."""
    path = Path(folder) / RESUME_FILE
    if not path.is_file():
        return None
    try:
        with np.load(path) as data:
            arrays = {k: data[k] for k in data.files}
        return json.loads(str(arrays.pop("meta"))), arrays
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
        raise DataError(
            f"the resume state {path} is damaged ({type(error).__name__}: {error}); the run "
            "cannot go on from it: train into a new folder (its best.keras and last.keras "
            "beside it are left as they are)."
        ) from error


def restore_model(model: keras.Model, arrays: dict[str, np.ndarray]) -> None:
    """Puts saved weights and optimizer variables back into a compiled model."""
    weights = [arrays[f"weight_{i}"] for i in range(len(model.weights))]
    for variable, value in zip(model.weights, weights, strict=True):
        variable.assign(value)
    for i, variable in enumerate(_rng_states(model)):
        variable.assign(arrays[f"rng_{i}"])
    model.optimizer.build(model.trainable_variables)
    for i, variable in enumerate(model.optimizer.variables):
        variable.assign(arrays[f"optimizer_{i}"])


class StopOnSignal(keras.callbacks.Callback):
    """On SIGTERM, SIGUSR1 or SIGUSR2 (SLURM's `--signal`), stops at the next batch boundary.

    There, before the epoch ends (so the resume state stays that of the last finished epoch:
    at most one epoch of work is lost), it passes the signal on to the handler that was
    installed before training, if any (submitit's, which requeues the job and exits), and
    otherwise raises `PreemptedError`. With `agree` (`Group.any`), the processes of one
    training stop at the same batch when any of them received the signal.
    """

    def __init__(self, run_dir: str | Path, agree: Callable[[bool], bool] = bool):
        super().__init__()
        self.run_dir = Path(run_dir)
        self.agree = agree
        self.received = None
        self.previous: dict = {}
        self.epoch = 0

    def on_train_begin(self, logs=None):
        try:
            for signum in SIGNALS:
                self.previous[signum] = signal.signal(signum, self._handle)
        except ValueError:  # not the main thread: signals cannot be caught here
            self.previous = {}

    def _handle(self, signum, frame):
        self.received = signum

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if not self.agree(self.received is not None):
            return
        signum = self.received
        name = signal.Signals(signum).name if signum else "a signal of another process"
        previous = self.previous.get(signum)
        self.restore_handlers()
        if callable(previous):
            previous(signum, None)
        raise PreemptedError(
            f"{name} received: training stopped at epoch {self.epoch + 1}, batch {batch + 1}; "
            f"{self.epoch} finished epoch(s) are kept in {self.run_dir}. Continue with: "
            f"flexseg-train <the same overrides> trainer.resume=auto hydra.run.dir={self.run_dir}"
        )

    def on_train_end(self, logs=None):
        self.restore_handlers()

    def restore_handlers(self) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        self.previous = {}
