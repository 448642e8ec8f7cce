"""Reading images, fitting them to the model's size, and normalising intensities."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from flexseg.data import readers, volumes
from flexseg.data.files import MAX_PIXELS, read_checked
from flexseg.errors import ConfigError, DataError

if TYPE_CHECKING:
    from flexseg.data.sources import Sample

PICTURE_CHANNELS = (1, 3)  # what 2D files are read as: gray, or RGB
SIZE_POLICIES = ("pad", "resize")
NORMALIZATIONS = ("scale01", "zscore", "group_zscore", "volume_zscore", "dataset_zscore", "none")
# what only volumes are normalised with (read_sample does it, on the whole volume)
VOLUME_ONLY = ("volume_zscore", "dataset_zscore")
# what volumes may be normalised with (the others assume a picture's 0..max range)
VOLUME_NORMALIZATIONS = (*VOLUME_ONLY, "none")


@dataclass(frozen=True)
class ReadSpec:
    """How files become model inputs.

    Args:
        channels: of 2D files, 1 reads gray, 3 reads RGB (a gray file is repeated, an RGB
            file averaged to gray only when `channels` is 1); of volumes, the channels a
            case has (its channel files, or a 4D file's fourth axis), read as they are.
        size_policy: `"pad"` zero-pads each image, centred, to `image_size` (or, without one,
            up to multiples of `size_multiple`); the padding is cut off again at inference.
            `"resize"` resizes to `image_size` (images bilinear, masks nearest neighbour).
        image_size: (height, width) of the model input; required for `"resize"`.
        size_multiple: `2**(num_layers - 1)` of the model, for `"pad"` without `image_size`.
        normalize: `"scale01"` divides by the type's maximum (255 for 8-bit); `"zscore"`
            standardises each image; `"group_zscore"` standardises with the statistics of all
            images of the same group (the patient), the robust choice when scanners or
            patients differ in brightness; `"volume_zscore"` standardises each channel of a
            volume with its own statistics (`flexseg.data.volumes.normalized`: MRI as
            nnU-Net does it); `"dataset_zscore"` clips and standardises each channel with
            `intensity_stats` of the whole data set (CT, whose intensities mean the same in
            every scan); `"none"` keeps raw values. Volumes take only the last three.
        clip_percentiles: (low, high) percentiles to clip intensities at before z-scoring,
            or None.
        ignore_zero: compute z-score statistics over non-zero pixels only (the background of
            skull-stripped MRI is exactly zero and would dominate them).
        max_pixels: the most pixels a file's header may declare (see `flexseg.data.files`).
        context_slices: of a slice of a volume, the neighbouring slices on each side read
            as further channels (2.5D): the model sees `channels * (2 * context_slices + 1)`.
        max_voxels: the most voxels a volume's header may declare.
        intensity_stats: of `"dataset_zscore"`, one (low, high, mean, std) per channel
            (`flexseg.data.volumes.foreground_intensities` of the training cases).
    """

    # The defaults of the `dataset` config too.
    channels: int = 1
    size_policy: str = "pad"
    image_size: tuple[int, int] | None = None
    size_multiple: int = 1
    normalize: str = "scale01"
    clip_percentiles: tuple[float, float] | None = None
    ignore_zero: bool = True
    max_pixels: int = MAX_PIXELS
    context_slices: int = 0
    max_voxels: int = volumes.MAX_VOXELS
    intensity_stats: tuple[tuple[float, float, float, float], ...] | None = None

    def __post_init__(self):
        if self.channels < 1:
            raise ConfigError(f"dataset.channels must be >= 1. Received: {self.channels!r}")
        if self.context_slices < 0:
            raise ConfigError(
                f"dataset.context_slices must be >= 0. Received: {self.context_slices!r}"
            )
        if self.size_policy not in SIZE_POLICIES:
            raise ConfigError(
                f"dataset.size_policy must be one of {SIZE_POLICIES}. "
                f"Received: {self.size_policy!r}"
            )
        if (self.size_policy == "resize" or self.image_size is not None) and (
            self.image_size is None or len(self.image_size) != 2 or min(self.image_size) < 1
        ):
            raise ConfigError(
                "dataset.image_size must be [height, width] of positive integers (required with "
                f"size_policy=resize). Received: {self.image_size!r}"
            )
        if self.normalize not in NORMALIZATIONS:
            raise ConfigError(
                f"dataset.normalize must be one of {NORMALIZATIONS}. Received: {self.normalize!r}"
            )
        if self.clip_percentiles is not None:
            low, high = self.clip_percentiles
            if not 0 <= low < high <= 100:
                raise ConfigError(
                    "dataset.clip_percentiles must be [low, high] with 0 <= low < high <= 100. "
                    f"Received: {list(self.clip_percentiles)}"
                )


def read_image(
    path: str | Path,
    channels: int | None = 1,
    max_pixels: int = MAX_PIXELS,
    index: int | None = None,
) -> np.ndarray:
    """Reads an image as (H, W, channels) in its own type (uint8, uint16 or float32).

    `channels` 1 gives gray (RGB files averaged), 3 gives RGB (gray files repeated), None
    keeps what the file holds. The file is checked before it is decoded
    (`flexseg.data.files.read_checked`) by the reader of its format (`flexseg.data.readers`).
    `index` is a sample's place in the file (`Sample.index`): None for the whole file.

    Raises:
        DataError: the file is missing, not a file, empty, truncated, corrupt, not an image,
            larger than `max_pixels`, or holds NaN or infinite pixels; or it has no place
            `index`.
    """
    path = Path(path)
    data, header = read_checked(path, max_pixels, "image")
    image = in_place(readers.by_name(header.format).image(data, header, path), index, path)
    if image.dtype.kind == "f":
        bad = int(np.count_nonzero(~np.isfinite(image)))
        if bad:  # it would make every probability NaN, and the mask all background
            raise DataError(
                f"image {path} has {bad:,} NaN or infinite pixel(s); fill them (e.g. with 0) "
                "or remove the file."
            )
    return image if channels is None else convert_channels(image, channels, path)


def read_sample(sample: Sample, spec: ReadSpec) -> np.ndarray:
    """A sample's image as (H, W, C): a 2D file by `read_image`, a slice of a volume (with
    its `context_slices` neighbours as further channels) from the case's channel volumes
    (or the whole volume, (X, Y, Z, C), for a whole-volume sample),
    normalised by `spec.normalize` (`flexseg.data.volumes.normalized`).

    Raises:
        DataError: naming the file: unreadable, a normalisation that does not fit the
            kind of file, channel files off the first one's grid, or a channel count other
            than `spec.channels`.
    """
    if not sample.volume:
        if spec.normalize in VOLUME_ONLY:
            raise DataError(
                f"dataset.normalize={spec.normalize} standardises volumes, but {sample.image} "
                "is a 2D image; use zscore or group_zscore."
            )
        return read_image(sample.image, spec.channels, spec.max_pixels, sample.index)
    if spec.normalize not in VOLUME_NORMALIZATIONS:
        raise DataError(
            f"{sample.image} is a volume and dataset.normalize={spec.normalize} is for 2D "
            "images; set dataset.normalize=volume_zscore (or none for raw intensities)."
        )
    first = volumes.geometry(sample.image, "image", spec.max_voxels)
    context = 0 if sample.whole else spec.context_slices
    parts, channel = [], 0
    for path in sample.images:
        if path != sample.image:
            why = first.same_grid(volumes.geometry(path, "image", spec.max_voxels))
            if why:
                raise DataError(
                    f"channel file {path} has {why} of {sample.image}; the channels of a case "
                    "must lie on one grid (resample them onto the first)."
                )
        stats = None
        if spec.intensity_stats is not None:  # this file's channels' rows
            count = volumes.load(path, "image", spec.max_voxels).voxels.shape[-1]
            stats = spec.intensity_stats[channel : channel + count]
        voxels = volumes.normalized(
            path, spec.normalize, spec.clip_percentiles, spec.ignore_zero, spec.max_voxels, stats
        )
        channel += voxels.shape[-1]
        if len(sample.images) > 1 and voxels.shape[-1] > 1:
            raise DataError(
                f"channel file {path} has {voxels.shape[-1]} channels on a fourth axis, and its "
                "case keeps one channel per file; save each channel as a 3D volume."
            )
        parts.append(volumes.cut(voxels, sample.axis, sample.index, context))
    image = np.concatenate(parts, -1)
    found = image.shape[-1] // (2 * context + 1)
    if found != spec.channels:
        files = ", ".join(p.name for p in sample.images)
        raise DataError(
            f"case {sample.case} has {found} channel(s) ({files}) but dataset.channels="
            f"{spec.channels}; set dataset.channels={found}."
        )
    return image


def in_place(pixels: np.ndarray, index: int | None, path: Path) -> np.ndarray:
    """The part of a file's pixels a sample is: all of them (`index` None), or slice `index`
    of a volume's (D, H, W, ...)."""
    if index is None:
        return pixels
    if pixels.ndim < 4 or not 0 <= index < len(pixels):
        what = "a 2D image" if pixels.ndim < 4 else f"a volume of {len(pixels)} slices"
        raise DataError(f"{path} is {what}; it has no slice {index}.")
    return pixels[index]


