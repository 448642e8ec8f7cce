"""The predictor: class probabilities at each image's original size from a model of one input
size, batched, tiled and with test-time mirrors.

A model takes inputs of one size (its training size). `Predictor` brings any image to it:
with the `pad` policy smaller images are padded (and the padding cut off again) and larger
ones go through sliding-window inference with gaussian-weighted overlapping tiles; with the
`resize` policy the image is resized to the model input and the class probabilities are
resized back. Either way the prediction has the input's original height and width.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import keras
import numpy as np

from flexseg.config.schema import TTA_MODES
from flexseg.data.reading import (
    IntensityStats,
    ReadSpec,
    convert_channels,
    intensity_stats,
    padding_to,
    to_model_input,
    to_unit,
)
from flexseg.models.windows import gaussian_weights, sliding_window, tile_starts

# Test-time augmentation (the `tta` options): per mode, the batch axes flipped in each view
# (1 rows, 2 columns), the image itself first; the prediction is the mean of the views'.
# mirror: every combination of axes (of an image, as flip_hv).
TTA_VIEWS = {
    "none": [()],
    "flip": [(), (2,)],
    "flip_hv": [(), (2,), (1,), (1, 2)],
    "mirror": [(), (2,), (1,), (1, 2)],
}
# Of a volume's patches (axes 1, 2, 3: x, y, z of RAS order): flip mirrors left and right (x),
# flip_hv x, y and both, mirror every one of the 8 combinations (nnU-Net's).
TTA_VIEWS_3D = {
    "none": [()],
    "flip": [(), (1,)],
    "flip_hv": [(), (1,), (2,), (1, 2)],
    "mirror": [axes for n in range(4) for axes in itertools.combinations((1, 2, 3), n)],
}


@dataclass
class Job:
    """One image's model inputs, and how their outputs become its probabilities.

    Args:
        inputs: (N, h, w, C) model inputs: one for a fitted image, N tiles of a large one.
        finish: (N, h, w, K) probabilities -> (H, W, K) at the image's original size.
        fit_mask: (H, W) class ids -> (N, h, w) class ids on the model inputs' pixels.
    """

    inputs: np.ndarray
    finish: Callable[[np.ndarray], np.ndarray]
    fit_mask: Callable[[np.ndarray], np.ndarray]
    probabilities: np.ndarray | None = None  # (N, h, w, K), filled by the forward passes
    outputs: np.ndarray | None = None  # (N, h, w, K) the model's own outputs, unflipped
    item: Any = None  # what the caller gave with the image (`Predictor.predict_many`)


@dataclass
class Predictor:
    """Class probabilities for images of any size from a model of fixed input size.

    `predict_many` puts the model inputs of several images into each forward pass (and the
    flipped copies of test-time augmentation into the same pass), so the model runs at
    `batch_size` whatever the images.

    Args:
        model: a Keras model with input (H, W, C) and softmax or logits output (.., K).
        spec: how the training data were read (size policy, normalisation, channels).
        tta: `"none"`; `"flip"` to average with the horizontally flipped prediction;
            `"flip_hv"` with the horizontally, vertically and doubly flipped ones; `"mirror"`
            with every combination of mirrored axes (of a volume, `TTA_VIEWS_3D`).
        overlap: share of a tile that its neighbour overlaps in tiled inference.
        batch_size: model inputs per forward pass, flipped copies included (bounds memory).
        from_logits: the model outputs logits.
    """

    model: keras.Model
    spec: ReadSpec
    tta: str = "none"
    overlap: float = 0.5
    batch_size: int = 16
    from_logits: bool = False

    def __post_init__(self):
        if self.tta not in TTA_MODES:
            raise ValueError(f"`tta` must be one of {TTA_MODES}. Received: tta={self.tta!r}")
        if self.batch_size < 1:
            raise ValueError(f"`batch_size` must be >= 1. Received: batch_size={self.batch_size}")
        shape = self.model.input_shape
        self.spatial_dims = len(shape) - 2
        self.input_size = tuple(shape[1:-1])
        self.channels = shape[-1]
        self.views = (TTA_VIEWS_3D if self.spatial_dims == 3 else TTA_VIEWS)[self.tta]

    def predict(self, image: np.ndarray, stats: IntensityStats | None = None) -> np.ndarray:
        """Probabilities (H, W, K) for one raw image (H, W, C) at its original size.

        `stats` are the intensity statistics of the image's group for `group_zscore`; without
        them the image's own statistics stand in.
        """
        job = self.job(image, stats)
        self.run([job])
        return job.finish(job.probabilities)

    def predict_many(
        self, images: Iterable[tuple[np.ndarray, IntensityStats | None, Any]]
    ) -> Iterator[tuple[np.ndarray, Job]]:
        """(probabilities (H, W, K), its job) for each (raw image, group statistics, item),
        in order, with the inputs of consecutive images batched together; `job.item` is the
        item given with the image (its file, its mask: whatever the caller needs next)."""
        if self.spatial_dims == 3:
            yield from volume_jobs(self.predict_volume, images)
            return
        waiting: list[Job] = []
        queued = 0
        for image, stats, item in images:
            job = self.job(image, stats)
            job.item = item
            waiting.append(job)
            queued += len(job.inputs)
            if queued >= self._per_pass:
                yield from self._finished(waiting)
                waiting, queued = [], 0
        yield from self._finished(waiting)

    def _finished(self, jobs: list[Job]) -> Iterator[tuple[np.ndarray, Job]]:
        self.run(jobs)
        for job in jobs:
            yield job.finish(job.probabilities), job

    def predict_volume(
        self, volume: np.ndarray, stats: IntensityStats | None = None, progress=None
    ) -> np.ndarray:
        """Probabilities (X, Y, Z, K) of a 3D model for one volume (X, Y, Z, C) as read,
        by sliding windows of the model's patch size (`flexseg.models.windows`), their
        mirrored copies (`tta`) in the same forward passes."""
        unit, scale = to_unit(self._match_channels(volume))
        x = to_model_input(unit, scale, self.spec, stats)
        return sliding_window(
            x,
            lambda windows: self._forward(windows)[0],
            self.input_size,
            self.overlap,
            self._per_pass,
            progress=progress,
        )

    @property
    def _per_pass(self) -> int:
        """Model inputs per forward pass before their flipped copies join them."""
        return max(self.batch_size // len(self.views), 1)

    def run(self, jobs: Sequence[Job]) -> None:
        """Forward passes of the jobs' inputs, `batch_size` at a time, into the jobs; jobs
        of another input size (a model of open size) go in passes of their own."""
        for _, same in itertools.groupby(jobs, key=lambda job: job.inputs.shape[1:]):
            same = list(same)
            probs, outputs = self._forward(np.concatenate([job.inputs for job in same]))
            at = 0
            for job in same:
                n = len(job.inputs)
                job.probabilities, job.outputs = probs[at : at + n], outputs[at : at + n]
                at += n

    def _forward(self, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, h, w, C) model inputs -> probabilities (flips averaged) and the model's own
        outputs, each (N, h, w, K)."""
        probs, outputs = [], []
        views = self.views
        for start in range(0, len(inputs), self._per_pass):
            chunk = inputs[start : start + self._per_pass]
            count = len(chunk)
            out = self._outputs(np.concatenate([np.flip(chunk, axes) for axes in views]))
            p = self._softmax(out) if self.from_logits else out
            p = np.mean(
                [np.flip(p[k * count : (k + 1) * count], axes) for k, axes in enumerate(views)], 0
            )
            probs.append(p)
            outputs.append(out[:count])
        return np.concatenate(probs), np.concatenate(outputs)

    def _outputs(self, batch: np.ndarray) -> np.ndarray:
        # Compiled (the model's predict function); a short batch is padded to the full size
        # so that it runs the same program instead of compiling another.
        count, full = len(batch), self.batch_size
        if self.input_size[0] is not None and count < full:
            batch = np.concatenate([batch, np.zeros((full - count, *batch.shape[1:]), batch.dtype)])
        out = self.model.predict_on_batch(np.ascontiguousarray(batch, np.float32))
        return keras.ops.convert_to_numpy(out)[:count].astype(np.float32)

    @staticmethod
    def _softmax(logits: np.ndarray) -> np.ndarray:
        out = np.exp(logits - logits.max(-1, keepdims=True))
        return out / out.sum(-1, keepdims=True)

    def job(self, image: np.ndarray, stats: IntensityStats | None = None) -> Job:
        """The model inputs of one raw image (H, W, C), and how to undo their fitting."""
        image = self._match_channels(image)
        unit, scale = to_unit(image)
        if self.spec.normalize == "group_zscore" and stats is None:
            stats = intensity_stats([unit], self.spec)
        height, width = unit.shape[:2]
        model_h, model_w = self.input_size
        if model_h is None:  # a model of any size: the image padded to the size multiple
            model_h, model_w = (
                math.ceil(size / self.spec.size_multiple) * self.spec.size_multiple
                for size in (height, width)
            )
        if self.spec.size_policy == "resize":
            resized = cv2.resize(unit, (model_w, model_h), interpolation=cv2.INTER_LINEAR)
            x = to_model_input(resized.reshape(model_h, model_w, -1), scale, self.spec, stats)

            def finish(probs: np.ndarray) -> np.ndarray:
                back = cv2.resize(probs[0], (width, height), interpolation=cv2.INTER_LINEAR)
                return back.reshape(height, width, -1)

            def fit_mask(mask: np.ndarray) -> np.ndarray:
                return cv2.resize(mask, (model_w, model_h), interpolation=cv2.INTER_NEAREST)[None]

            return Job(x[None], finish, fit_mask)
        top, bottom, left, right = padding_to(unit.shape, (model_h, model_w))
        pads = ((top, bottom), (left, right))
        x = to_model_input(np.pad(unit, (*pads, (0, 0))), scale, self.spec, stats)
        corners = [
            (y, xx)
            for y in tile_starts(x.shape[0], model_h, self.overlap)
            for xx in tile_starts(x.shape[1], model_w, self.overlap)
        ]
        tiles = np.stack([x[y : y + model_h, xx : xx + model_w] for y, xx in corners])

        def finish(probs: np.ndarray) -> np.ndarray:
            if len(corners) == 1:
                whole = probs[0]
            else:
                whole = blend_tiles(probs, corners, x.shape[:2])
            return whole[top : top + height, left : left + width]

        def fit_mask(mask: np.ndarray) -> np.ndarray:
            padded = np.pad(mask, pads)
            return np.stack([padded[y : y + model_h, xx : xx + model_w] for y, xx in corners])

        return Job(tiles, finish, fit_mask)

    def _match_channels(self, image: np.ndarray) -> np.ndarray:
        if image.shape[-1] != self.channels:
            warnings.warn(
                f"converting a {image.shape[-1]}-channel image to the model's {self.channels} "
                "channel(s)",
                stacklevel=3,
            )
        return convert_channels(image, self.channels)


