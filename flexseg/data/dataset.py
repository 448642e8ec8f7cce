"""SegmentationDataset: a streaming keras.utils.PyDataset of images and one-hot masks."""

from __future__ import annotations

import copy
import math
import threading
from collections.abc import Sequence

import albumentations as A
import keras
import numpy as np

from flexseg.data.masks import ColorMap, MaskReport, decode_mask
from flexseg.data.reading import (
    IntensityStats,
    ReadSpec,
    fit_size,
    intensity_stats,
    read_image,
    to_model_input,
    to_unit,
)
from flexseg.data.sources import Sample
from flexseg.errors import DataError

# Seeds of an epoch's shuffle and of each sample's augmentation are derived from the dataset
# seed with numpy's SeedSequence, so they are the same on every backend and for any number
# of workers.
_SHUFFLE, _AUGMENT = 0, 1


class SegmentationDataset(keras.utils.PyDataset):
    """Batches of (images, one-hot masks), read and augmented per batch.

    Nothing is held in memory beyond the batches in flight (unless `cache=True`), so peak
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
        cache: keep decoded, sized images and masks in memory (for small sets; each worker
            process keeps its own copy).
        group_stats: intensity statistics per group, for `normalize="group_zscore"`;
            computed from the samples when None.
        workers, use_multiprocessing, max_queue_size: see `keras.utils.PyDataset`.

    Example:
    >>> splits = find_samples(DatasetConfig(name="scans", root="data", ...), seed=0)
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
        cache: bool = False,
        group_stats: dict[str, IntensityStats] | None = None,
        workers: int = 1,
        use_multiprocessing: bool = False,
        max_queue_size: int = 10,
    ):
        super().__init__(
            workers=workers, use_multiprocessing=use_multiprocessing, max_queue_size=max_queue_size
        )
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
        self.cache = cache
        self.epoch = 0
        self.report = MaskReport()
        self.read_error: DataError | None = None  # the last file that failed to read
        self._cache: dict[int, tuple] = {}
        self._local = threading.local()
        if spec.normalize == "group_zscore" and group_stats is None:
            group_stats = compute_group_stats(self.samples, spec)
        self.group_stats = group_stats or {}
        self.foreground_fraction = foreground_fraction
        self._with_fg = self._empty = None
        if foreground_fraction is not None and shuffle:
            self._split_by_foreground(foreground_fraction)
        if drop_remainder and self.epoch_size < batch_size:
            raise DataError(
                f"an epoch of {self.epoch_size} samples makes no full batch of {batch_size}; "
                "lower trainer.batch_size."
            )

    @property
    def epoch_size(self) -> int:
        """Samples one epoch serves (before a dropped remainder)."""
        if self._with_fg is None:
            return len(self.samples)
        return len(self._with_fg) + self._empty_per_epoch

    def __len__(self) -> int:
        if self.drop_remainder:
            return self.epoch_size // self.batch_size
        return math.ceil(self.epoch_size / self.batch_size)

    def order(self, epoch: int) -> np.ndarray:
        """Indices of the samples in the order epoch `epoch` serves them."""
        if not self.shuffle:
            return np.arange(len(self.samples))
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, _SHUFFLE, epoch]))
        if self._with_fg is None:
            return rng.permutation(len(self.samples))
        empty = rng.choice(self._empty, self._empty_per_epoch, replace=False)
        return rng.permutation(np.concatenate([self._with_fg, empty]))

    def _split_by_foreground(self, fraction: float) -> None:
        if not 0 < fraction <= 1:
            raise DataError(
                f"foreground_fraction must be in (0, 1]. Received: foreground_fraction={fraction}"
            )
        has_fg = np.array(
            [
                decode_mask(s.mask, self.num_classes, self.colormap, self.spec.max_pixels)[0].any()
                for s in self.samples
            ]
        )
        self._with_fg, self._empty = np.flatnonzero(has_fg), np.flatnonzero(~has_fg)
        if not len(self._with_fg):
            raise DataError(
                "foreground_fraction is set but no training mask has foreground; check the "
                "masks or set trainer.foreground_fraction=null."
            )
        wanted = round(len(self._with_fg) * (1 - fraction) / fraction)
        self._empty_per_epoch = min(wanted, len(self._empty))

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if not 0 <= index < len(self):
            raise IndexError(f"batch {index} of a dataset of {len(self)} batches")
        order = self.order(self.epoch)
        chosen = order[index * self.batch_size : (index + 1) * self.batch_size]
        try:
            images, masks = zip(*(self.load(int(i), self.epoch) for i in chosen), strict=True)
        except DataError as error:
            # Kept for the trainer: TensorFlow's input pipeline re-raises it as its own error.
            self.read_error = error
            raise
        images = np.stack(images)  # (B, H, W, C)
        masks = np.stack(masks)  # (B, H, W)
        return images, np.eye(self.num_classes, dtype=np.float32)[masks]  # (B, H, W, K)

    def load(self, i: int, epoch: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Sample `i` as (image (H, W, C) float32, mask (H, W) uint8), augmented if set."""
        sample = self.samples[i]
        if i in self._cache:
            image, mask, scale = self._cache[i]
        else:
            image, mask, scale = self.read(sample)
            if self.cache:
                self._cache[i] = (image, mask, scale)
        if self.augment is not None:
            pipeline = self._pipeline()
            pipeline.set_random_seed(
                int(np.random.SeedSequence([self.seed, _AUGMENT, epoch, i]).generate_state(1)[0])
            )
            out = pipeline(image=image, mask=mask)
            if out["mask"].shape != mask.shape:
                raise DataError(
                    f"the augmentation turned {sample.image} from {mask.shape} into "
                    f"{out['mask'].shape} (height, width); a transform that changes the size "
                    "(e.g. RandomRotate90 on non-square images or a crop) breaks batching."
                )
            image, mask = out["image"], out["mask"]
            if image.ndim == 2:
                image = image[..., None]
        stats = self.group_stats.get(sample.group)
        return to_model_input(image, scale, self.spec, stats), mask

    def read(self, sample: Sample) -> tuple[np.ndarray, np.ndarray, float]:
        """(unit-scaled image (H, W, C) float32, mask (H, W) uint8, the raw full scale)."""
        raw, mask, report = read_pair(sample, self.num_classes, self.spec, self.colormap)
        self.report.update(report)
        unit, scale = to_unit(raw)
        return unit, mask, scale

    def on_epoch_end(self) -> None:
        self.epoch += 1

    def _pipeline(self) -> A.Compose:
        # Each thread gets its own copy: a pipeline's random state is not thread-safe.
        pipeline = getattr(self._local, "pipeline", None)
        if pipeline is None:
            pipeline = self._local.pipeline = copy.deepcopy(self.augment)
        return pipeline

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_local"] = None  # thread-locals do not cross process boundaries
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._local = threading.local()


