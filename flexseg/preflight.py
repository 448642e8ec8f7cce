"""The pre-flight check: every problem of a config and its data, found before compute is spent.

`flexseg-check` runs it on its own and `flexseg-train` before training. It resolves the
config, reads every image and mask of every split, builds the model and pushes one batch
through it. Each problem is one line that names the file or the config key, says what is
wrong and how to fix it; all of them are reported together.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np

from flexseg import backend
from flexseg.config import instantiate
from flexseg.data.build import build_datasets, colormap_of, spec_of
from flexseg.data.dataset import SegmentationDataset, read_pair
from flexseg.data.masks import ColorMap
from flexseg.data.reading import ReadSpec
from flexseg.data.sources import Sample, find_samples
from flexseg.errors import ConfigError, DataError
from flexseg.losses import build_loss
from flexseg.models import forward_flops

MAX_LISTED = 25  # problems printed; the rest are counted


class PreflightError(DataError):
    """The pre-flight check found problems; the message lists them, one per line."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        lines = [f"  - {p}" for p in self.problems[:MAX_LISTED]]
        if len(self.problems) > MAX_LISTED:
            lines.append(f"  ... and {len(self.problems) - MAX_LISTED} more")
        super().__init__(
            f"the pre-flight check found {len(self.problems)} problem(s); nothing was "
            "trained:\n" + "\n".join(lines)
        )


@dataclass
class Plan:
    """What a run will do, and the objects the check built on the way to knowing it."""

    cfg: dict
    splits: dict[str, list[Sample]]
    datasets: dict[str, SegmentationDataset]
    model: keras.Model
    facts: dict = field(default_factory=dict)

    def describe(self) -> str:
        """The plan as a few readable lines."""
        f = self.facts
        lines = [
            f"backend     {f['backend']} on {', '.join(f['devices'])}",
            f"model       {f['model']}: {f['params']:,} parameters, "
            f"{f['gflops_per_image']:.2f} GFLOP per image (forward)",
            f"input       {f['input_shape']} (height, width, channels), {f['num_classes']} classes",
        ]
        for split, s in f["splits"].items():
            lines.append(
                f"{split:<11} {s['images']} images of {s['groups']} groups, "
                f"{s['with_foreground']:.0%} with foreground"
            )
        classes = ", ".join(f"{k} {v:.4f}" for k, v in f["class_pixel_fraction"].items())
        lines.append(f"classes     pixel fractions in train: {classes}")
        trainer = self.cfg["trainer"]
        lines.append(
            f"training    {trainer['epochs']} epochs of {len(self.datasets['train'])} batches of "
            f"{trainer['batch_size']}, learning rate {trainer['learning_rate']:g}"
        )
        lines.append(f"output      {f['run_dir']}")
        lines += [f"note        {note}" for note in f["notes"]]
        return "\n".join(lines)


def check(cfg: dict) -> Plan:
    """Checks a training config and its data; returns the plan or raises PreflightError.

    Example:
    >>> plan = check(load_config(["dataset=lgg", "dataset.root=/data/lgg"]))
    >>> print(plan.describe())
    """
    problems: list[str] = []
    dataset, model_cfg = cfg["dataset"], cfg["model"]
    spec = _collect(problems, spec_of, cfg)
    try:
        cmap, masks_readable = colormap_of(dataset), True
    except ConfigError as error:  # without the map, masks cannot be scanned
        problems.append(str(error))
        cmap, masks_readable = None, False
    problems += config_problems(cfg)
    model = _collect(problems, _build_model, model_cfg, dataset)
    splits = _collect(problems, find_samples, dataset, cfg.get("seed", 0))
    notes: list[str] = []
    split_facts, pixels = {}, np.zeros(dataset["num_classes"], np.int64)
    if splits is not None and spec is not None and masks_readable:
        for split, samples in splits.items():
            if not samples:
                continue
            found, split_problems, counts = scan_samples(samples, dataset, spec, cmap)
            problems += split_problems
            split_facts[split] = found
            if split == "train":
                pixels = counts
    if problems:
        raise PreflightError(problems)
    notes += _channel_notes(splits, spec)

    datasets = build_datasets(cfg, splits)
    problems += batch_problems(model, datasets["train"], cfg)
    if problems:
        raise PreflightError(problems)
    names = dataset.get("class_names") or [f"class_{i}" for i in range(dataset["num_classes"])]
    total = max(int(pixels.sum()), 1)
    facts = {
        "backend": backend.name(),
        "devices": backend.devices(),
        "model": type(model).__name__,
        "params": model.count_params(),
        "gflops_per_image": forward_flops(model) / 1e9,
        "input_shape": list(model.input_shape[1:]),
        "num_classes": dataset["num_classes"],
        "splits": split_facts,
        "class_pixel_fraction": {n: float(p / total) for n, p in zip(names, pixels, strict=True)},
        "run_dir": cfg.get("_run_dir_") or f"outputs/{dataset['name']}/<start time>/",
        "notes": notes,
    }
    return Plan(cfg, splits, datasets, model, facts)


