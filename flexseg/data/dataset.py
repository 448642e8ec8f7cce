"""SegmentationDataset: a streaming keras.utils.PyDataset of images and one-hot masks."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import albumentations as A
import keras
import numpy as np

from flexseg.data.batches import Batches, read_pair
from flexseg.data.cache import build_cache, cache_key
from flexseg.data.masks import ColorMap
from flexseg.data.patches import PatchBatches
from flexseg.data.reading import (
    IntensityStats,
    ReadSpec,
    intensity_stats,
    read_sample,
    to_unit,
)
from flexseg.data.sources import Sample, by_group
from flexseg.data.workers import LoaderPool
from flexseg.errors import DataError


class SegmentationDataset(keras.utils.PyDataset):
    r"""Batches of (images, one-hot masks), read and augmented per batch.

    Nothing is held in memory beyond the batches in flight (unless `cache` says), so peak
    memory grows with `batch_size * workers`, not with the dataset. With `shuffle=True` the
    order of each epoch is a function of `seed` and the epoch number only: every backend and
    every worker count sees the same batches. Pass `shuffle=False` to `model.fit`, as the
    dataset shuffles itself.

    Args:
        samples: the samples to serve (see `flexseg.data.find_samples`).
        num_classes: classes of the one-hot masks.
        batch_size: images per batch; the last batch may be smaller unless `drop_remainder`.
        spec: how files are read, sized and normalised.
        colormap: maps mask colours to class ids; None for index or 0/255 masks.
        augment: an albumentations pipeline for training data, or None.
        shuffle: reshuffle the samples every epoch.
        seed: seed of shuffling and augmentation.
        drop_remainder: leave out the last, smaller batch of an epoch (for training: a batch
            of another size makes a compiled step retrace).
        foreground_fraction: with `shuffle`, each epoch serves every sample whose mask has
            foreground and a fresh random draw of the empty ones, so that samples with
            foreground make up this fraction of the epoch (for sets of mostly empty slices).
            None serves every sample.
        small_lesions: (pixels, repeats): with `shuffle`, each epoch serves every sample whose
            mask has foreground on fewer than `pixels` pixels (as sized for the model)
            `repeats` times instead of once.
        cache: `"none"`; `"memory"`: decode and size every sample once, into shared memory
            that worker processes map instead of copying; `"disk"`: the same in a folder
            under `cache_dir`, reused by the next dataset of the same files and settings
            (see `flexseg.data.cache`).
        cache_dir: the disk cache's parent folder; `~/.cache/flexseg/data` when None.
        group_stats: intensity statistics per group, for `normalize="group_zscore"`;
            computed from the samples when None.
        workers: loader worker processes; 0 loads in this process.
        prefetch: batches each worker may have in flight or waiting.
        pool: a `LoaderPool` shared with other datasets (one set of processes for every
            split); made for this dataset alone when None and `workers` > 0.
        name: this dataset's name in a shared pool.
        stand_in: (channel, probability): each image's channels all replaced by that channel
            with that probability (the `dataset.stand_in_channel` setting), seeded per sample.
        shard: (process, processes) of a training over several processes: each serves its
            consecutive part of every batch (`batch_size` is the batch of all processes
            together), so together they serve one process's batches in the same order.
        equal_parts: the processes' parts must be equal (JAX): the last batch leaves out its
            last `n % processes` samples.
        patch_size: (x, y, z): the samples are whole volumes and batches hold random patches
            of this size (`flexseg.data.patches.PatchBatches`); None: 2D samples.
        foreground_patches: with `patch_size` and `shuffle`, the share of each batch's
            patches centred on a foreground voxel.
        patches_per_epoch: with `patch_size`, the patches an epoch serves; None: one a case.

    Example:
    >>> splits = find_samples(Source(root="data", group_regex=r"^(p\d+)_", ...), seed=0)
    >>> train = SegmentationDataset(splits["train"], 2, 8, ReadSpec(size_multiple=16))
    >>> model.fit(train, epochs=10, shuffle=False)
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        num_classes: int,
        batch_size: int,
        spec: ReadSpec,
        colormap: ColorMap | None = None,
        augment: A.Compose | None = None,
        shuffle: bool = False,
        seed: int = 0,
        drop_remainder: bool = False,
        foreground_fraction: float | None = None,
        cache: str = "none",
        cache_dir: str | Path | None = None,
        group_stats: dict[str, IntensityStats] | None = None,
        workers: int = 0,
        prefetch: int = 2,
        pool: LoaderPool | None = None,
        name: str = "data",
        shard: tuple[int, int] = (0, 1),
        stand_in: tuple[int, float] | None = None,
        equal_parts: bool = False,
        small_lesions: tuple[int, int] | None = None,
        patch_size: Sequence[int] | None = None,
        foreground_patches: float = 1 / 3,
        patches_per_epoch: int | None = None,
    ):
        # Keras' own threads stay off: batches come from `pool`'s processes, or from here.
        super().__init__(workers=1, use_multiprocessing=False)
        if not samples:
            raise DataError("the dataset has no samples; check the dataset path and split.")
        if spec.normalize == "group_zscore" and group_stats is None:
            group_stats = compute_group_stats(samples, spec)
        stored = None
        if cache != "none":

            def read(i: int) -> tuple[np.ndarray, np.ndarray]:
                return read_pair(samples[i], num_classes, spec, colormap)

            key = cache_key(samples, num_classes, spec, colormap)
            stored = build_cache(samples, read, cache, key, cache_dir, max(workers, 1))
        if patch_size is not None:
            self.batches = PatchBatches(
                samples,
                num_classes,
                batch_size,
                spec,
                patch_size,
                augment,
                shuffle,
                seed,
                foreground_patches,
                patches_per_epoch,
                stored,
                shard,
            )
        else:
            self.batches = Batches(
                samples,
                num_classes,
                batch_size,
                spec,
                colormap,
                augment,
                shuffle,
                seed,
                drop_remainder,
                foreground_fraction,
                group_stats,
                stored,
                shard,
                stand_in,
                equal_parts,
                small_lesions,
            )
        self.epoch = 0
        self.read_error: DataError | None = None  # the last file that failed to read
        self.name = name
        if pool is None and workers > 0:
            pool = LoaderPool(workers, prefetch)
        self.pool = pool
        if pool is not None:
            pool.add(name, self.batches)

    samples = property(lambda self: self.batches.samples)
    num_classes = property(lambda self: self.batches.num_classes)
    batch_size = property(lambda self: self.batches.batch_size)
    spec = property(lambda self: self.batches.spec)
    augment = property(lambda self: self.batches.augment)
    group_stats = property(lambda self: self.batches.group_stats)
    cache = property(lambda self: self.batches.cache)
    epoch_size = property(lambda self: self.batches.epoch_size)

    def __len__(self) -> int:
        return len(self.batches)

    def order(self, epoch: int) -> np.ndarray:
        """Indices of the samples in the order epoch `epoch` serves them."""
        return self.batches.order(epoch)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if not 0 <= index < len(self):
            raise IndexError(f"batch {index} of a dataset of {len(self)} batches")
        try:
            if self.pool is None:
                return self.batches.batch(self.epoch, index)
            return self.pool.get(self.name, self.epoch, index)
        except DataError as error:
            # Kept for the trainer: TensorFlow's input pipeline re-raises it as its own error.
            self.read_error = error
            raise

    def load(self, i: int, epoch: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Sample `i` as (image (H, W, C) float32, mask (H, W) uint8), augmented if set."""
        return self.batches.load(i, epoch)

    def on_epoch_end(self) -> None:
        self.epoch += 1


def compute_group_stats(samples: Sequence[Sample], spec: ReadSpec) -> dict[str, IntensityStats]:
    """Intensity statistics of each group's images, streamed one image at a time."""

    def unit_images(members):
        for s in members:
            raw = read_sample(s, spec)
            yield to_unit(raw)[0]

    groups = by_group(samples, lambda sample: sample.group)
    return {group: intensity_stats(unit_images(members), spec) for group, members in groups.items()}
