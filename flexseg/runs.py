"""Run directories: where a training run keeps its config, checkpoints and results."""

from __future__ import annotations

import os
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import keras

import flexseg.losses
import flexseg.metrics  # noqa: F401  (with the losses and models: the classes a checkpoint names)
from flexseg.config.files import read_config
from flexseg.config.parse import as_dict, flat_keys, parse
from flexseg.config.schema import TrainConfig, loss_schema
from flexseg.errors import ConfigError, DataError
from flexseg.models import register_models

CONFIG_FILE = "config.yaml"
CHECKPOINTS = "checkpoints"
# Keys a run's config.yaml held before each command had its own config: the settings of
# evaluate, infer and preview-augment, written with every training run and never used by it.
RETIRED_KEYS = (
    "run_dir", "input", "output", "overwrite", "tta", "save_probabilities", "split",
    "checkpoint", "preview_samples",
)  # fmt: skip


def new_run_dir(cfg: TrainConfig) -> Path:
    """A fresh `outputs/<dataset>/<time>` folder for a run started outside Hydra."""
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    base = Path("outputs") / cfg.dataset.name / stamp
    path, n = base, 1
    while path.exists():
        path, n = base.with_name(f"{stamp}_{n}"), n + 1
    return path


def check_fresh(run_dir: Path) -> None:
    """Refuses to start a new run in a folder that already holds one."""
    if (run_dir / CHECKPOINTS).exists() or (run_dir / "history.csv").exists():
        raise DataError(
            f"{run_dir} already holds a training run; choose a new run directory (the default "
            "is a new timestamped folder) so that nothing of it is overwritten."
        )


def read_run_config(run_dir: str | Path) -> TrainConfig:
    """The training config a run was started with (its `config.yaml`), typed.

    Configs of older flexseg versions are read too: they held the keys of other commands
    (`RETIRED_KEYS`) and every loss's parameters in one `loss` section, which are dropped,
    `trainer.tensorboard`, now `logger.tensorboard`, `trainer.use_multiprocessing` (dropped:
    loader workers are processes) and a true/false `dataset.cache` (now memory/none).
    """
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise ConfigError(
            f"run_dir={run_dir} holds no {CONFIG_FILE}; give the folder of a training run."
        )
    saved = read_config(path)
    for key in RETIRED_KEYS:
        saved.pop(key, None)
    trainer = saved.get("trainer")
    if isinstance(trainer, dict) and "tensorboard" in trainer:  # now logger.tensorboard
        saved.setdefault("logger", {})["tensorboard"] = trainer.pop("tensorboard")
    if isinstance(trainer, dict):  # loader threads, now always processes
        trainer.pop("use_multiprocessing", None)
    dataset = saved.get("dataset")
    if isinstance(dataset, dict) and isinstance(dataset.get("cache"), bool):  # now a kind
        dataset["cache"] = "memory" if dataset["cache"] else "none"
    loss = saved.get("loss")
    if isinstance(loss, dict) and "name" in loss:
        known = loss_schema(loss["name"]).__dataclass_fields__
        saved["loss"] = {k: v for k, v in loss.items() if k in known}
    try:
        return parse(TrainConfig, saved)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from error


# Keys whose `auto` (or null) the training resolves and records in config.yaml: the slice
# axis of volumes, chosen from their spacing, and dataset_zscore's intensity statistics;
# `auto` or null on resuming is the recorded value.
RESOLVED = ("dataset.slice_axis", "dataset.intensity_stats")


def check_same_config(run_dir: Path, cfg: TrainConfig) -> None:
    """Refuses to resume a run with settings other than those it was started with."""
    before, now = flat_keys(as_dict(read_run_config(run_dir))), flat_keys(as_dict(cfg))
    changed = sorted(
        k for k in before.keys() | now.keys()
        if k != "trainer.resume" and before.get(k) != now.get(k)
        and not (k in RESOLVED and now.get(k) in ("auto", None))
    )  # fmt: skip
    if changed:
        raise ConfigError(
            f"{run_dir} was started with other settings; resuming it with changed "
            f"{', '.join(changed[:8])} would mix two runs. Use the run's own overrides "
            "(see its config.yaml) or start a new run."
        )


@dataclass
class Run:
    """A finished training run: its folder, config, loaded model and checkpoint.

    `checkpoint` is `best` or `last`; `selected` says whether it is the one the run chose
    (`trainer.select_checkpoint`).
    """

    run_dir: Path
    cfg: TrainConfig
    model: keras.Model
    checkpoint: str

    @property
    def selected(self) -> bool:
        return self.checkpoint == self.cfg.trainer.select_checkpoint