def config_problems(cfg: Mapping) -> list[str]:
    """Settings that compose but cannot work, one line each."""
    from flexseg.training.train import (
        build_optimizer,
        check_trainer,
        resolve_jit_compile,
    )

    problems: list[str] = []
    dataset, trainer = cfg["dataset"], cfg["trainer"]
    from_logits = cfg["model"].get("output") == "logits"
    _collect(problems, build_optimizer, trainer)
    _collect(problems, resolve_jit_compile, trainer.get("jit_compile", "auto"))
    _collect(problems, check_trainer, trainer)
    _collect(problems, build_loss, cfg["loss"], dataset["num_classes"], from_logits)
    shape = cfg["model"].get("input_shape")
    channels = dataset.get("channels", 1)
    if shape and shape[-1] != channels:
        problems.append(
            f"model.input_shape has {shape[-1]} channel(s) but dataset.channels={channels}; "
            "make them agree (model.input_shape follows dataset.channels unless overridden)."
        )
    if cfg["model"].get("num_classes") != dataset["num_classes"]:
        problems.append(
            f"model.num_classes={cfg['model'].get('num_classes')} but dataset.num_classes="
            f"{dataset['num_classes']}; make them agree."
        )
    return problems


def scan_samples(
    samples: list[Sample], dataset: Mapping, spec: ReadSpec, cmap: ColorMap | None
) -> tuple[dict, list[str], np.ndarray]:
    """Reads every image and mask of a split, in threads.

    Returns:
        Facts about the split, one problem line per bad file, and the pixel count per class.
    """
    num_classes = dataset["num_classes"]

    def read(sample: Sample):
        try:
            _, mask, _ = read_pair(sample, num_classes, spec, cmap)
        except DataError as error:
            return str(error)
        return np.bincount(mask.ravel(), minlength=num_classes)[:num_classes]

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        results = list(pool.map(read, samples))
    problems = [r for r in results if isinstance(r, str)]
    counts = [r for r in results if not isinstance(r, str)]
    facts = {
        "images": len(samples),
        "groups": len({s.group for s in samples}),
        "with_foreground": float(np.mean([c[1:].sum() > 0 for c in counts])) if counts else 0.0,
    }
    pixels = np.sum(counts, axis=0) if counts else np.zeros(num_classes, np.int64)
    return facts, problems, pixels


def input_problems(paths: list[Path]) -> list[str]:
    """One line per inference input that cannot be read as an image."""
    from flexseg.data.reading import read_image

    def read(path: Path) -> str | None:
        try:
            read_image(path, None)
        except DataError as error:
            return str(error)
        return None

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        return [r for r in pool.map(read, paths) if r]


def batch_problems(model: keras.Model, data: SegmentationDataset, cfg: Mapping) -> list[str]:
    """Pushes one training batch through the model and the loss."""
    images, masks = data[0]
    from_logits = cfg["model"].get("output") == "logits"
    loss_fn = build_loss(cfg["loss"], cfg["dataset"]["num_classes"], from_logits)
    output = model(images, training=False)
    if tuple(output.shape) != masks.shape:
        return [
            f"the model's output {tuple(output.shape)} does not match the masks {masks.shape} "
            "(batch, height, width, classes); check model.num_classes and dataset.image_size."
        ]
    loss = float(keras.ops.convert_to_numpy(loss_fn(masks, output)))
    if not math.isfinite(loss):
        names = ", ".join(str(s.image) for s in data.samples[: data.batch_size])
        return [
            f"the loss of the first batch is {loss} ({names}); check those images for "
            "non-finite values and dataset.normalize."
        ]
    return []


def _build_model(model_cfg: Mapping, dataset: Mapping) -> keras.Model:
    try:
        return instantiate(model_cfg)
    except (TypeError, ValueError) as error:
        if isinstance(error, ConfigError):
            raise
        raise ConfigError(
            f"model: {error} (model.input_shape follows dataset.image_size="
            f"{dataset.get('image_size')})"
        ) from error


def _channel_notes(splits: Mapping[str, list[Sample]], spec: ReadSpec) -> list[str]:
    """A note when the files hold another channel count than the model reads."""
    from flexseg.data.reading import read_image

    first = next(s for samples in splits.values() for s in samples)
    found = read_image(first.image, None).shape[-1]
    if found == spec.channels:
        return []
    return [
        f"{first.image} has {found} channel(s) and dataset.channels={spec.channels}: images are "
        + ("averaged to gray" if spec.channels == 1 else "repeated to RGB")
    ]


def _collect(problems: list[str], fn: Callable, *args):
    """fn(*args), or None with its ConfigError / DataError message added to `problems`."""
    try:
        return fn(*args)
    except (ConfigError, DataError) as error:
        problems.append(str(error))
        return None
