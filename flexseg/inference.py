"""Prediction at each image's original size: fitting, tiling, test-time flips, writing.

A model takes inputs of one size (its training size). `Predictor` brings any image to it:
with the `pad` policy smaller images are padded (and the padding cut off again) and larger
ones go through sliding-window inference with gaussian-weighted overlapping tiles; with the
`resize` policy the image is resized to the model input and the class probabilities are
resized back. Either way the prediction has the input's original height and width.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import keras
import numpy as np

from flexseg.config.parse import parse
from flexseg.config.schema import TTA_MODES, InferConfig
from flexseg.data.build import colormap_of, read_spec
from flexseg.data.checks import input_problems
from flexseg.data.dataset import compute_group_stats
from flexseg.data.masks import ColorMap, write_palette_png
from flexseg.data.pairing import list_images
from flexseg.data.reading import (
    IntensityStats,
    ReadSpec,
    convert_channels,
    intensity_stats,
    padding_to,
    read_image,
    to_model_input,
    to_unit,
)
from flexseg.data.sources import Sample
from flexseg.data.splits import group_of
from flexseg.errors import DataError, PreflightError
from flexseg.plots import overlay
from flexseg.runs import load_run


def gaussian_weights(height: int, width: int, sigma_scale: float = 0.125) -> np.ndarray:
    """A (H, W) weight map that favours tile centres, where a UNet sees the most context."""
    ys = np.exp(-0.5 * ((np.arange(height) - (height - 1) / 2) / (sigma_scale * height)) ** 2)
    xs = np.exp(-0.5 * ((np.arange(width) - (width - 1) / 2) / (sigma_scale * width)) ** 2)
    weights = np.outer(ys, xs).astype(np.float32)
    return np.maximum(weights / weights.max(), 1e-3)  # never zero: edge tiles must count


def tile_starts(size: int, tile: int, overlap: float) -> list[int]:
    """Start offsets of tiles of `tile` pixels covering `size` pixels with `overlap` shared."""
    if size <= tile:
        return [0]
    stride = max(1, int(tile * (1.0 - overlap)))
    count = math.ceil((size - tile) / stride) + 1
    return sorted({min(i * stride, size - tile) for i in range(count)})


@dataclass
class Predictor:
    """Class probabilities for images of any size from a model of fixed input size.

    Args:
        model: a Keras model with input (H, W, C) and softmax or logits output (.., K).
        spec: how the training data were read (size policy, normalisation, channels).
        tta: `"none"`, or `"flip"` to average with the horizontally flipped prediction.
        overlap: share of a tile that its neighbour overlaps in tiled inference.
        batch_size: tiles or images per forward pass (bounds memory).
        from_logits: the model outputs logits.
    """

    model: keras.Model
    spec: ReadSpec
    tta: str = "none"
    overlap: float = 0.5
    batch_size: int = 4
    from_logits: bool = False

    def __post_init__(self):
        if self.tta not in TTA_MODES:
            raise ValueError(f"`tta` must be one of {TTA_MODES}. Received: tta={self.tta!r}")
        shape = self.model.input_shape
        self.input_size = (shape[1], shape[2])
        self.channels = shape[3]

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        """(N, H, W, C) model inputs -> (N, H, W, K) probabilities, flips averaged if set."""
        outputs = []
        for start in range(0, len(batch), self.batch_size):
            chunk = batch[start : start + self.batch_size]
            probs = self._probabilities(chunk)
            if self.tta == "flip":
                flipped = self._probabilities(chunk[:, :, ::-1])
                probs = 0.5 * (probs + flipped[:, :, ::-1])
            outputs.append(probs)
        return np.concatenate(outputs)

    def _probabilities(self, chunk: np.ndarray) -> np.ndarray:
        out = keras.ops.convert_to_numpy(self.model(np.ascontiguousarray(chunk), training=False))
        out = out.astype(np.float32)
        if self.from_logits:
            out = np.exp(out - out.max(-1, keepdims=True))
            out /= out.sum(-1, keepdims=True)
        return out

    def predict(self, image: np.ndarray, stats: IntensityStats | None = None) -> np.ndarray:
        """Probabilities (H, W, K) for one raw image (H, W, C) at its original size.

        `stats` are the intensity statistics of the image's group for `group_zscore`; without
        them the image's own statistics stand in.
        """
        image = self._match_channels(image)
        unit, scale = to_unit(image)
        if self.spec.normalize == "group_zscore" and stats is None:
            stats = intensity_stats([unit], self.spec)
        height, width = unit.shape[:2]
        model_h, model_w = self.input_size
        if self.spec.size_policy == "resize":
            resized = cv2.resize(unit, (model_w, model_h), interpolation=cv2.INTER_LINEAR)
            resized = resized.reshape(model_h, model_w, -1)
            x = to_model_input(resized, scale, self.spec, stats)
            probs = self._forward(x[None])[0]
            probs = cv2.resize(probs, (width, height), interpolation=cv2.INTER_LINEAR)
            return probs.reshape(height, width, -1)
        top, bottom, left, right = padding_to(unit.shape, (model_h, model_w))
        padded = np.pad(unit, ((top, bottom), (left, right), (0, 0)))
        x = to_model_input(padded, scale, self.spec, stats)
        if x.shape[:2] == (model_h, model_w):
            probs = self._forward(x[None])[0]
        else:
            probs = self._tiled(x)
        return probs[top : top + height, left : left + width]

    def _tiled(self, x: np.ndarray) -> np.ndarray:
        """Sliding-window probabilities of a model input larger than the model's size."""
        model_h, model_w = self.input_size
        weights = gaussian_weights(model_h, model_w)[..., None]
        total = None
        norm = np.zeros(x.shape[:2] + (1,), np.float32)
        corners = [
            (y, xx)
            for y in tile_starts(x.shape[0], model_h, self.overlap)
            for xx in tile_starts(x.shape[1], model_w, self.overlap)
        ]
        for start in range(0, len(corners), self.batch_size):
            group = corners[start : start + self.batch_size]
            tiles = np.stack([x[y : y + model_h, xx : xx + model_w] for y, xx in group])
            probs = self._forward(tiles)
            if total is None:
                total = np.zeros(x.shape[:2] + (probs.shape[-1],), np.float32)
            for (y, xx), p in zip(group, probs, strict=True):
                total[y : y + model_h, xx : xx + model_w] += p * weights
                norm[y : y + model_h, xx : xx + model_w] += weights
        return total / norm

    def _match_channels(self, image: np.ndarray) -> np.ndarray:
        if image.shape[-1] != self.channels:
            warnings.warn(
                f"converting a {image.shape[-1]}-channel image to the model's {self.channels} "
                "channel(s)",
                stacklevel=3,
            )
        return convert_channels(image, self.channels)


