"""train(cfg, run_dir): one training run from a config, into its own run directory."""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path

from flexseg import backend
from flexseg.config.files import save_config
from flexseg.config.parse import as_dict, parse
from flexseg.config.schema import TrainConfig
from flexseg.errors import DataError, PreemptedError, TrainingError
from flexseg.locks import FolderLock
from flexseg.metrics import segmentation_metrics
from flexseg.runs import CHECKPOINTS, CONFIG_FILE, check_fresh, check_same_config, new_run_dir
from flexseg.training.callbacks import (
    Checkpoints,
    HistoryFiles,
    StopOnNonFinite,
    build_callbacks,
    plain_lines,
)
from flexseg.training.distributed import Group
from flexseg.training.logs import MLflowLog, TensorBoardLog
from flexseg.training.plan import make_plan
from flexseg.training.resume import ResumeState, StopOnSignal, read_resume_state, restore_model
from flexseg.training.setup import (
    Setup,
    build_optimizer,
    distribution_scope,
    join,
    precision_policy,
)

log = logging.getLogger("flexseg")
FLEXSEG_ERRORS = (DataError, TrainingError, PreemptedError)  # raised by flexseg: no process lost


def train(cfg: TrainConfig | Mapping, run_dir: str | Path | None = None) -> dict:
    """Trains the model a config describes and returns the run's summary.

    Writes into `run_dir` (default: a new `outputs/<dataset>/<time>`): `config.yaml`,
    `checkpoints/{best,last,resume}`, `history.csv`, `train_losses.csv`,
    `train_metrics.csv`, `plots/`, `previews/` and `train_summary.json`. With
    `trainer.resume=auto` a run folder that holds a resume state continues from it.

    Args:
        cfg: a `TrainConfig`, or a dict of the same keys (checked by `flexseg.config.parse`).
        run_dir: the run's folder; it must not hold another run.

    Example:
    >>> from flexseg.config.compose import load_config
    >>> summary = train(load_config(["trainer.epochs=2"]), "outputs/try")
    """
    cfg = parse(TrainConfig, cfg)
    processes = join(cfg.trainer)  # several processes meet before anything computes
    setup = Setup.of(cfg.trainer, processes)
    with (
        precision_policy(setup.precision),
        distribution_scope(setup.distribution, cfg.trainer, processes) as group,
    ):
        run_dir = group.shared_path(Path(run_dir or new_run_dir(cfg)))  # process 0's
        with contextlib.ExitStack() as held:  # the run folder's lock, once it is made
            summary = _train(cfg, run_dir, setup, group, held)
    backend.leave_processes()
    return summary


def _train(
    cfg: TrainConfig, run_dir: Path, setup: Setup, group: Group, held: contextlib.ExitStack
) -> dict:
    trainer = cfg.trainer
    restored = None
    if trainer.resume == "auto":
        restored = read_resume_state(run_dir / CHECKPOINTS)
    if restored is None:
        check_fresh(run_dir)
    else:
        check_same_config(run_dir, cfg)
    group.barrier()  # every process looked at the folder before process 0 writes into it
    backend.set_random_seed(cfg.seed)
    # every problem, before any compute
    plan = make_plan(cfg, run_dir, "nothing was trained", group.processes)
    if group.main:
        log.info("plan:\n%s", plan.describe())
        run_dir.mkdir(parents=True, exist_ok=True)
        held.enter_context(FolderLock(run_dir, "training"))  # a second training is refused
        if restored is None:
            check_fresh(run_dir)  # again, now that no other training can start here
    if restored is None and group.main:
        save_config(as_dict(cfg), run_dir / CONFIG_FILE)

    model, datasets = plan.model, plan.datasets
    model.compile(
        optimizer=build_optimizer(trainer),
        loss=plan.loss,
        metrics=segmentation_metrics(cfg.dataset.num_classes),
        jit_compile=setup.jit_compile,
    )
    callbacks = build_callbacks(cfg, run_dir, datasets, group)
    history_files = next(c for c in callbacks if isinstance(c, HistoryFiles))
    initial_epoch = 0
    if restored is not None:
        meta, arrays = restored
        restore_model(model, arrays)
        initial_epoch = meta["epoch"]
        datasets["train"].epoch = initial_epoch  # batch order and augmentation go on from there
        history_files.load(initial_epoch)
        if group.main:
            log.info("resuming %s after epoch %d of %d", run_dir, initial_epoch, trainer.epochs)
    group.attach(model, cfg.seed)
    callbacks.append(StopOnSignal(run_dir, lambda received: group.soon(received, "signal")))
    callbacks.append(ResumeState(run_dir / CHECKPOINTS, list(callbacks), restored, group.main))
    loggers = [c for c in callbacks if isinstance(c, (TensorBoardLog, MLflowLog))]
    plain = plain_lines(trainer.verbose)
    start = time.monotonic()
    try:
        model.fit(
            datasets["train"],
            validation_data=datasets.get("valid"),
            epochs=trainer.epochs,
            initial_epoch=initial_epoch,
            steps_per_epoch=trainer.steps_per_epoch,
            callbacks=callbacks,
            shuffle=False,  # the dataset shuffles itself, the same on every backend
            # Keras' bar on a terminal; elsewhere the plain lines of callbacks.EpochLine
            verbose=1 if group.main and trainer.verbose and not plain else 0,
        )
    except BaseException as error:
        for logger in loggers:
            logger.close(failed=True)
        if not isinstance(error, Exception):
            raise
        # A file damaged or removed after the check, raised as it is or (TensorFlow) wrapped.
        read = next((d.read_error for d in datasets.values() if d.read_error), None)
        lost = None if isinstance(error, FLEXSEG_ERRORS) else group.explain(error)
        if lost is not None:
            raise lost from error
        if read is None and not isinstance(error, DataError):
            raise
        watch = next(c for c in callbacks if isinstance(c, StopOnNonFinite))
        raise TrainingError(
            f"{read or error} (read in epoch {watch.epoch + 1}); training stopped and "
            f"{watch.kept()}."
        ) from error
    seconds = time.monotonic() - start
    group.check_same_weights(model, "after training")
    checkpoints = next(c for c in callbacks if isinstance(c, Checkpoints))
    summary = {
        "run_dir": str(run_dir),
        "backend": backend.name(),
        "epochs_run": len(history_files.history.get("loss", [])),
        "best_epoch": checkpoints.best_epoch,
        "monitor": checkpoints.monitor,
        "best_value": checkpoints.sign * checkpoints.best if checkpoints.best_epoch else None,
        "train_seconds": round(seconds, 1),
        "samples": {split: len(samples) for split, samples in plan.splits.items()},
        "params": model.count_params(),
        "precision": model.dtype_policy.name,
        "replicas": group.replicas,
        "processes": group.processes.count,
        "logging_seconds": {logger.name: round(logger.seconds, 3) for logger in loggers},
    }
    if group.main:
        (run_dir / "train_summary.json").write_text(json.dumps(summary, indent=2))
    for logger in loggers:
        logger.close(summary=summary)
    return summary