def convert_channels(image: np.ndarray, channels: int, path: str | Path = "") -> np.ndarray:
    """(H, W, C) -> (H, W, channels): RGB averaged to gray, gray repeated to RGB."""
    if image.shape[-1] == channels:
        return image
    if channels not in PICTURE_CHANNELS:
        raise DataError(
            f"image {path} has {image.shape[-1]} channel(s) and dataset.channels={channels}; "
            "2D files are read as gray (1) or RGB (3)."
        )
    if channels == 1:
        return image.mean(axis=-1, keepdims=True).astype(image.dtype)
    return np.repeat(image[..., :1], channels, axis=-1)


def unit_scale(dtype: np.dtype) -> float:
    """The value that stands for full intensity in images of this type."""
    return float(np.iinfo(dtype).max) if np.issubdtype(dtype, np.integer) else 1.0


def stand_in(raw: np.ndarray, channel: int) -> np.ndarray:
    """`raw` (H, W, C) with every channel replaced by channel `channel`: a scan whose missing
    sequences were filled with the one it has."""
    if raw.ndim < 3 or raw.shape[-1] == 1:
        return raw
    return np.repeat(raw[..., channel : channel + 1], raw.shape[-1], axis=-1)


def stand_in_problem(key: str, channel: int | None, channels: int) -> str | None:
    """Why `key`=`channel` cannot stand in for the channels of `channels`-channel images."""
    if channel is None or channel < channels:
        return None
    return (
        f"{key}={channel} is not a channel of the images (dataset.channels={channels}); "
        f"use 0 to {channels - 1}."
    )


