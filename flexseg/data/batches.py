"""Batches: what one batch of an epoch holds, as a function of the seed, epoch and index.

The work of the loader, kept free of Keras and of any framework so that loader worker
processes import only numpy, OpenCV and albumentations (`flexseg.data.workers`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from flexseg.data.cache import SampleCache
from flexseg.data.masks import ColorMap, decode_sample_mask
from flexseg.data.reading import (
    IntensityStats,
    ReadSpec,
    fit_size,
    read_sample,
    stand_in,
    to_model_input,
    to_unit,
)
from flexseg.data.sources import Sample
from flexseg.errors import DataError

if TYPE_CHECKING:
    import albumentations as A

# Seeds of an epoch's shuffle and of each sample's augmentation are derived from the dataset
# seed with numpy's SeedSequence, so they are the same on every backend and for any number
# of workers.
_SHUFFLE, _AUGMENT, _STAND_IN = 0, 1, 2


class Batches:
    """The batches of a list of samples: order, reading, augmentation, one-hot masks.

    `batch(epoch, index)` depends only on its arguments and the constructor's, so any process
    computes the same batch (see `SegmentationDataset` for the arguments).
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
        group_stats: dict[str, IntensityStats] | None = None,
        cache: SampleCache | None = None,
        shard: tuple[int, int] = (0, 1),
        stand_in: tuple[int, float] | None = None,
        equal_parts: bool = False,
        small_lesions: tuple[int, int] | None = None,
    ):
        if not samples:
            raise DataError("the dataset has no samples; check the dataset path and split.")
        if batch_size < 1:
            raise DataError(f"batch_size must be >= 1. Received: batch_size={batch_size}")
        self.samples = list(samples)
        self.num_classes = num_classes
        self.batch_size = batch_size
        self.spec = spec
        self.colormap = colormap
        self.augment = augment
        self.shuffle = shuffle
        self.seed = seed
        self.drop_remainder = drop_remainder
        self.group_stats = group_stats or {}
        self.cache = cache
        self.shard = shard  # (this process, processes): each serves its part of every batch
        # JAX makes one array of the processes' parts: they must be equal, so the last batch
        # leaves out its last n % processes samples (torch takes unequal parts)
        self.equal_parts = equal_parts
        self.stand_in = stand_in  # (channel, probability): see SegmentationDataset
        self._with_fg = self._empty = None
        self._again = np.zeros(0, np.int64)  # served once more each epoch, besides the rest
        if (foreground_fraction is not None or small_lesions is not None) and shuffle:
            self._split_by_foreground(foreground_fraction, small_lesions)
        if drop_remainder and self.epoch_size < batch_size:
            raise DataError(
                f"an epoch of {self.epoch_size} samples makes no full batch of {batch_size}; "
                "lower trainer.batch_size."
            )

    @property
    def epoch_size(self) -> int:
        """Samples one epoch serves (before a dropped remainder)."""
        if self._with_fg is None:
            return len(self.samples) + len(self._again)
        return len(self._with_fg) + len(self._again) + self._empty_per_epoch

    def __len__(self) -> int:
        if self.drop_remainder:
            return self.epoch_size // self.batch_size
        batches = math.ceil(self.epoch_size / self.batch_size)
        rank, processes = self.shard
        last = self.epoch_size - (batches - 1) * self.batch_size
        if self.equal_parts:
            return batches - 1 if last < processes else batches
        return batches - 1 if rank >= last else batches  # a last batch too small to share

    def batch_nbytes(self) -> int | None:
        """Bytes of the largest batch, or None when images differ in size."""
        if self.spec.image_size is None:
            return None
        height, width = self.spec.image_size
        return self.batch_size * height * width * (self.spec.channels + self.num_classes) * 4

    def order(self, epoch: int) -> np.ndarray:
        """Indices of the samples in the order epoch `epoch` serves them."""
        if not self.shuffle:
            return np.arange(len(self.samples))
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, _SHUFFLE, epoch]))
        if self._with_fg is None:
            return rng.permutation(np.concatenate([np.arange(len(self.samples)), self._again]))
        empty = rng.choice(self._empty, self._empty_per_epoch, replace=False)
        return rng.permutation(np.concatenate([self._with_fg, self._again, empty]))

    def _split_by_foreground(
        self, fraction: float | None, small_lesions: tuple[int, int] | None
    ) -> None:
        if fraction is not None and not 0 < fraction <= 1:
            raise DataError(
                f"foreground_fraction must be in (0, 1]. Received: foreground_fraction={fraction}"
            )
        if self.cache is not None or small_lesions is not None:
            # sized as the model sees them (lesion sizes in its pixels)
            masks = (self.read(i)[1] for i in range(len(self.samples)))
        else:  # whether a mask has foreground: its file is enough
            limits = self.spec.max_pixels, self.spec.max_voxels
            masks = (
                decode_sample_mask(s, self.num_classes, self.colormap, *limits)[0]
                for s in self.samples
            )
        pixels = np.array([np.count_nonzero(mask) for mask in masks])
        if not pixels.any():
            key = "foreground_fraction" if fraction is not None else "small_lesion_pixels"
            raise DataError(
                f"trainer.{key} is set but no training mask has foreground; check the masks or "
                f"set trainer.{key}=null."
            )
        if small_lesions is not None:
            below, repeats = small_lesions
            self._again = np.repeat(np.flatnonzero((pixels > 0) & (pixels < below)), repeats - 1)
        if fraction is not None:
            self._with_fg, self._empty = np.flatnonzero(pixels), np.flatnonzero(pixels == 0)
            wanted = round(len(self._with_fg) * (1 - fraction) / fraction)
            self._empty_per_epoch = min(wanted, len(self._empty))

    def batch(self, epoch: int, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Batch `index` of epoch `epoch`: images (B, H, W, C) and one-hot masks (B, H, W, K).

        Raises:
            IndexError: `index` is not a batch of an epoch.
            DataError: naming a file that cannot be read.
        """
        if not 0 <= index < len(self):
            raise IndexError(f"batch {index} of a dataset of {len(self)} batches")
        chosen = self.order(epoch)[index * self.batch_size : (index + 1) * self.batch_size]
        rank, processes = self.shard
        if self.equal_parts:
            chosen = chosen[: len(chosen) - len(chosen) % processes]
        chosen = np.array_split(chosen, processes)[rank]  # consecutive parts, sizes differ by <= 1
        images, masks = zip(*(self.load(int(i), epoch) for i in chosen), strict=True)
        sizes = {mask.shape: int(i) for i, mask in zip(chosen, masks, strict=True)}
        if len(sizes) > 1:
            (one, a), (other, b) = list(sizes.items())[:2]
            a, b = self.samples[a], self.samples[b]
            raise DataError(
                f"one batch holds images of different sizes: {a.name} ({a.image}) is {one} and "
                f"{b.name} ({b.image}) is {other} (height, width) after reading; "
                "set dataset.image_size=[height,width] to pad (or, with "
                "dataset.size_policy=resize, resize) every image to one size."
            )
        images = np.stack(images)  # (B, H, W, C)
        masks = np.stack(masks)  # (B, H, W)
        return images, np.eye(self.num_classes, dtype=np.float32)[masks]  # (B, H, W, K)

    def load(self, i: int, epoch: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Sample `i` as (image (H, W, C) float32, mask (H, W) uint8), augmented if set."""
        raw, mask = self.read(i)
        if self.stand_in is not None:
            channel, p = self.stand_in
            rng = np.random.default_rng(np.random.SeedSequence([self.seed, _STAND_IN, epoch, i]))
            if rng.random() < p:
                raw = stand_in(raw, channel)
        image, scale = to_unit(raw)
        if self.augment is not None:
            reseed(self.augment, self.seed, _AUGMENT, epoch, i)
            out = self.augment(image=image, mask=mask)
            if out["mask"].shape != mask.shape:
                raise DataError(
                    f"the augmentation turned {self.samples[i].image} from {mask.shape} into "
                    f"{out['mask'].shape} (height, width); a transform that changes the size "
                    "(e.g. RandomRotate90 on non-square images or a crop) breaks batching."
                )
            image, mask = out["image"], out["mask"]
            if image.ndim == 2:
                image = image[..., None]
        stats = self.group_stats.get(self.samples[i].group)
        return to_model_input(image, scale, self.spec, stats), mask

    def read(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Sample `i` decoded and sized: (image (H, W, C) in its file's type, mask (H, W))."""
        if self.cache is not None:
            return self.cache.get(i)
        return read_pair(self.samples[i], self.num_classes, self.spec, self.colormap)


def reseed(augment: A.Compose, *key: int) -> None:
    """Seeds `augment` for one draw by `key` (numpy's SeedSequence): the same result in any
    process, in any order."""
    augment.set_random_seed(int(np.random.SeedSequence(list(key)).generate_state(1)[0]))


def read_pair(
    sample: Sample, num_classes: int, spec: ReadSpec, colormap: ColorMap | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """A sample's raw image and class-id mask, sized by `spec`.

    Raises:
        DataError: naming the file: unreadable, unknown mask colours, a class id beyond
            `num_classes`, image and mask of different sizes, or too large to pad.
    """
    raw = read_sample(sample, spec)
    limits = spec.max_pixels, spec.max_voxels
    mask, report = decode_sample_mask(sample, num_classes, colormap, *limits)
    if report.unknown:
        colors = ", ".join(f"{list(c)} ({n} pixels)" for c, n in report.unknown.items())
        raise DataError(
            f"mask {sample.mask} has colours that are not in dataset.rgb_map: {colors}; add "
            "them to the map or raise dataset.color_tolerance."
        )
    if report.misplaced_files:
        raise DataError(f"mask {sample.mask} has {report.misplaced_files[str(sample.mask)]}")
    if sample.whole:
        if raw.shape[:-1] != mask.shape:
            raise DataError(
                f"image {sample.image} is {raw.shape[:-1]} voxels but its label volume "
                f"{sample.mask} is {mask.shape}; they must match."
            )
    elif raw.shape[:2] != mask.shape:
        raise DataError(
            f"image {sample.image} is {raw.shape[1]}x{raw.shape[0]} but its mask "
            f"{sample.mask} is {mask.shape[1]}x{mask.shape[0]} (width x height); they must "
            "match."
        )
    if mask.max(initial=0) >= num_classes:
        what = "label volume" if sample.volume else "mask"
        raise DataError(
            f"{what} {sample.mask} holds class id {int(mask.max())} but num_classes is "
            f"{num_classes}; fix dataset.num_classes or the mask."
        )
    if sample.whole:  # patches are cut (and padded) by flexseg.data.patches
        return raw, mask
    return fit_size(raw, mask, spec, f"image {sample.image}")
