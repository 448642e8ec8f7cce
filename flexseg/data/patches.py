"""Patches: the batches of 3D training, random patches of whole volumes.

Each batch holds `batch_size` patches of `patch_size` voxels, each from a case of the
epoch's shuffled order; the last `foreground_share` of every batch (nnU-Net: a third) is
centred on a voxel of a foreground class (a class drawn first among those the case has,
so that a rare class counts as much as a common one), the others lie anywhere in the
volume. A volume smaller than a patch along an axis is padded (image with zeros, the
normalised mean; labels with background). As in 2D, `batch(epoch, index)` depends only on
its arguments and the constructor's: the same seed gives the same patches and the same
augmentation in any process, on any backend, for any number of workers.

Axes are the volumes' RAS order (x, y, z): `patch_size` and a model's per-axis kernels and
pooling name them in that order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from flexseg.data.batches import read_pair, reseed
from flexseg.data.cache import SampleCache
from flexseg.data.reading import ReadSpec
from flexseg.data.sources import Sample
from flexseg.errors import DataError

if TYPE_CHECKING:
    import albumentations as A

_ORDER, _PATCH, _AUGMENT = 10, 11, 12
# foreground voxels kept per class and case to centre patches on (a seeded draw)
MAX_LOCATIONS = 10_000


def pad_to(
    image: np.ndarray, labels: np.ndarray | None, patch: Sequence[int]
) -> tuple[np.ndarray, np.ndarray | None]:
    """(X, Y, Z, C) image and (X, Y, Z) labels padded, centred, to at least `patch`."""
    pads = []
    for size, want in zip(image.shape[:3], patch, strict=True):
        extra = max(want - size, 0)
        pads.append((extra // 2, extra - extra // 2))
    if not any(map(sum, pads)):
        return image, labels
    image = np.pad(image, (*pads, (0, 0)))
    return image, None if labels is None else np.pad(labels, pads)


def class_locations(labels: np.ndarray, seed: Sequence[int]) -> dict[int, np.ndarray]:
    """Per foreground class present, up to `MAX_LOCATIONS` of its voxels (N, 3), drawn with
    `seed`."""
    rng = np.random.default_rng(np.random.SeedSequence(list(seed)))
    found = {}
    for cls in np.unique(labels):
        if cls == 0:
            continue
        where = np.argwhere(labels == cls)
        if len(where) > MAX_LOCATIONS:
            where = where[np.sort(rng.choice(len(where), MAX_LOCATIONS, replace=False))]
        found[int(cls)] = where
    return found


def patch_corner(
    shape: Sequence[int],
    patch: Sequence[int],
    rng: np.random.Generator,
    centre: Sequence[int] | None = None,
) -> tuple[int, ...]:
    """The first voxel of a patch inside a volume of `shape` (each axis >= the patch): at a
    uniform place, or centred on `centre` as far as the volume's edges allow."""
    corner = []
    for axis, (size, want) in enumerate(zip(shape, patch, strict=True)):
        room = size - want
        if centre is None:
            corner.append(int(rng.integers(0, room + 1)))
        else:
            corner.append(min(max(int(centre[axis]) - want // 2, 0), room))
    return tuple(corner)


class PatchBatches:
    """The batches of random patches of whole-volume samples (see the module's docstring).

    Args:
        samples: whole volumes (`Sample.whole`), one per case.
        num_classes: classes of the one-hot labels.
        batch_size: patches per batch (of all processes together under `shard`).
        spec: how the volumes are read and normalised.
        patch_size: (x, y, z) voxels of a patch.
        augment: an albumentations pipeline of volume transforms (`volume`, `mask3d`
            targets), or None.
        shuffle: a fresh case order each epoch; without it, cases in order and patches
            centred on each volume (a fixed validation set).
        seed: seed of the order, the patches and the augmentation.
        foreground_share: the share of each batch centred on foreground, in [0, 1].
        patches_per_epoch: patches an epoch serves; None: one per case.
        cache: decoded volumes shared by processes (`flexseg.data.cache`), or None.
        shard: (process, processes): each serves its consecutive part of every batch.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        num_classes: int,
        batch_size: int,
        spec: ReadSpec,
        patch_size: Sequence[int],
        augment: A.Compose | None = None,
        shuffle: bool = False,
        seed: int = 0,
        foreground_share: float = 1 / 3,
        patches_per_epoch: int | None = None,
        cache: SampleCache | None = None,
        shard: tuple[int, int] = (0, 1),
    ):
        if not samples:
            raise DataError("the dataset has no cases; check the dataset path and split.")
        if batch_size < 1:
            raise DataError(f"batch_size must be >= 1. Received: batch_size={batch_size}")
        if not 0 <= foreground_share <= 1:
            raise DataError(
                f"foreground_share must be in [0, 1]. Received: foreground_share={foreground_share}"
            )
        if len(patch_size) != 3 or min(patch_size) < 1:
            raise DataError(
                f"patch_size must be 3 positive sizes (x, y, z). Received: {list(patch_size)}"
            )
        self.samples = list(samples)
        self.num_classes = num_classes
        self.batch_size = batch_size
        self.spec = spec
        self.patch_size = tuple(int(p) for p in patch_size)
        self.augment = augment
        self.shuffle = shuffle
        self.seed = seed
        self.foreground_share = foreground_share
        self.cache = cache
        self.shard = shard
        self.group_stats: dict = {}
        self._epoch_size = patches_per_epoch or len(self.samples)
        self._locations: dict[int, dict[int, np.ndarray]] = {}

    @property
    def epoch_size(self) -> int:
        """Patches one epoch serves."""
        return self._epoch_size

    def __len__(self) -> int:
        return math.ceil(self.epoch_size / self.batch_size)

    def batch_nbytes(self) -> int:
        """Bytes of one batch's patches and one-hot labels."""
        voxels = math.prod(self.patch_size)
        return self.batch_size * voxels * (self.spec.channels + self.num_classes) * 4

    def order(self, epoch: int) -> np.ndarray:
        """The case of each patch of epoch `epoch`, in order."""
        repeats = math.ceil(self.epoch_size / len(self.samples))
        cases = np.tile(np.arange(len(self.samples)), repeats)
        if self.shuffle:
            rng = np.random.default_rng(np.random.SeedSequence([self.seed, _ORDER, epoch]))
            cases = np.concatenate([rng.permutation(len(self.samples)) for _ in range(repeats)])
        return cases[: self.epoch_size]

    def batch(self, epoch: int, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Batch `index` of epoch `epoch`: patches (B, X, Y, Z, C) and one-hot labels
        (B, X, Y, Z, K).

        Raises:
            IndexError: `index` is not a batch of an epoch.
            DataError: naming a file that cannot be read.
        """
        if not 0 <= index < len(self):
            raise IndexError(f"batch {index} of a dataset of {len(self)} batches")
        start = index * self.batch_size
        cases = self.order(epoch)[start : start + self.batch_size]
        count = len(cases)
        forced = count - round(count * self.foreground_share)  # the last slots: foreground
        slots = np.array_split(np.arange(count), self.shard[1])[self.shard[0]]
        pairs = [self.patch(int(cases[k]), epoch, start + int(k), bool(k >= forced)) for k in slots]
        images, labels = zip(*pairs, strict=True)
        labels = np.stack(labels)
        return np.stack(images), np.eye(self.num_classes, dtype=np.float32)[labels]

    def patch(
        self, i: int, epoch: int, position: int, foreground: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        """A patch of case `i`, (X, Y, Z, C) float32 and (X, Y, Z) uint8, for the patch at
        `position` of epoch `epoch`: centred on foreground if asked and the case has any;
        augmented if set."""
        image, labels = self.read(i)
        image, labels = pad_to(image, labels, self.patch_size)
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, _PATCH, epoch, position]))
        centre = None
        if not self.shuffle:  # validation: the middle of each volume, the same every epoch
            centre = [s // 2 for s in labels.shape]
        elif foreground:
            locations = self.locations(i, labels)
            if locations:
                voxels = locations[list(locations)[rng.integers(len(locations))]]
                centre = voxels[rng.integers(len(voxels))]
        corner = patch_corner(labels.shape, self.patch_size, rng, centre)
        box = tuple(slice(c, c + p) for c, p in zip(corner, self.patch_size, strict=True))
        image, labels = image[box], labels[box]
        if self.augment is not None:
            reseed(self.augment, self.seed, _AUGMENT, epoch, position)
            # `images` (the first plane) only feeds the parameters of the transforms that
            # read them from an image (RandomBrightnessContrast); its output is not used
            out = self.augment(volume=image, mask3d=labels, images=image[:1])
            if out["mask3d"].shape != labels.shape:
                raise DataError(
                    f"the augmentation turned a patch of {self.samples[i].image} from "
                    f"{labels.shape} into {out['mask3d'].shape} voxels; transforms of 3D "
                    "training must keep the patch size (crop and pad to dataset.patch_size)."
                )
            image, labels = out["volume"], out["mask3d"]
        return np.ascontiguousarray(image, np.float32), np.ascontiguousarray(labels, np.uint8)

    def locations(self, i: int, labels: np.ndarray) -> dict[int, np.ndarray]:
        """Foreground voxels of case `i` per class (of its padded labels), kept per process."""
        if i not in self._locations:
            self._locations[i] = class_locations(labels, [self.seed, i])
        return self._locations[i]

    def load(self, i: int, epoch: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """The patch of case `i` at the volume's centre (what a preview shows)."""
        return self.patch(i, epoch, 0, False) if self.shuffle else self.patch(i, 0, i, False)

    def read(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Case `i` decoded and normalised: ((X, Y, Z, C) float32, (X, Y, Z) class ids)."""
        if self.cache is not None:
            return self.cache.get(i)
        return read_pair(self.samples[i], self.num_classes, self.spec)
