"""From samples to datasets: the one place that wires masks, reading, augmentation and loading."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from flexseg.data.dataset import SegmentationDataset, compute_group_stats
from flexseg.data.masks import ColorMap
from flexseg.data.reading import ReadSpec
from flexseg.data.sources import Sample
from flexseg.data.transforms import build_augmentation
from flexseg.data.workers import LoaderPool, resolve_workers


@dataclass(frozen=True)
class LoaderSettings:
    """How a training's datasets serve batches (the `trainer`, `augment` and `dataset` keys of
    the same names say it in a config).

    Args:
        batch_size: images per batch (of all processes together).
        seed: seed of the order, the augmentation and the stand-in draws.
        workers: loader worker processes, `"auto"` or a count (`resolve_workers`).
        prefetch: batches each worker keeps ready.
        drop_remainder: training leaves out an epoch's last, smaller batch.
        foreground_fraction, small_lesion_pixels, small_lesion_repeats: the training
            split's sampling (see `SegmentationDataset`).
        cache, cache_dir: the decoded-sample cache (`flexseg.data.cache`).
        stand_in_channel, stand_in_p: training images whose channels all become this one,
            with this probability.
        augment: the training split's albumentations transforms, as
            `[{name: HorizontalFlip, p: 0.5}, ...]`.
        patch_size: (x, y, z) of 3D training's patches of whole volumes; None: 2D samples.
        foreground_patches, patches_per_epoch: 3D training's patches centred on
            foreground and count (see `flexseg.data.patches.PatchBatches`).
    """

    batch_size: int
    seed: int
    workers: int | str
    prefetch: int
    drop_remainder: bool
    foreground_fraction: float | None
    small_lesion_pixels: int | None
    small_lesion_repeats: int
    cache: str
    cache_dir: str | None
    stand_in_channel: int | None
    stand_in_p: float
    augment: Sequence[Mapping]
    patch_size: Sequence[int] | None = None
    foreground_patches: float = 0.33
    patches_per_epoch: int | None = None


def build_datasets(
    splits: Mapping[str, list[Sample]],
    num_classes: int,
    spec: ReadSpec,
    colormap: ColorMap | None,
    loader: LoaderSettings,
    workers: int | str | None = None,
    only: str | None = None,
    shard: tuple[int, int] = (0, 1),
    sharing: int = 1,
    equal_parts: bool = False,
) -> dict[str, SegmentationDataset]:
    """Train, valid and test datasets of the samples of each split; only training augments.

    Args:
        splits: samples per split (`flexseg.data.find_samples`).
        num_classes: classes of the masks.
        spec, colormap: how the files are read and the masks' colours mapped.
        loader: how batches are served.
        workers: loader worker processes, shared by the splits; `loader.workers` when None.
        only: build just this split (intensity statistics still come from every split).
        shard: (process, processes) of a training over several processes: each loads its
            part of every batch of `loader.batch_size`.
        sharing: training processes on this machine, which share its cores among their
            loader workers (`workers="auto"`).
        equal_parts: each process's part of a batch the same size (see SegmentationDataset).

    Returns:
        `{split: SegmentationDataset}` for each split that has samples (or just `only`).
    """
    stats = None
    if spec.normalize == "group_zscore":
        stats = compute_group_stats([s for v in splits.values() for s in v], spec)
    workers = resolve_workers(loader.workers if workers is None else workers, sharing)
    pool = LoaderPool(workers, loader.prefetch) if workers else None
    stand_in = None
    if loader.stand_in_channel is not None and loader.stand_in_p > 0:
        stand_in = (loader.stand_in_channel, loader.stand_in_p)
    small_lesions = None
    if loader.small_lesion_pixels is not None:
        small_lesions = (loader.small_lesion_pixels, loader.small_lesion_repeats)
    size = loader.patch_size or spec.image_size
    result = {}
    for split, samples in splits.items():
        if not samples or only not in (None, split):
            continue
        training = split == "train"
        result[split] = SegmentationDataset(
            samples,
            num_classes=num_classes,
            batch_size=loader.batch_size,
            spec=spec,
            colormap=colormap,
            augment=build_augmentation(loader.augment, size) if training else None,
            shuffle=training,
            seed=loader.seed,
            drop_remainder=training and loader.drop_remainder,
            foreground_fraction=loader.foreground_fraction if training else None,
            small_lesions=small_lesions if training else None,
            cache=loader.cache,
            cache_dir=loader.cache_dir,
            group_stats=stats,
            workers=workers,
            pool=pool,
            name=split,
            shard=shard,
            equal_parts=equal_parts,
            stand_in=stand_in if training else None,
            patch_size=loader.patch_size,
            foreground_patches=loader.foreground_patches,
            patches_per_epoch=loader.patches_per_epoch if training else None,
        )
    return result