def blend_tiles(
    probs: np.ndarray, corners: Sequence[tuple[int, int]], shape: tuple[int, int]
) -> np.ndarray:
    """Tiles' probabilities (N, h, w, K) at their corners, blended into one (H, W, K) map with
    weights that favour each tile's centre."""
    tile_h, tile_w = probs.shape[1:3]
    weights = gaussian_weights(tile_h, tile_w)[..., None]
    total = np.zeros((*shape, probs.shape[-1]), np.float32)
    norm = np.zeros((*shape, 1), np.float32)
    for (y, x), p in zip(corners, probs, strict=True):
        total[y : y + tile_h, x : x + tile_w] += p * weights
        norm[y : y + tile_h, x : x + tile_w] += weights
    return total / norm


def volume_jobs(
    predict_volume: Callable[[np.ndarray, IntensityStats | None], np.ndarray],
    images: Iterable[tuple[np.ndarray, IntensityStats | None, Any]],
) -> Iterator[tuple[np.ndarray, Job]]:
    """`predict_many` of a 3D model (a `Predictor`'s or an `Ensemble`'s `predict_volume`):
    each whole volume predicted on its own, its job holding the item and its whole mask."""
    for image, stats, item in images:
        job = Job(None, lambda probs: probs, lambda mask: mask[None], item=item)
        yield predict_volume(image, stats), job
