"""The training plan: every problem of a training config and its data, found before compute.

`flexseg-check` makes the plan and prints it; `train` makes it before training and trains
with what it built. It reads every image and mask of every split, builds the model and the
loss, and pushes one batch through both. Each problem is one line that names the file or the
config key, says what is wrong and how to fix it; all of them are reported together.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import keras

from flexseg import backend
from flexseg.cluster import ONE_PROCESS, Processes
from flexseg.config.schema import TrainConfig
from flexseg.config.targets import instantiate
from flexseg.data.checks import channel_notes, dataset_problems
from flexseg.data.dataset import SegmentationDataset
from flexseg.data.reading import stand_in_problem
from flexseg.data.sources import Sample
from flexseg.data.volumes import foreground_intensities
from flexseg.errors import ConfigError, DataError, PreflightError
from flexseg.from_config import build_datasets, colormap_of, find_samples, read_spec, source_of
from flexseg.losses import SegmentationLoss, build_loss
from flexseg.models.flops import forward_flops


@dataclass
class Plan:
    """What a run will do, and the objects the check built on the way to knowing it."""

    cfg: TrainConfig
    splits: dict[str, list[Sample]]
    datasets: dict[str, SegmentationDataset]
    model: keras.Model
    loss: SegmentationLoss
    facts: dict = field(default_factory=dict)

    def describe(self) -> str:
        """The plan as a few readable lines."""
        f = self.facts
        flops = f["gflops_per_image"]
        patches = len(f["input_shape"]) == 4
        axes = "x, y, z, channels" if patches else "height, width, channels"
        unit = "patch" if patches else "image"
        lines = [
            f"backend     {f['backend']} on {', '.join(f['devices'])}",
            f"model       {f['model']}: {f['params']:,} parameters, "
            + (f"{flops:.2f} GFLOP per {unit} (forward)" if flops else "any input size"),
            f"input       {f['input_shape']} ({axes}), {f['num_classes']} classes",
        ]
        for split, s in f["splits"].items():
            if patches:  # a 3D model's sample is a case, whole
                count = f"{s['images']} cases"
            else:
                count = f"{s['images']} images of {s['groups']} groups"
            lines.append(f"{split:<11} {count}, {s['with_foreground']:.0%} with foreground")
        classes = ", ".join(f"{k} {v:.4f}" for k, v in f["class_pixel_fraction"].items())
        lines.append(f"classes     pixel fractions in train: {classes}")
        trainer = self.cfg.trainer
        lines.append(
            f"training    {trainer.epochs} epochs of {len(self.datasets['train'])} batches of "
            f"{trainer.batch_size}, learning rate {trainer.learning_rate:g}"
        )
        if f["processes"]:
            lines.append(f"processes   {f['processes']}")
        lines.append(f"loader      {f['loader']}")
        for split, cache in f["cache"].items():
            lines.append(f"cache       {split}: {cache}")
        lines.append(f"output      {f['run_dir']}")
        lines += [f"note        {note}" for note in f["notes"]]
        return "\n".join(lines)


def make_plan(
    cfg: TrainConfig,
    run_dir: str | Path | None = None,
    outcome: str | None = None,
    processes: Processes = ONE_PROCESS,
) -> Plan:
    """Checks a training config and its data; returns the plan.

    Args:
        cfg: the training config.
        run_dir: where the run will write, for the plan's text.
        outcome: what a PreflightError says did not happen, e.g. "nothing was trained".
        processes: the processes of the training; this one loads its part of every batch.

    Raises:
        PreflightError: listing every problem found.

    Example:
    >>> plan = make_plan(load_config(["dataset=lgg", "dataset.root=/data/lgg"]))
    >>> print(plan.describe())
    """
    problems: list[str] = []
    dataset = cfg.dataset
    try:
        size_multiple = cfg.model.size_multiple
    except ValueError:  # a bad model argument: building the model below names it
        size_multiple = None
    if dataset.normalize == "dataset_zscore" and dataset.intensity_stats is None:
        _collect(problems, _resolve_intensities, dataset, cfg.seed)
    spec = _collect(problems, read_spec, dataset, size_multiple) if size_multiple else None
    try:
        cmap, masks_readable = colormap_of(dataset), True
    except ConfigError as error:  # without the map, masks cannot be scanned
        problems.append(str(error))
        cmap, masks_readable = None, False
    problems += config_problems(cfg)
    model = _collect(problems, _build_model, cfg)
    loss = _collect(problems, build_loss, cfg.loss, dataset.num_classes, cfg.model.from_logits)
    splits, split_facts, data_problems, pixels = dataset_problems(
        source_of(dataset), dataset.num_classes, cfg.seed, spec if masks_readable else None, cmap
    )
    problems += data_problems
    axes = {s.axis for samples in splits.values() for s in samples if s.axis is not None}
    if axes:  # the axis "auto" chose, recorded in the run for evaluate and infer
        dataset.slice_axis = str(axes.pop())
    if cfg.postprocess == "auto" and not splits.get("valid"):
        problems.append(
            "postprocess=auto chooses the post-processing on the valid split, and this "
            "dataset.split has none; give it one (or dataset.split.holdout_fraction), or set "
            "postprocess=none."
        )
    if problems:
        raise PreflightError(problems, outcome)

    shard = (processes.rank, processes.count)
    # JAX builds one array of the processes' parts of a batch: they must be of one size.
    equal = processes.several and backend.name() == "jax"
    datasets = build_datasets(
        cfg, splits, spec, cmap, shard=shard, sharing=processes.local_count, equal_parts=equal
    )
    problems += batch_problems(model, loss, datasets["train"])
    if problems:
        raise PreflightError(problems, outcome)
    total = max(int(pixels.sum()), 1)
    facts = {
        "backend": backend.name(),
        "devices": backend.devices(),
        "model": type(model).__name__,
        "params": model.count_params(),
        # FLOPs need a fixed size: without dataset.image_size (or a 3D patch_size) each image
        # is padded on its own.
        "gflops_per_image": (
            forward_flops(model) / 1e9 if None not in model.input_shape[1:] else None
        ),
        "input_shape": list(model.input_shape[1:]),
        "num_classes": dataset.num_classes,
        "splits": split_facts,
        "class_pixel_fraction": {
            n: float(p / total) for n, p in zip(dataset.names, pixels, strict=True)
        },
        "run_dir": str(run_dir) if run_dir else f"outputs/{dataset.name}/<start time>/",
        "loader": loader_text(cfg, datasets),
        "processes": processes_text(cfg, processes),
        "cache": {k: d.cache.describe() for k, d in datasets.items() if d.cache is not None},
        "notes": channel_notes(splits, spec) + uneven_notes(datasets, processes, equal),
    }
    return Plan(cfg, splits, datasets, model, loss, facts)


def loader_text(cfg: TrainConfig, datasets: dict[str, SegmentationDataset]) -> str:
    """Where batches are made: the worker processes, or the training process."""
    pool = datasets["train"].pool
    setting = f"trainer.workers={cfg.trainer.workers}"
    if pool is None:
        return f"in the training process ({setting})"
    plural = "es" if pool.workers > 1 else ""
    return (
        f"{pool.workers} worker process{plural} ({setting}), up to {pool.depth} batches in flight"
    )


def uneven_notes(
    datasets: dict[str, SegmentationDataset], processes: Processes, equal_parts: bool
) -> list[str]:
    """What a split loses when its last batch must split evenly over the processes."""
    notes = []
    for split, data in datasets.items() if equal_parts else ():
        left = (data.epoch_size % data.batch_size) % processes.count
        if left and not data.batches.drop_remainder:
            notes.append(
                f"{split}: the last {left} image(s) of each epoch are left out: JAX splits "
                f"every batch evenly over the {processes.count} processes"
            )
    return notes


def processes_text(cfg: TrainConfig, processes: Processes) -> str | None:
    """The processes of the training, when there are several."""
    if not processes.several:
        return None
    batch = cfg.trainer.batch_size
    return (
        f"{processes.count} ({processes.source}), meeting at {processes.coordinator}; "
        f"each loads {batch // processes.count} of every batch of {batch}; process 0 writes"
    )


def config_problems(cfg: TrainConfig) -> list[str]:
    """Settings that are each valid but cannot work together, one line each."""
    problems: list[str] = []
    dataset, trainer, model = cfg.dataset, cfg.trainer, cfg.model
    if trainer.schedule != "constant" and trainer.reduce_lr.enabled:
        problems.append(
            f"trainer.schedule={trainer.schedule} sets the learning rate every epoch; set "
            "trainer.reduce_lr.enabled=false to use it (both cannot steer the rate)."
        )
    if model.input_shape[-1] != dataset.channels:
        problems.append(
            f"model.input_shape has {model.input_shape[-1]} channel(s) but dataset.channels="
            f"{dataset.channels}; make them agree (model.input_shape follows dataset.channels "
            "unless set)."
        )
    if dataset.stand_in_p > 0 and dataset.stand_in_channel is None:
        problems.append(
            f"dataset.stand_in_p={dataset.stand_in_p} needs dataset.stand_in_channel (the "
            "channel that stands in for missing ones); set it, or stand_in_p=0."
        )
    problem = stand_in_problem(
        "dataset.stand_in_channel", dataset.stand_in_channel, dataset.channels
    )
    if problem:
        problems.append(problem)
    if model.num_classes != dataset.num_classes:
        problems.append(
            f"model.num_classes={model.num_classes} but dataset.num_classes="
            f"{dataset.num_classes}; make them agree."
        )
    for package, key, extra in (
        ("tensorboard", "tensorboard", "tensorboard"),
        ("mlflow", "mlflow", "mlflow"),
    ):
        if getattr(cfg.logger, key) and importlib.util.find_spec(package) is None:
            problems.append(
                f"logger.{key}=true needs {package}, not installed: pip install "
                f"'flexseg[{extra}]' (or set logger.{key}=false)."
            )
    return problems


def batch_problems(
    model: keras.Model, loss: SegmentationLoss, data: SegmentationDataset
) -> list[str]:
    """Pushes one training batch through the model and the loss."""
    images, masks = data[0]
    output = model(images, training=False)
    if tuple(output.shape) != masks.shape:
        return [
            f"the model's output {tuple(output.shape)} does not match the masks {masks.shape} "
            "(batch, height, width, classes); check model.num_classes and dataset.image_size."
        ]
    value = float(keras.ops.convert_to_numpy(loss(masks, output)))
    if not math.isfinite(value):
        names = ", ".join(str(s.image) for s in data.samples[: data.batch_size])
        return [
            f"the loss of the first batch is {value} ({names}); check those images for "
            "non-finite values and dataset.normalize."
        ]
    return []


def _build_model(cfg: TrainConfig) -> keras.Model:
    try:
        return instantiate(cfg.model)
    except (TypeError, ValueError) as error:
        if isinstance(error, ConfigError):
            raise
        raise ConfigError(
            f"model: {error} (model.input_shape follows dataset.image_size="
            f"{cfg.dataset.image_size})"
        ) from error


def _resolve_intensities(dataset, seed: int) -> None:
    """Sets `dataset.intensity_stats` of dataset_zscore from the training cases' foreground
    (recorded in the run's config.yaml, so that evaluate and infer read alike)."""
    train = find_samples(dataset, seed)["train"]
    if not train or not train[0].volume:
        raise ConfigError(
            "dataset.normalize=dataset_zscore standardises volumes with their data set's "
            "statistics, and this training split holds no volumes; use group_zscore or zscore."
        )
    cases = {s.case: (s.images, s.mask) for s in train}
    rows = foreground_intensities(list(cases.values()), max_voxels=dataset.max_voxels)
    dataset.intensity_stats = [[round(v, 6) for v in row] for row in rows]


def _collect(problems: list[str], fn: Callable, *args):
    """fn(*args), or None with its ConfigError / DataError message added to `problems`."""
    try:
        return fn(*args)
    except (ConfigError, DataError) as error:
        problems.append(str(error))
        return None