def read_pair(
    sample: Sample, num_classes: int, spec: ReadSpec, colormap: ColorMap | None = None
) -> tuple[np.ndarray, np.ndarray, MaskReport]:
    """A sample's raw image and class-id mask, sized by `spec`, with the mask's colour report.

    Raises:
        DataError: naming the file: unreadable, unknown mask colours, a class id beyond
            `num_classes`, image and mask of different sizes, or too large to pad.
    """
    raw = read_image(sample.image, spec.channels, spec.max_pixels)
    mask, report = decode_mask(sample.mask, num_classes, colormap, spec.max_pixels)
    if report.unknown:
        colors = ", ".join(f"{list(c)} ({n} pixels)" for c, n in report.unknown.items())
        raise DataError(
            f"mask {sample.mask} has colours that are not in dataset.rgb_map: {colors}; add "
            "them to the map or raise dataset.color_tolerance."
        )
    if report.misplaced_files:
        raise DataError(f"mask {sample.mask} has {report.misplaced_files[str(sample.mask)]}")
    if raw.shape[:2] != mask.shape:
        raise DataError(
            f"image {sample.image} is {raw.shape[1]}x{raw.shape[0]} but its mask "
            f"{sample.mask} is {mask.shape[1]}x{mask.shape[0]} (width x height); they must "
            "match."
        )
    if mask.max(initial=0) >= num_classes:
        raise DataError(
            f"mask {sample.mask} holds class id {int(mask.max())} but num_classes is "
            f"{num_classes}; fix dataset.num_classes or the mask."
        )
    raw, mask = fit_size(raw, mask, spec, f"image {sample.image}")
    return raw, mask, report


def compute_group_stats(samples: Sequence[Sample], spec: ReadSpec) -> dict[str, IntensityStats]:
    """Intensity statistics of each group's images, streamed one image at a time."""
    groups: dict[str, list[Sample]] = {}
    for sample in samples:
        groups.setdefault(sample.group, []).append(sample)

    def unit_images(members):
        for s in members:
            raw = read_image(s.image, spec.channels, spec.max_pixels)
            yield to_unit(raw)[0]

    return {group: intensity_stats(unit_images(members), spec) for group, members in groups.items()}
