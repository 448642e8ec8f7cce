"""From a config to datasets: the one place that wires sources, masks, reading and augmentation."""

from __future__ import annotations

from collections.abc import Mapping

from flexseg.config.schema import DatasetConfig, TrainConfig
from flexseg.data.dataset import SegmentationDataset, compute_group_stats
from flexseg.data.masks import ColorMap
from flexseg.data.reading import ReadSpec
from flexseg.data.sources import Sample, find_samples
from flexseg.data.transforms import build_augmentation
from flexseg.data.workers import LoaderPool, resolve_workers
from flexseg.errors import ConfigError


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


def read_spec(dataset: DatasetConfig, size_multiple: int = 1) -> ReadSpec:
    """The ReadSpec a dataset config describes; `size_multiple` comes from the model."""
    size, clip = dataset.image_size, dataset.clip_percentiles
    return ReadSpec(
        channels=dataset.channels,
        size_policy=dataset.size_policy,
        image_size=tuple(size) if size else None,
        size_multiple=size_multiple,
        normalize=dataset.normalize,
        clip_percentiles=tuple(clip) if clip else None,
        ignore_zero=dataset.ignore_zero,
        max_pixels=dataset.max_pixels,
    )


def build_datasets(
    cfg: TrainConfig,
    splits: Mapping[str, list[Sample]] | None = None,
    spec: ReadSpec | None = None,
    colormap: ColorMap | None = None,
    workers: int | str | None = None,
    only: str | None = None,
    shard: tuple[int, int] = (0, 1),
    sharing: int = 1,
    equal_parts: bool = False,
) -> dict[str, SegmentationDataset]:
    """Train, valid and test datasets of a config; only the training set is augmented.

    Args:
        cfg: the training config (`dataset`, `model`, `trainer`, `augment`, `seed`).
        splits: samples per split, found from the config when None.
        spec, colormap: the dataset's reading and colour map, made from the config when None.
        workers: loader worker processes, shared by the splits; `trainer.workers` when None.
        only: build just this split (intensity statistics still come from every split).
        shard: (process, processes) of a training over several processes: each loads its
            part of every batch of `trainer.batch_size`.
        sharing: training processes on this machine, which share its cores among their
            loader workers (`trainer.workers=auto`).
        equal_parts: each process's part of a batch the same size (see SegmentationDataset).

    Returns:
        `{split: SegmentationDataset}` for each split that has samples (or just `only`).
    """
    dataset, trainer = cfg.dataset, cfg.trainer
    splits = splits if splits is not None else find_samples(dataset, cfg.seed)
    spec = spec or read_spec(dataset, cfg.model.size_multiple)
    cmap = colormap if colormap is not None else colormap_of(dataset)
    stats = None
    if spec.normalize == "group_zscore":
        stats = compute_group_stats([s for v in splits.values() for s in v], spec)
    workers = resolve_workers(trainer.workers if workers is None else workers, sharing)
    pool = LoaderPool(workers, trainer.prefetch) if workers else None
    result = {}
    for split, samples in splits.items():
        if not samples or only not in (None, split):
            continue
        training = split == "train"
        result[split] = SegmentationDataset(
            samples,
            num_classes=dataset.num_classes,
            batch_size=trainer.batch_size,
            spec=spec,
            colormap=cmap,
            augment=build_augmentation(cfg.augment.transforms, dataset.image_size)
            if training
            else None,
            shuffle=training,
            seed=cfg.seed,
            drop_remainder=training and trainer.drop_remainder,
            foreground_fraction=trainer.foreground_fraction if training else None,
            small_lesions=(trainer.small_lesion_pixels, trainer.small_lesion_repeats)
            if training and trainer.small_lesion_pixels is not None
            else None,
            cache=dataset.cache,
            cache_dir=dataset.cache_dir,
            group_stats=stats,
            workers=workers,
            pool=pool,
            name=split,
            shard=shard,
            equal_parts=equal_parts,
            stand_in=(dataset.stand_in_channel, dataset.stand_in_p)
            if training and dataset.stand_in_channel is not None and dataset.stand_in_p > 0
            else None,
        )
    return result