def find_inputs(source: str | Path | Sequence[str | Path]) -> list[Path]:
    """Image files of a folder, a single image, a text file listing images, or a list."""
    if isinstance(source, (list, tuple)):
        paths = [Path(p) for p in source]
    else:
        source = Path(source)
        if source.is_dir():
            return list_images(source, "input")
        if source.suffix.lower() in (".txt", ".lst"):
            lines = source.read_text().splitlines()
            paths = [Path(line.strip()) for line in lines if line.strip()]
        else:
            paths = [source]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise DataError(f"input image(s) not found: {', '.join(missing[:5])}")
    if not paths:
        raise DataError(f"no input images in {source}")
    return paths


def output_paths(image: Path, output: Path, save_probabilities: bool) -> dict[str, Path]:
    """Where the mask, overlay and probability files of one input image go."""
    paths = {
        "mask": output / "masks" / f"{image.stem}.png",
        "overlay": output / "overlays" / f"{image.stem}.png",
    }
    if save_probabilities:
        paths["probabilities"] = output / "probabilities" / f"{image.stem}.npy"
    return paths


def predict_files(
    predictor: Predictor,
    images: Sequence[Path],
    output: str | Path,
    colormap: ColorMap,
    group_stats: Mapping[str, IntensityStats] | None = None,
    groups: Mapping[Path, str] | None = None,
    overwrite: bool = False,
    save_probabilities: bool = False,
) -> list[dict[str, Path]]:
    """Predicts every image and writes its palette mask, overlay and optional probabilities.

    Nothing is written if any target file exists and `overwrite` is False.

    Returns:
        The written paths of each image.
    """
    output = Path(output)
    plan = [output_paths(p, output, save_probabilities) for p in images]
    stems = [p.stem for p in images]
    clashes = sorted({s for s in stems if stems.count(s) > 1})
    if clashes:
        raise DataError(f"several input images share the name(s) {clashes}; rename them.")
    existing = [str(p) for paths in plan for p in paths.values() if p.exists()]
    if existing and not overwrite:
        raise DataError(
            f"{len(existing)} prediction file(s) exist already, e.g. {existing[0]}; choose "
            "another output folder or set overwrite=true."
        )
    for folder in {p.parent for paths in plan for p in paths.values()}:
        folder.mkdir(parents=True, exist_ok=True)
    for image_path, paths in zip(images, plan, strict=True):
        # Converted to the model's channels, with a warning, if need be.
        raw = read_image(image_path, None, predictor.spec.max_pixels)
        stats = (group_stats or {}).get((groups or {}).get(image_path, image_path.stem))
        probs = predictor.predict(raw, stats)
        index = probs.argmax(-1).astype(np.uint8)
        write_palette_png(paths["mask"], index, colormap)
        cv2.imwrite(str(paths["overlay"]), cv2.cvtColor(overlay(raw, index), cv2.COLOR_RGB2BGR))
        if save_probabilities:
            np.save(paths["probabilities"], probs.astype(np.float16))
    return plan


