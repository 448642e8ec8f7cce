"""train(cfg): one training run from a config, into its own run directory."""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import keras
import numpy as np

from flexseg import backend
from flexseg.config import save_config
from flexseg.data.dataset import SegmentationDataset
from flexseg.errors import ConfigError
from flexseg.losses import build_loss
from flexseg.metrics import segmentation_metrics
from flexseg.runs import CHECKPOINTS, CONFIG_FILE, check_fresh, check_same_config, new_run_dir
from flexseg.training.callbacks import (
    Checkpoints,
    EpochPreview,
    EpochSchedule,
    HistoryFiles,
    StopOnNonFinite,
    TimeLimit,
)
from flexseg.training.resume import ResumeState, StopOnSignal, read_resume_state, restore_model

log = logging.getLogger("flexseg")
SCHEDULES = ("constant", "cosine", "step")
OPTIMIZERS = ("adam", "adamw")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16", "auto")
DISTRIBUTIONS = ("none", "data_parallel", "auto")


def build_optimizer(trainer: dict) -> keras.optimizers.Optimizer:
    """Adam or AdamW with the configured learning rate and optional gradient clipping."""
    name = trainer.get("optimizer", "adam")
    common = {"learning_rate": trainer["learning_rate"], "clipnorm": trainer.get("clipnorm")}
    if name == "adam":
        return keras.optimizers.Adam(**common)
    if name == "adamw":
        return keras.optimizers.AdamW(weight_decay=trainer.get("weight_decay", 1e-4), **common)
    raise ConfigError(f"trainer.optimizer must be one of {OPTIMIZERS}. Received: {name!r}")


def resolve_jit_compile(setting) -> bool | str:
    """`trainer.jit_compile`: true, false, or "auto" (measured per backend and device).

    On CPU, XLA made TensorFlow's FlexUNet training slower than its oneDNN kernels, and JAX
    always compiles; so "auto" means XLA only where it pays (JAX, and GPUs).
    """
    if isinstance(setting, bool):
        return setting
    if setting != "auto":
        raise ConfigError(f"trainer.jit_compile must be true, false or auto. Received: {setting!r}")
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


@contextlib.contextmanager
def distribution_scope(trainer: dict) -> Iterator[int]:
    """Builds and trains inside it to follow `trainer.distribution`; yields the replica count."""
    if resolve_distribution(trainer.get("distribution", "auto")) == "none":
        yield 1
        return
    with backend.data_parallel() as replicas:
        if trainer["batch_size"] % replicas:
            raise ConfigError(
                f"trainer.batch_size={trainer['batch_size']} does not split evenly over "
                f"{replicas} devices; use a multiple of {replicas} (each device gets an equal "
                "share of every batch)."
            )
        log.info("data parallel over %d devices: %s", replicas, ", ".join(backend.devices()))
        yield replicas


def check_trainer(trainer: dict) -> None:
    """Refuses trainer settings that compose but cannot work together."""
    schedule = trainer.get("schedule", "constant")
    if schedule not in SCHEDULES:
        raise ConfigError(f"trainer.schedule must be one of {SCHEDULES}. Received: {schedule!r}")
    if schedule != "constant" and trainer["reduce_lr"]["enabled"]:
        raise ConfigError(
            f"trainer.schedule={schedule} sets the learning rate every epoch; set "
            "trainer.reduce_lr.enabled=false to use it (both cannot steer the rate)."
        )
    if trainer.get("select_checkpoint", "best") not in ("best", "last"):
        raise ConfigError(
            "trainer.select_checkpoint must be best or last. Received: "
            f"{trainer['select_checkpoint']!r}"
        )
    precision = trainer.get("precision", "float32")
    if precision not in PRECISIONS:
        raise ConfigError(f"trainer.precision must be one of {PRECISIONS}. Received: {precision!r}")
    distribution = trainer.get("distribution", "auto")
    if distribution not in DISTRIBUTIONS:
        raise ConfigError(
            f"trainer.distribution must be one of {DISTRIBUTIONS}. Received: {distribution!r}"
        )
    fraction = trainer.get("foreground_fraction")
    if fraction is not None and not 0 < fraction <= 1:
        raise ConfigError(
            f"trainer.foreground_fraction must be in (0, 1] or null. Received: {fraction}"
        )


def build_callbacks(cfg: dict, run_dir: Path, datasets: dict) -> list:
    """The callbacks a trainer config asks for."""
    trainer = cfg["trainer"]
    check_trainer(trainer)
    monitor = trainer["monitor"] if "valid" in datasets else trainer["monitor"].removeprefix("val_")
    mode = "min" if monitor.endswith("loss") else "max"
    callbacks = [Checkpoints(run_dir / CHECKPOINTS, monitor, mode), StopOnNonFinite(run_dir)]
    schedule = trainer.get("schedule", "constant")
    reduce = trainer["reduce_lr"]
    if schedule != "constant":
        callbacks.append(
            EpochSchedule(
                trainer["learning_rate"],
                trainer["epochs"],
                schedule,
                trainer.get("warmup_epochs", 0),
                trainer.get("step_epochs", 30),
                trainer.get("step_gamma", 0.1),
                reduce.get("min_lr", 0.0),
            )
        )
    elif reduce["enabled"]:
        callbacks.append(
            keras.callbacks.ReduceLROnPlateau(
                monitor=monitor,
                factor=reduce["factor"],
                patience=reduce["patience"],
                min_lr=reduce["min_lr"],
                mode=mode,
                verbose=1,
            )
        )
    stop = trainer["early_stopping"]
    if stop["enabled"]:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor=monitor,
                patience=stop["patience"],
                mode=mode,
                restore_best_weights=stop["restore_best"],
                verbose=1,
            )
        )
    metric_names = [m.name for m in segmentation_metrics(cfg["dataset"]["num_classes"])]
    callbacks.append(HistoryFiles(run_dir, metric_names))
    preview_source = datasets.get("valid") or datasets.get("test")
    if trainer.get("preview_images", 0) and preview_source is not None:
        callbacks.append(_preview(preview_source, trainer["preview_images"], run_dir / "previews"))
    if trainer.get("tensorboard"):
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(run_dir / "tensorboard")))
    if trainer.get("max_minutes"):
        callbacks.append(TimeLimit(trainer["max_minutes"]))
    return callbacks