def to_unit(image: np.ndarray) -> tuple[np.ndarray, float]:
    """A raw image as float32 with full intensity at 1, and the raw value of full intensity."""
    scale = unit_scale(image.dtype)
    return image.astype(np.float32) / scale, scale


def padding_for(shape: Sequence[int], multiple: int) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) that centre an (H, W) image in multiples of `multiple`."""
    return padding_to(shape, [math.ceil(size / multiple) * multiple for size in shape[:2]])


def padding_to(shape: Sequence[int], target: Sequence[int]) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) that centre an (H, W) image in a (height, width) frame."""
    pads = []
    for size, goal in zip(shape[:2], target, strict=True):
        extra = max(0, goal - size)
        pads += [extra // 2, extra - extra // 2]
    return tuple(pads)


def fit_size(
    image: np.ndarray, mask: np.ndarray | None, spec: ReadSpec, source: str = "image"
) -> tuple[np.ndarray, np.ndarray | None]:
    """Pads or resizes an image (H, W, C) and its mask (H, W) as the spec says."""
    if spec.size_policy == "resize":
        height, width = spec.image_size
        if image.shape[:2] != (height, width):
            resized = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
            image = resized.reshape(height, width, image.shape[2])
            if mask is not None:
                mask = cv2.resize(mask, (width, height), interpolation=cv2.INTER_NEAREST)
        return image, mask
    if spec.image_size is not None:
        if image.shape[0] > spec.image_size[0] or image.shape[1] > spec.image_size[1]:
            raise DataError(
                f"{source} is {image.shape[1]}x{image.shape[0]} (width x height), larger than "
                f"dataset.image_size {list(spec.image_size)} (height, width) and size_policy=pad "
                "cannot shrink it; raise dataset.image_size or set dataset.size_policy=resize."
            )
        top, bottom, left, right = padding_to(image.shape, spec.image_size)
    else:
        top, bottom, left, right = padding_for(image.shape, spec.size_multiple)
    if top or bottom or left or right:
        image = np.pad(image, ((top, bottom), (left, right), (0, 0)))
        if mask is not None:
            mask = np.pad(mask, ((top, bottom), (left, right)))
    return image, mask


@dataclass(frozen=True)
class IntensityStats:
    """Per-channel clip bounds, mean and standard deviation, in unit-scaled intensities."""

    low: np.ndarray
    high: np.ndarray
    mean: np.ndarray
    std: np.ndarray


def intensity_stats(images: Iterable[np.ndarray], spec: ReadSpec) -> IntensityStats:
    """Statistics over many unit-scaled images (H, W, C), streamed through histograms.

    Memory stays at one image and a 4096-bin histogram per channel, whatever the count.
    """
    bins = 4096
    hist = None
    for image in images:
        image = np.clip(image, 0.0, 1.0)
        if hist is None:
            hist = np.zeros((image.shape[-1], bins), np.int64)
        for c in range(image.shape[-1]):
            values = image[..., c]
            if spec.ignore_zero:
                values = values[values > 0]
            hist[c] += np.bincount(
                np.minimum((values * bins).astype(np.int64), bins - 1).ravel(), minlength=bins
            )
    if hist is None:
        raise DataError("no images to compute intensity statistics from")
    centers = (np.arange(bins) + 0.5) / bins
    low, high, mean, std = [], [], [], []
    for counts in hist:
        if counts.sum() == 0:  # an all-zero channel
            low.append(0.0), high.append(1.0), mean.append(0.0), std.append(1.0)
            continue
        cdf = np.cumsum(counts) / counts.sum()
        lo_p, hi_p = spec.clip_percentiles or (0.0, 100.0)
        lo = centers[np.searchsorted(cdf, lo_p / 100)] if lo_p > 0 else 0.0
        hi = centers[min(np.searchsorted(cdf, hi_p / 100), bins - 1)] if hi_p < 100 else 1.0
        clipped = np.clip(centers, lo, hi)
        m = np.average(clipped, weights=counts)
        s = math.sqrt(np.average((clipped - m) ** 2, weights=counts))
        low.append(lo), high.append(hi), mean.append(m), std.append(max(s, 1e-6))
    return IntensityStats(*(np.array(v, np.float32) for v in (low, high, mean, std)))


def normalize(image: np.ndarray, spec: ReadSpec, stats: IntensityStats | None = None) -> np.ndarray:
    """Unit-scaled image (H, W, C) float32 -> model input, by `spec.normalize`.

    `stats` are the group's statistics for `"group_zscore"`; `"zscore"` computes the image's.
    `"none"` returns the raw intensities again (e.g. 0-255), for models with `input_rescale`.
    """
    if spec.normalize == "scale01" or spec.normalize in VOLUME_ONLY:
        return image  # a volume's normalisation is done by read_sample
    if spec.normalize == "none":
        raise ConfigError("normalize='none' needs the raw scale; use `to_model_input`")
    if spec.normalize == "zscore":
        stats = intensity_stats([image], spec)
    elif stats is None:
        raise ConfigError("normalize='group_zscore' needs the statistics of the image's group")
    return ((np.clip(image, stats.low, stats.high) - stats.mean) / stats.std).astype(np.float32)


def to_model_input(
    image: np.ndarray, scale: float, spec: ReadSpec, stats: IntensityStats | None = None
) -> np.ndarray:
    """Unit-scaled image -> model input; `scale` is the raw value of full intensity."""
    if spec.normalize == "none":
        return (image * scale).astype(np.float32)
    return normalize(image, spec, stats)
