"""Callbacks of a training run: checkpoints, logs, plots, previews, schedules, time limit."""

from __future__ import annotations

import csv
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import keras
import numpy as np

from flexseg import backend
from flexseg.config.parse import as_dict, flat_keys
from flexseg.config.schema import TrainConfig
from flexseg.data.dataset import SegmentationDataset
from flexseg.errors import TrainingError
from flexseg.metrics import segmentation_metrics
from flexseg.plots import overlay, save_curves, save_grid
from flexseg.runs import CHECKPOINTS
from flexseg.training.distributed import Group
from flexseg.training.logs import MLflowLog, TensorBoardLog, epoch_values


def atomic_save(model: keras.Model, path: str | Path) -> Path:
    """Saves a model to `path` through a temporary file, so a crash never leaves half a file.

    The previous file at `path` stays intact until the new one is complete.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    try:
        with backend.tensorflow_left_out(), backend.this_process_alone():
            model.save(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


class Checkpoints(keras.callbacks.Callback):
    """Writes `last.keras` every epoch and `best.keras` when the monitored value improves
    (with `save=False`, in the processes other than 0, it only keeps track of the best)."""

    def __init__(self, folder: str | Path, monitor: str, mode: str, save: bool = True):
        super().__init__()
        self.folder = Path(folder)
        self.save = save
        self.monitor = monitor
        self.sign = 1.0 if mode == "max" else -1.0
        self.best = -math.inf
        self.best_epoch = None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.save:
            atomic_save(self.model, self.folder / "last.keras")
        value = logs.get(self.monitor)
        if value is not None and np.isfinite(value) and self.sign * value > self.best:
            self.best = self.sign * value
            self.best_epoch = epoch + 1
            if self.save:
                atomic_save(self.model, self.folder / "best.keras")

    def resume_state(self) -> dict:
        return {"best": self.best, "best_epoch": self.best_epoch}

    def restore_state(self, state: dict) -> None:
        self.best, self.best_epoch = state["best"], state["best_epoch"]


class StopOnNonFinite(keras.callbacks.Callback):
    """Stops training when the loss becomes NaN or infinite, naming the epoch and batch.

    It raises before the epoch ends, so no checkpoint of the broken weights is written and
    `last.keras` stays the last good one. `agree` (`Group.any`) makes the processes of one
    training stop together, when any of them sees it.
    """

    def __init__(self, run_dir: str | Path, agree: Callable[[bool], bool] = bool):
        super().__init__()
        self.run_dir = Path(run_dir)
        self.agree = agree
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        here = loss is not None and not np.isfinite(loss)
        if not self.agree(here):
            return
        value = float(loss) if here else "non-finite in another process"
        raise TrainingError(
            f"the training loss became {value} at epoch {self.epoch + 1}, batch "
            f"{batch + 1}; training stopped and {self.kept()}. Lower trainer.learning_rate, "
            "set trainer.clipnorm, or check that batch's images."
        )

    def kept(self) -> str:
        """Which checkpoint a training stopped in the current epoch leaves, in words."""
        last = self.run_dir / CHECKPOINTS / "last.keras"
        if not last.exists():
            return "no epoch finished, so there is no checkpoint"
        return f"the last good checkpoint is {last} (epoch {self.epoch})"


class HistoryFiles(keras.callbacks.Callback):
    """`history.csv` (every logged value), plus `train_losses.csv` and `train_metrics.csv`
    (losses and metrics apart, as the reference framework wrote them), and curve PNGs,
    all rewritten after every epoch (with `write=False`, in the processes other than 0, the
    history is only kept in memory)."""

    def __init__(self, run_dir: str | Path, metric_names: Sequence[str], write: bool = True):
        super().__init__()
        self.run_dir = Path(run_dir)
        self.write = write
        self.metric_names = list(metric_names)
        self.history: dict[str, list[float]] = {}

    def on_epoch_end(self, epoch, logs=None):
        for key, value in epoch_values(self.model, logs).items():
            self.history.setdefault(key, []).append(float(value))
        if not self.write:
            return
        keys = sorted(self.history)
        self._write("history.csv", keys)
        self._write("train_losses.csv", [k for k in keys if k.endswith("loss")])
        self._write("train_metrics.csv", [k for k in keys if not k.endswith("loss")])
        plots = self.run_dir / "plots"
        plots.mkdir(exist_ok=True)
        save_curves(plots / "loss.png", self.history, ["loss", "val_loss"], "loss")
        shown = [m for name in self.metric_names for m in (name, f"val_{name}")]
        save_curves(plots / "metrics.png", self.history, shown, "metrics")

    def load(self, epochs: int) -> None:
        """Takes up the first `epochs` rows of an existing `history.csv` (to resume a run)."""
        path = self.run_dir / "history.csv"
        if not path.is_file():
            return
        with path.open() as f:
            rows = list(csv.DictReader(f))[:epochs]
        self.history = {k: [float(r[k]) for r in rows] for k in (rows[0] if rows else {})}
        self.history.pop("epoch", None)

    def _write(self, name: str, keys: list[str]) -> None:
        epochs = len(next(iter(self.history.values())))
        tmp = self.run_dir / f".{name}.tmp"
        with tmp.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["epoch", *keys])
            for i in range(epochs):
                writer.writerow([i + 1, *(self.history[k][i] for k in keys)])
        os.replace(tmp, self.run_dir / name)


class EpochPreview(keras.callbacks.Callback):
    """After every epoch, predicts N fixed images and saves image | truth | prediction.

    With `save=False` (processes other than 0) it predicts and saves nothing: on JAX over
    several processes every process must take part in the prediction."""

    def __init__(
        self,
        folder: str | Path,
        images: np.ndarray,
        masks: np.ndarray,
        names: Sequence[str],
        save: bool = True,
    ):
        super().__init__()
        self.folder = Path(folder)
        self.save = save
        self.images = images  # (N, H, W, C) model inputs, or (N, X, Y, Z, C) patches
        self.masks = masks  # (N, H, W) class ids, or (N, X, Y, Z)
        self.names = list(names)
        # a patch is shown by its slice (along z) of the most foreground
        self.cuts = (
            [int((m > 0).sum(axis=(0, 1)).argmax()) for m in masks] if masks.ndim == 4 else None
        )

    def path(self, epoch: int) -> Path:
        """The picture of an epoch (0-based, as Keras counts)."""
        return self.folder / f"epoch_{epoch + 1:03d}.png"

    def on_epoch_end(self, epoch, logs=None):
        probs = keras.ops.convert_to_numpy(self.model(self.images, training=False))
        if not self.save:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        preds, images, masks = probs.argmax(-1), self.images, self.masks
        if self.cuts is not None:
            at = np.arange(len(self.cuts)), slice(None), slice(None), self.cuts
            preds, images, masks = preds[at], images[at], masks[at]
        rows = [
            [overlay(image, np.zeros_like(mask)), overlay(image, mask), overlay(image, pred)]
            for image, mask, pred in zip(images, masks, preds, strict=True)
        ]
        score = (logs or {}).get("val_fg_dice")
        title = f"epoch {epoch + 1}" + (f", val_fg_dice {score:.3f}" if score is not None else "")
        save_grid(
            self.path(epoch),
            rows,
            column_titles=["image", "ground truth", "prediction"],
            row_titles=self.names,
            title=title,
        )


class EpochSchedule(keras.callbacks.Callback):
    """Sets the learning rate at the start of each epoch: warm-up, then cosine or step decay.

    With `minutes` (the run's time limit), a cosine decay that would not end in time is
    fitted to it: from the third epoch on, the epochs that fit at the pace of those after the
    first become the decay's length, so a slower machine gets fewer epochs of the same
    schedule instead of being stopped half-way down it.
    """

    def __init__(
        self,
        base_lr: float,
        epochs: int,
        kind: str,
        warmup_epochs: int,
        step_epochs: int,
        step_gamma: float,
        min_lr: float,
        minutes: float | None = None,
    ):
        super().__init__()
        self.base_lr, self.epochs, self.kind = base_lr, epochs, kind
        self.warmup_epochs, self.step_epochs, self.step_gamma = (
            warmup_epochs,
            step_epochs,
            step_gamma,
        )
        self.min_lr = min_lr
        self.seconds = 60.0 * minutes if minutes and kind == "cosine" else None
        self.length = epochs  # the cosine decay's epochs
        self.start = self.first = self.first_ended = None  # clock and epochs since the start

    def rate(self, epoch: int) -> float:
        if epoch < self.warmup_epochs:
            return self.base_lr * (epoch + 1) / (self.warmup_epochs + 1)
        if self.kind == "step":
            return self.base_lr * self.step_gamma ** (epoch // self.step_epochs)
        span = max(1, self.length - self.warmup_epochs)
        progress = min(1.0, (epoch - self.warmup_epochs) / span)
        return self.min_lr + 0.5 * (self.base_lr - self.min_lr) * (1 + math.cos(math.pi * progress))

    def on_train_begin(self, logs=None):
        self.start, self.first, self.first_ended = time.monotonic(), None, None

    def on_epoch_begin(self, epoch, logs=None):
        if self.first is None:
            self.first = epoch  # after a resume, the clock and the count start here
        elif self.first_ended is None:
            self.first_ended = time.monotonic()
        if self.seconds and epoch > self.first + 1:
            self.fit_length(epoch)
        self.model.optimizer.learning_rate.assign(self.rate(epoch))

    def fit_length(self, epoch: int) -> None:
        """The decay's length: the epochs that fit in the time limit at the pace of the
        epochs after the first (which also compiles), at least up to this one."""
        first_s = self.first_ended - self.start
        pace = (time.monotonic() - self.first_ended) / (epoch - self.first - 1)
        # TimeLimit stops after the first epoch that ends past the limit
        fits = self.first + 1 + math.ceil(max(0.0, self.seconds - first_s) / pace)
        length = max(epoch + 1, min(self.epochs, fits))
        if length < self.epochs and self.length == self.epochs:
            print(
                f"trainer.max_minutes={self.seconds / 60:g} fits about {length} of "
                f"{self.epochs} epochs at {pace:.0f} s an epoch: the cosine decay is fitted "
                "to them"
            )
        self.length = length


def plain_lines(verbose: int, stream=None) -> bool:
    """Whether training reports one plain line per epoch instead of Keras' progress bar:
    `trainer.verbose=2`, or 1 (the default) where stdout is no terminal (a log file, a SLURM
    job). Keras would draw its bar with carriage returns and colour codes into the file."""
    stream = sys.stdout if stream is None else stream
    if verbose == 2:
        return True
    return verbose == 1 and not (hasattr(stream, "isatty") and stream.isatty())


class EpochLine(keras.callbacks.Callback):
    """One line at the end of every epoch, with no control characters: the epoch, its
    seconds and every logged value, e.g. `epoch 3/40 21.4 s: fg_dice 0.6123, loss 0.4021,
    val_fg_dice 0.5877, ..., learning_rate 0.00091`.
    """

    def __init__(self, epochs: int):
        super().__init__()
        self.epochs = epochs
        self.start = None

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.monotonic() - (self.start or time.monotonic())
        values = ", ".join(
            f"{name} {float(value):.4g}" for name, value in epoch_values(self.model, logs).items()
        )
        print(f"epoch {epoch + 1}/{self.epochs} {seconds:.1f} s: {values}", flush=True)


class TimeLimit(keras.callbacks.Callback):
    """Stops training after the first epoch that ends past `minutes` of wall time (in any
    process of the training, with `agree`)."""

    def __init__(self, minutes: float, agree: Callable[[bool], bool] = bool):
        super().__init__()
        self.seconds = 60.0 * minutes
        self.agree = agree
        self.start = None
        self.stopped_epoch = None

    def on_train_begin(self, logs=None):
        self.start = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        if self.agree(time.monotonic() - self.start > self.seconds):
            self.model.stop_training = True
            self.stopped_epoch = epoch + 1


def build_callbacks(
    cfg: TrainConfig,
    run_dir: Path,
    datasets: dict[str, SegmentationDataset],
    group: Group | None = None,
) -> list[keras.callbacks.Callback]:
    """The callbacks a training config asks for, in the order they run.

    The monitored value is `trainer.monitor` (`val_fg_dice`), or its training twin
    (`fg_dice`) when there is no validation split; a loss is minimised, the rest maximised.
    In a training of several processes (`group`), only process 0 writes; what each process
    sees apart (its own loss on torch, its clock) is agreed through the group.
    """
    trainer = cfg.trainer
    writes = group is None or group.main
    agree = group.any if group is not None and group.several else bool
    loss_agree = agree if group is not None and group.losses_apart else bool
    monitor = trainer.monitor if "valid" in datasets else trainer.monitor.removeprefix("val_")
    mode = "min" if monitor.endswith("loss") else "max"
    callbacks = [
        Checkpoints(run_dir / CHECKPOINTS, monitor, mode, save=writes),
        StopOnNonFinite(run_dir, loss_agree),
    ]
    reduce = trainer.reduce_lr
    if trainer.schedule != "constant":
        callbacks.append(
            EpochSchedule(
                trainer.learning_rate,
                trainer.epochs,
                trainer.schedule,
                trainer.warmup_epochs,
                trainer.step_epochs,
                trainer.step_gamma,
                reduce.min_lr,
                # processes would each fit it to their own clock: one process only
                trainer.max_minutes if group is None or not group.several else None,
            )
        )
    elif reduce.enabled:
        callbacks.append(
            keras.callbacks.ReduceLROnPlateau(
                monitor=monitor,
                factor=reduce.factor,
                patience=reduce.patience,
                min_lr=reduce.min_lr,
                mode=mode,
                verbose=1 if writes else 0,
            )
        )
    stop = trainer.early_stopping
    if stop.enabled:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor=monitor,
                patience=stop.patience,
                mode=mode,
                restore_best_weights=stop.restore_best,
                verbose=1 if writes else 0,
            )
        )
    metric_names = [m.name for m in segmentation_metrics(cfg.dataset.num_classes)]
    callbacks.append(HistoryFiles(run_dir, metric_names, write=writes))
    callbacks += _writers(cfg, run_dir, datasets, writes)
    if trainer.max_minutes:
        callbacks.append(TimeLimit(trainer.max_minutes, agree))
    if writes and plain_lines(trainer.verbose):
        callbacks.append(EpochLine(trainer.epochs))
    return callbacks


def _writers(
    cfg: TrainConfig, run_dir: Path, datasets: dict[str, SegmentationDataset], writes: bool
) -> list[keras.callbacks.Callback]:
    """The callbacks that write: previews (predicted in every process) and experiment logs."""
    trainer, callbacks = cfg.trainer, []
    preview_source = datasets.get("valid") or datasets.get("test")
    previews = None
    if trainer.preview_images and preview_source is not None:
        folder = run_dir / "previews"
        previews = preview(preview_source, trainer.preview_images, folder, writes)
        callbacks.append(previews)
    if not writes:
        return callbacks
    if cfg.logger.tensorboard:  # after the preview: it logs the epoch's preview image
        callbacks.append(TensorBoardLog(run_dir / "tensorboard", previews))
    if cfg.logger.mlflow:
        experiment = cfg.logger.experiment or cfg.dataset.name
        params = flat_keys(as_dict(cfg))
        callbacks.append(MLflowLog(run_dir, params, cfg.logger.tracking_uri, experiment))
    return callbacks


def preview(
    dataset: SegmentationDataset, count: int, folder: Path, save: bool = True
) -> EpochPreview:
    """Fixed preview images: spread over the split, slices with foreground first."""
    loaded = [dataset.load(i) for i in range(len(dataset.samples))]
    with_fg = [i for i, (_, mask) in enumerate(loaded) if mask.any()]
    pool = with_fg if len(with_fg) >= count else list(range(len(loaded)))
    chosen = [pool[int(k)] for k in np.linspace(0, len(pool) - 1, min(count, len(pool)))]
    images = np.stack([loaded[i][0] for i in chosen])
    masks = np.stack([loaded[i][1] for i in chosen])
    names = [dataset.samples[i].name for i in chosen]
    return EpochPreview(folder, images, masks, names, save)
