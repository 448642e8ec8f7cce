"""Sliding-window prediction: a model of one window size run over a larger image or volume.

The input is covered by windows of the model's size that overlap by `overlap` of a window
along each axis (the last window of an axis ends at its edge); their class probabilities are
averaged with weights that favour each window's centre, where a UNet sees the most context
(a Gaussian of sigma 1/8 of the window, as nnU-Net and MONAI weight theirs).

Memory: the sums live in host memory as float32, one array of the (padded) input's size per
class plus one for the weights, ``4 * voxels * (classes + 1)`` bytes (a 256^3 volume of 3
classes: 268 MB); the device sees one batch of `batch_size` windows at a time, never the
whole input.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Sequence

import numpy as np

WEIGHTINGS = ("gaussian", "constant")
SIGMA_SCALE = 0.125  # the gaussian weighting's sigma, a share of the window per axis


def gaussian_weights(*sizes: int, sigma_scale: float = SIGMA_SCALE) -> np.ndarray:
    """A weight map of shape `sizes` that favours the window's centre, never zero (a voxel
    that only edge windows cover must still count), 1 at the centre."""
    weights = np.ones((), np.float64)
    for n in sizes:
        axis = np.exp(-0.5 * ((np.arange(n) - (n - 1) / 2) / (sigma_scale * n)) ** 2)
        weights = np.multiply.outer(weights, axis)
    weights = weights.astype(np.float32)
    return np.maximum(weights / weights.max(), 1e-3)


def tile_starts(size: int, tile: int, overlap: float) -> list[int]:
    """Start offsets of windows of `tile` pixels covering `size` pixels with `overlap` shared."""
    if size <= tile:
        return [0]
    stride = max(1, int(tile * (1.0 - overlap)))
    count = math.ceil((size - tile) / stride) + 1
    return sorted({min(i * stride, size - tile) for i in range(count)})


def window_corners(
    shape: Sequence[int], window: Sequence[int], overlap: float
) -> list[tuple[int, ...]]:
    """The first voxel of every window covering `shape` (each axis at least its window)."""
    return list(
        itertools.product(*(tile_starts(s, w, overlap) for s, w in zip(shape, window, strict=True)))
    )


def window_count(shape: Sequence[int], window: Sequence[int], overlap: float) -> int:
    """The windows `sliding_window` runs over an input of spatial `shape`."""
    return math.prod(
        len(tile_starts(max(s, w), w, overlap)) for s, w in zip(shape, window, strict=True)
    )


def padding_for_window(shape: Sequence[int], window: Sequence[int]) -> list[tuple[int, int]]:
    """(before, after) padding that brings each axis of `shape` up to its window, split
    evenly (one more after)."""
    pads = []
    for size, w in zip(shape, window, strict=True):
        extra = max(w - size, 0)
        pads.append((extra // 2, extra - extra // 2))
    return pads


def sliding_window(
    image: np.ndarray,
    forward: Callable[[np.ndarray], np.ndarray],
    window: Sequence[int],
    overlap: float = 0.5,
    batch_size: int = 2,
    weighting: str = "gaussian",
    progress=None,
) -> np.ndarray:
    """Class probabilities for `image` from a model of input size `window`.

    Args:
        image: (*spatial, C) model input, already normalised; 2 or 3 spatial axes. An axis
            shorter than its window is padded with zeros (and cut back after).
        forward: (N, *window, C) inputs -> (N, *window, K) probabilities (test-time mirrors,
            if any, inside it).
        window: the model's spatial input size.
        overlap: the share of a window its neighbour along an axis overlaps, in [0, 1).
        batch_size: windows per call of `forward`.
        weighting: `"gaussian"` (centres count most) or `"constant"` (a plain mean).
        progress: something with `.add(n)` told of every `n` windows done
            (`flexseg.progress.progress_bar`).

    Returns:
        (*spatial, K) float32 probabilities, the weighted mean of the windows covering each
        voxel.
    """
    window = tuple(int(w) for w in window)
    spatial = image.shape[:-1]
    if len(window) != len(spatial):
        raise ValueError(
            f"`window` {window} has {len(window)} axes; the image has {len(spatial)} spatial "
            f"axes (shape {image.shape}, channels last)"
        )
    if not 0 <= overlap < 1:
        raise ValueError(f"`overlap` must be in [0, 1). Received: overlap={overlap!r}")
    if weighting not in WEIGHTINGS:
        raise ValueError(
            f"`weighting` must be one of {WEIGHTINGS}. Received: weighting={weighting!r}"
        )
    if batch_size < 1:
        raise ValueError(f"`batch_size` must be >= 1. Received: batch_size={batch_size}")
    pads = padding_for_window(spatial, window)
    padded = np.pad(image, (*pads, (0, 0))) if any(map(sum, pads)) else image
    corners = window_corners(padded.shape[:-1], window, overlap)
    if weighting == "gaussian":
        weights = gaussian_weights(*window)[..., None]
    else:
        weights = np.ones((*window, 1), np.float32)
    total = norm = None
    for batch in _batches(corners, batch_size):
        boxes = [_box(corner, window) for corner in batch]
        probs = np.asarray(forward(np.stack([padded[box] for box in boxes])), np.float32)
        if total is None:  # the class count is the model's first output's
            total = np.zeros((*padded.shape[:-1], probs.shape[-1]), np.float32)
            norm = np.zeros((*padded.shape[:-1], 1), np.float32)
        for box, p in zip(boxes, probs, strict=True):
            total[box] += p * weights
            norm[box] += weights
        if progress is not None:
            progress.add(len(batch))
    total /= norm
    crop = tuple(slice(b, b + n) for (b, _), n in zip(pads, spatial, strict=True))
    return total[crop]


def _box(corner: Sequence[int], window: Sequence[int]) -> tuple[slice, ...]:
    return tuple(slice(c, c + w) for c, w in zip(corner, window, strict=True))


def _batches(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