def load_run(run_dir: str | Path, checkpoint: str | None = None) -> Run:
    """The config and model of a training run, from its best or last checkpoint.

    Args:
        run_dir: the run's folder (it holds `config.yaml` and `checkpoints/`).
        checkpoint: `"best"` or `"last"`; None takes the run's `trainer.select_checkpoint`.
    """
    run_dir = Path(run_dir)
    cfg = read_run_config(run_dir)
    register_models()
    checkpoint = checkpoint or cfg.trainer.select_checkpoint
    path = run_dir / CHECKPOINTS / f"{checkpoint}.keras"
    other = "last" if checkpoint == "best" else "best"
    fallback = run_dir / CHECKPOINTS / f"{other}.keras"
    offer = (
        f"; the run's other checkpoint may be intact: checkpoint={other}"
        if fallback.is_file() and zipfile.is_zipfile(fallback)
        else ""
    )
    if path.is_dir():
        raise DataError(f"checkpoint {path} is a folder, not a checkpoint file{offer}.")
    if not path.is_file():
        raise DataError(f"checkpoint {path} does not exist; was the run trained to an epoch end?")
    if not zipfile.is_zipfile(path):  # Keras would call it "not found"
        size = path.stat().st_size
        raise DataError(
            f"checkpoint {path} is damaged ({size:,} bytes, not a complete .keras file){offer}."
        )
    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as error:  # a corrupt zip, a foreign model: say which file
        raise DataError(
            f"cannot load checkpoint {path}: {type(error).__name__}: "
            f"{str(error).rstrip('.')}{offer}."
        ) from error
    expected = (cfg.model.input_shape[-1], cfg.model.num_classes)
    found = (model.input_shape[-1], model.output_shape[-1])
    if found != expected:
        raise DataError(
            f"checkpoint {path} is not this run's model: it takes {found[0]} channel(s) and "
            f"predicts {found[1]} classes, the run's config {expected[0]} and {expected[1]}; "
            "put the run's own checkpoint back or use its run_dir."
        )
    return Run(run_dir, cfg, model, checkpoint)


# What the runs of an ensemble must share: how images are read and what is predicted.
ENSEMBLE_KEYS = (
    "dataset.channels",
    "dataset.size_policy",
    "dataset.image_size",
    "dataset.normalize",
    "dataset.clip_percentiles",
    "dataset.ignore_zero",
    "dataset.group_regex",
    "dataset.num_classes",
    "dataset.class_names",
    "dataset.rgb_map",
    "model.input_shape",
)


def run_dirs(run_dir: str | Path | list) -> list[Path]:
    """The run folders `run_dir` names: one run, a list of runs, or a sweep folder (the runs
    in its numbered sub-folders)."""
    if isinstance(run_dir, (list, tuple)):
        if not run_dir:
            raise ConfigError("run_dir=[] names no run; give a run folder or a list of them.")
        return [Path(p) for p in run_dir]
    path = Path(run_dir)
    if not (path / CONFIG_FILE).is_file() and path.is_dir():
        jobs = [p for p in path.iterdir() if p.name.isdigit() and (p / CONFIG_FILE).is_file()]
        if jobs:
            return sorted(jobs, key=lambda p: int(p.name))
    return [path]


def check_run_dirs(run_dir: str | Path | list) -> list[Path]:
    """The run folders `run_dir` names, each checked to be a training run's folder (before a
    command makes its log folder in it).

    Raises:
        ConfigError: naming a folder that does not exist, is a file, or holds no run.
    """
    found = run_dirs(run_dir)
    for path in found:
        if not path.exists():
            raise ConfigError(f"run_dir={path} does not exist; give the folder of a training run.")
        if not path.is_dir():
            raise ConfigError(f"run_dir={path} is a file; give the folder of a training run.")
        if not (path / CONFIG_FILE).is_file():
            raise ConfigError(
                f"run_dir={path} holds no {CONFIG_FILE}: it is not a training run's folder (nor a "
                "sweep's, whose runs are in numbered folders); give the folder of a training run."
            )
    return found


def load_runs(run_dir: str | Path | list, checkpoint: str | None = None) -> list[Run]:
    """The runs `run_dir` names (see `run_dirs`), loaded; several must be an ensemble: each
    reads images the same way and predicts the same classes.

    Raises:
        ConfigError: naming each setting in which the runs differ, and the runs' values.
    """
    runs = [load_run(path, checkpoint) for path in run_dirs(run_dir)]
    differ = []
    for key in ENSEMBLE_KEYS:
        values = {str(run.run_dir): flat_keys(as_dict(run.cfg)).get(key) for run in runs}
        if len({repr(v) for v in values.values()}) > 1:
            listed = ", ".join(f"{path}: {value!r}" for path, value in values.items())
            differ.append(f"{key} ({listed})")
    if differ:
        raise ConfigError(
            f"the runs of an ensemble must read images and predict classes alike, but they "
            f"differ in {'; '.join(differ)}."
        )
    return runs


def results_dir(runs: list[Run]) -> Path:
    """Where evaluations and predictions of `runs` go: one run's own folder, or, for an
    ensemble, `ensemble/` in the folder that holds its runs."""
    if len(runs) == 1:
        return runs[0].run_dir
    parents = [run.run_dir.resolve().parent for run in runs]
    common = Path(os.path.commonpath(parents)) if len(set(parents)) > 1 else parents[0]
    return common / "ensemble"