def infer(cfg: InferConfig | Mapping) -> list[dict[str, Path]]:
    """Predicts `cfg.input` (a folder, an image, a list file or a list of images) with a
    training run's checkpoint (`cfg.checkpoint`, default the run's choice) into `cfg.output`
    (default `<run_dir>/predictions`).

    Images of one group (the dataset's `group_regex` on the file name) share intensity
    statistics, as in training; `overwrite`, `tta` and `save_probabilities` apply.

    Args:
        cfg: an `InferConfig`, or a dict of the same keys.
    """
    cfg = parse(InferConfig, cfg)
    run = load_run(cfg.run_dir, cfg.checkpoint)
    dataset = run.cfg.dataset
    spec = read_spec(dataset, run.model.size_multiple)
    images = find_inputs(cfg.input)
    problems = input_problems(images, spec.max_pixels)
    if problems:
        raise PreflightError(problems, "nothing was predicted")
    groups = {}
    for path in images:
        try:
            groups[path] = (
                group_of(path.stem, dataset.group_regex) if dataset.group_regex else path.stem
            )
        except DataError:
            groups[path] = path.stem  # a file of no known group is its own group
    stats = None
    if spec.normalize == "group_zscore":
        samples = [Sample(p, None, groups[p]) for p in images]
        stats = compute_group_stats(samples, spec)
    predictor = Predictor(run.model, spec, tta=cfg.tta, from_logits=run.cfg.model.from_logits)
    colormap = colormap_of(dataset) or ColorMap.default(dataset.num_classes)
    output = Path(cfg.output) if cfg.output else run.run_dir / "predictions"
    return predict_files(
        predictor,
        images,
        output,
        colormap,
        stats,
        groups,
        overwrite=cfg.overwrite,
        save_probabilities=cfg.save_probabilities,
    )