def _preview(dataset: SegmentationDataset, count: int, folder: Path) -> EpochPreview:
    """Fixed preview images: spread over the split, slices with foreground first."""
    loaded = [dataset.load(i) for i in range(len(dataset.samples))]
    with_fg = [i for i, (_, mask) in enumerate(loaded) if mask.any()]
    pool = with_fg if len(with_fg) >= count else list(range(len(loaded)))
    chosen = [pool[int(k)] for k in np.linspace(0, len(pool) - 1, min(count, len(pool)))]
    images = np.stack([loaded[i][0] for i in chosen])
    masks = np.stack([loaded[i][1] for i in chosen])
    return EpochPreview(folder, images, masks, [dataset.samples[i].name for i in chosen])


def train(cfg: dict) -> dict:
    """Trains the model a config describes and returns the run's summary.

    Writes into the run directory (`cfg["_run_dir_"]`, set by the command line, or a new
    `outputs/<dataset>/<time>`): `config.yaml`, `checkpoints/{best,last}.keras`,
    `history.csv`, `train_losses.csv`, `train_metrics.csv`, `plots/`, `previews/` and
    `train_summary.json`.

    Example:
    >>> from flexseg.config import load_config
    >>> summary = train(load_config(["trainer.epochs=2"]))
    """
    previous = keras.mixed_precision.global_policy()
    precision = cfg["trainer"].get("precision", "float32")
    if precision == "auto":
        precision = backend.auto_precision()
    keras.mixed_precision.set_global_policy(precision if precision in PRECISIONS else "float32")
    try:
        check_trainer(cfg["trainer"])
        with distribution_scope(cfg["trainer"]) as replicas:
            return _train(cfg, replicas)
    finally:
        keras.mixed_precision.set_global_policy(previous)


def _train(cfg: dict, replicas: int) -> dict:
    from flexseg.preflight import check

    run_dir = Path(cfg.get("_run_dir_") or new_run_dir(cfg))
    clean = {k: v for k, v in cfg.items() if not k.startswith("_")}
    restored = None
    if cfg["trainer"].get("resume", "never") == "auto":
        restored = read_resume_state(run_dir / CHECKPOINTS)
    if restored is None:
        check_fresh(run_dir)
    else:
        check_same_config(run_dir, clean)
    backend.set_random_seed(cfg.get("seed", 0))
    plan = check({**cfg, "_run_dir_": str(run_dir)})  # every problem, before any compute
    log.info("plan:\n%s", plan.describe())
    run_dir.mkdir(parents=True, exist_ok=True)
    if restored is None:
        save_config(clean, run_dir / CONFIG_FILE)

    trainer = cfg["trainer"]
    model, datasets = plan.model, plan.datasets
    from_logits = cfg["model"].get("output") == "logits"
    model.compile(
        optimizer=build_optimizer(trainer),
        loss=build_loss(cfg["loss"], cfg["dataset"]["num_classes"], from_logits),
        metrics=segmentation_metrics(cfg["dataset"]["num_classes"]),
        jit_compile=resolve_jit_compile(trainer.get("jit_compile", "auto")),
    )
    callbacks = build_callbacks(cfg, run_dir, datasets)
    history_files = next(c for c in callbacks if isinstance(c, HistoryFiles))
    initial_epoch = 0
    if restored is not None:
        meta, arrays = restored
        restore_model(model, arrays)
        initial_epoch = meta["epoch"]
        datasets["train"].epoch = initial_epoch  # batch order and augmentation go on from there
        history_files.load(initial_epoch)
        log.info("resuming %s after epoch %d of %d", run_dir, initial_epoch, trainer["epochs"])
    callbacks.append(StopOnSignal(run_dir))
    callbacks.append(ResumeState(run_dir / CHECKPOINTS, list(callbacks), restored))
    counts = {k: len(v) for k, v in plan.splits.items()}
    start = time.monotonic()
    model.fit(
        datasets["train"],
        validation_data=datasets.get("valid"),
        epochs=trainer["epochs"],
        initial_epoch=initial_epoch,
        steps_per_epoch=trainer.get("steps_per_epoch"),
        callbacks=callbacks,
        shuffle=False,  # the dataset shuffles itself, the same on every backend
        verbose=trainer.get("verbose", 1),
    )
    seconds = time.monotonic() - start
    checkpoints = next(c for c in callbacks if isinstance(c, Checkpoints))
    summary = {
        "run_dir": str(run_dir),
        "backend": backend.name(),
        "epochs_run": len(history_files.history.get("loss", [])),
        "best_epoch": checkpoints.best_epoch,
        "monitor": checkpoints.monitor,
        "best_value": checkpoints.sign * checkpoints.best if checkpoints.best_epoch else None,
        "train_seconds": round(seconds, 1),
        "samples": counts,
        "params": model.count_params(),
        "precision": model.dtype_policy.name,
        "replicas": replicas,
    }
    (run_dir / "train_summary.json").write_text(json.dumps(summary, indent=2))
    return summary
