"""The config's sections as the plain settings the data layer takes.

`flexseg.data` knows nothing of the config: it takes a `Source` (where the files are and how
they split), a `ReadSpec` (how a file becomes a model input), a `ColorMap` and
`LoaderSettings`. Training, prediction and the commands make them from a typed config here,
in one place.

Example:
>>> splits = find_samples(cfg.dataset, cfg.seed)
>>> spec = read_spec(cfg.dataset, cfg.model.size_multiple)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

from flexseg.config.schema import DatasetConfig, TrainConfig
from flexseg.data import build, sources
from flexseg.data.build import LoaderSettings
from flexseg.data.dataset import SegmentationDataset
from flexseg.data.masks import ColorMap
from flexseg.data.reading import ReadSpec
from flexseg.data.sources import Sample, Source, SplitRule
from flexseg.errors import ConfigError

T = TypeVar("T")


def settings(cls: type[T], *sections: Any, **given: Any) -> T:
    """The data-layer settings `cls` (a dataclass) with each field `given`, or else the key of
    its name in the first of `sections` that has one: the config names them alike."""
    values = {}
    for f in dataclasses.fields(cls):
        if f.name in given:
            values[f.name] = given[f.name]
            continue
        holder = next((s for s in sections if hasattr(s, f.name)), None)
        if holder is None:
            raise TypeError(f"no config section gives {cls.__name__}.{f.name}")
        values[f.name] = getattr(holder, f.name)
    return cls(**values)


def source_of(dataset: DatasetConfig) -> Source:
    """Where the dataset's files are, how they pair and how they split."""
    split = dataset.split
    rule = settings(
        SplitRule, split, groups=split.groups or None, fractions=split.fractions or None
    )
    return settings(Source, dataset, split=rule, whole_volumes=dataset.patch_size is not None)


def find_samples(
    dataset: DatasetConfig, seed: int, problems: list[str] | None = None
) -> dict[str, list[Sample]]:
    """The samples of each split of the dataset (`flexseg.data.find_samples`)."""
    return sources.find_samples(source_of(dataset), seed, problems)


def read_spec(dataset: DatasetConfig, size_multiple: int = 1) -> ReadSpec:
    """How the dataset's files become model inputs; `size_multiple` comes from the model."""
    size, clip, stats = dataset.image_size, dataset.clip_percentiles, dataset.intensity_stats
    return settings(
        ReadSpec,
        dataset,
        image_size=tuple(size) if size else None,
        size_multiple=size_multiple,
        clip_percentiles=tuple(clip) if clip else None,
        intensity_stats=tuple(tuple(float(v) for v in row) for row in stats) if stats else None,
    )


def colormap_of(dataset: DatasetConfig) -> ColorMap | None:
    """The dataset's colour map, or None when its masks hold class ids."""
    if dataset.rgb_map is None:
        return None
    cmap = ColorMap.from_config(dataset.rgb_map, dataset.color_tolerance)
    if cmap.num_classes != dataset.num_classes:
        raise ConfigError(
            f"dataset.num_classes={dataset.num_classes} but dataset.rgb_map has "
            f"{cmap.num_classes} classes; make them agree."
        )
    return cmap


def loader_of(cfg: TrainConfig) -> LoaderSettings:
    """How the training's datasets serve batches: `trainer.*`, `augment` and `dataset.*`."""
    return settings(
        LoaderSettings, cfg.trainer, cfg.dataset, seed=cfg.seed, augment=cfg.augment.transforms
    )


def build_datasets(
    cfg: TrainConfig,
    splits: Mapping[str, list[Sample]] | None = None,
    spec: ReadSpec | None = None,
    colormap: ColorMap | None = None,
    **options,
) -> dict[str, SegmentationDataset]:
    """The datasets of a training config (`flexseg.data.build_datasets`); the samples,
    reading and colour map are made from the config when not given, and `options` (`only`,
    `workers`, `shard`, `sharing`, `equal_parts`) pass on."""
    dataset = cfg.dataset
    splits = splits if splits is not None else find_samples(dataset, cfg.seed)
    spec = spec or read_spec(dataset, cfg.model.size_multiple)
    cmap = colormap if colormap is not None else colormap_of(dataset)
    return build.build_datasets(splits, dataset.num_classes, spec, cmap, loader_of(cfg), **options)
