"""Prediction at each image's original size: fitting, tiling, test-time flips, writing.

A model takes inputs of one size (its training size). `Predictor` brings any image to it:
with the `pad` policy smaller images are padded (and the padding cut off again) and larger
ones go through sliding-window inference with gaussian-weighted overlapping tiles; with the
`resize` policy the image is resized to the model input and the class probabilities are
resized back. Either way the prediction has the input's original height and width.
"""

from __future__ import annotations

import itertools
import json
import math
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import cv2
import keras
import numpy as np

from flexseg.config.parse import parse
from flexseg.config.schema import TTA_MODES, TTA_VIEWS, InferConfig
from flexseg.data.build import colormap_of, read_spec
from flexseg.data.checks import input_problems
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
from flexseg.data.sources import by_group
from flexseg.data.splits import group_of
from flexseg.errors import DataError, PreflightError
from flexseg.models.inference import inference_dtype, inference_model
from flexseg.plots import overlay
from flexseg.postprocess import NONE, classes, pooled, read_rule, read_scores
from flexseg.progress import progress_bar
from flexseg.runs import Run, load_runs, results_dir


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
            `"flip_hv"` with the horizontally, vertically and doubly flipped ones.
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
        self.input_size = (shape[1], shape[2])
        self.channels = shape[3]

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

    @property
    def _per_pass(self) -> int:
        """Model inputs per forward pass before their flipped copies join them."""
        return max(self.batch_size // len(TTA_VIEWS[self.tta]), 1)

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
        views = TTA_VIEWS[self.tta]
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


def read_ahead(read: Callable, items: Sequence, threads: int = 2, ahead: int = 16) -> Iterator:
    """`read(item)` for each item, in order, computed up to `ahead` items early in threads
    (decoding releases the interpreter lock), so reading overlaps the forward passes."""
    with ThreadPoolExecutor(max(threads, 1)) as pool:
        futures = deque()
        for item in items:
            futures.append(pool.submit(read, item))
            if len(futures) > ahead:
                yield futures.popleft().result()
        while futures:
            yield futures.popleft().result()


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
    groups: Mapping[Path, str] | None = None,
    overwrite: bool = False,
    save_probabilities: bool = False,
    rule: Mapping = NONE,
) -> list[dict[str, Path]]:
    """Predicts every image and writes its palette mask, overlay and optional probabilities
    (masks and overlays after the post-processing `rule`, probabilities as predicted).

    Each file is read once; with `group_zscore` the images of a group (`groups`, default each
    image its own) are read together and share the statistics computed from them. Reading,
    the forward passes and writing overlap. Nothing is written if any target file exists and
    `overwrite` is False.

    Returns:
        The written paths of each image.
    """
    output = Path(output)
    plan = {p: output_paths(p, output, save_probabilities) for p in images}
    stems = [p.stem for p in images]
    clashes = sorted({s for s in stems if stems.count(s) > 1})
    if clashes:
        raise DataError(f"several input images share the name(s) {clashes}; rename them.")
    existing = [str(p) for paths in plan.values() for p in paths.values() if p.exists()]
    if existing and not overwrite:
        raise DataError(
            f"{len(existing)} prediction file(s) exist already, e.g. {existing[0]}; choose "
            "another output folder or set overwrite=true."
        )
    for folder in {p.parent for paths in plan.values() for p in paths.values()}:
        folder.mkdir(parents=True, exist_ok=True)

    def read(path: Path) -> np.ndarray:
        # Converted to the model's channels, with a warning, if need be.
        return read_image(path, None, predictor.spec.max_pixels)

    def write(paths: dict[str, Path], raw: np.ndarray, probs: np.ndarray) -> None:
        index = classes(probs, rule)
        write_palette_png(paths["mask"], index, colormap)
        cv2.imwrite(str(paths["overlay"]), cv2.cvtColor(overlay(raw, index), cv2.COLOR_RGB2BGR))
        if save_probabilities:
            np.save(paths["probabilities"], probs.astype(np.float16))

    members = by_group(images, (groups or {p: p.stem for p in images}).__getitem__)
    reads = grouped_reads(members, read, predictor.spec)
    progress = progress_bar(len(images), "predicting")
    with ThreadPoolExecutor(1) as writer:
        pending: deque = deque()
        items = ((raw, stats, (path, raw)) for path, raw, stats in reads)
        for probs, job in predictor.predict_many(items):
            path, raw = job.item
            pending.append(writer.submit(write, plan[path], raw, probs))
            while len(pending) > 8 or (pending and pending[0].done()):
                pending.popleft().result()
            progress.add(1)
        for future in pending:
            future.result()
    return [plan[p] for p in images]


def grouped_reads(
    members: Mapping[str, Sequence],
    read: Callable,
    spec: ReadSpec,
    image_of: Callable = lambda data: data,
    others: Mapping[str, Sequence[Path]] | None = None,
) -> Iterator[tuple]:
    """(item, read(item), its group's intensity statistics or None) for every item.

    Each item is read once. With `group_zscore` the items of a group are read together and
    the statistics computed from their images (`image_of(data)`) and from the group's
    `others` (image files of the group that are not predicted); otherwise items stream.
    """
    if spec.normalize != "group_zscore":
        items = [item for group in members.values() for item in group]
        for item, data in zip(items, read_ahead(read, items), strict=True):
            yield item, data, None
        return
    for group, items in members.items():
        datas = list(read_ahead(read, items))
        images = [convert_channels(image_of(d), spec.channels) for d in datas]
        for path in (others or {}).get(group, []):
            images.append(read_image(path, spec.channels, spec.max_pixels))
        stats = intensity_stats((to_unit(image)[0] for image in images), spec)
        for item, data in zip(items, datas, strict=True):
            yield item, data, stats


class Ensemble:
    """The mean of the class probabilities of several predictors of one way of reading images
    (the runs of a cross-validation, say), with `Predictor.predict_many`'s interface.

    The members read images alike (`flexseg.runs.load_runs` checks it), so the model inputs
    of `batch_size` images are made once and each member runs its model over them; the jobs
    yielded hold the last member's outputs.
    """

    def __init__(self, predictors: Sequence[Predictor]):
        self.predictors = list(predictors)
        first = self.predictors[0]
        self.spec, self.tta, self.batch_size = first.spec, first.tta, first.batch_size

    def predict_many(
        self, images: Iterable[tuple[np.ndarray, IntensityStats | None, Any]]
    ) -> Iterator[tuple[np.ndarray, Job]]:
        chunk = []
        for image in images:
            chunk.append(image)
            if len(chunk) == self.batch_size:
                yield from self._mean(chunk)
                chunk = []
        yield from self._mean(chunk)

    def _mean(self, chunk: list) -> Iterator[tuple[np.ndarray, Job]]:
        jobs = []
        for image, stats, item in chunk:
            job = self.predictors[0].job(image, stats)
            job.item = item
            jobs.append(job)
        each = []
        for predictor in self.predictors:
            predictor.run(jobs)
            each.append([job.finish(job.probabilities) for job in jobs])
        for job, probs in zip(jobs, zip(*each, strict=True), strict=True):
            yield np.mean(probs, axis=0), job


def rule_of(runs: Sequence[Run]) -> dict:
    """The post-processing of one run (its `postprocessing.json`). For an ensemble of folds of
    one cross-validation, the rule chosen on the folds' validation splits together
    (`flexseg.postprocess.pooled`); none for another ensemble, or when a fold chose nothing."""
    if len(runs) == 1:
        return read_rule(runs[0].run_dir)
    if not folds_of_one_cross_validation(runs):
        return dict(NONE)
    chosen = []
    for run in runs:
        scores = read_scores(run.run_dir)
        # choosing also wrote the validation split's evaluation: its number of volumes
        scored = run.run_dir / "evaluation" / "valid" / "evaluation.json"
        try:
            volumes = int(json.loads(scored.read_text())["volumes"])
        except (OSError, ValueError, KeyError, TypeError):
            volumes = 0
        if scores is None or volumes < 1:
            return dict(NONE)
        chosen.append((scores, volumes))
    return pooled(chosen)[0]


def folds_of_one_cross_validation(runs: Sequence[Run]) -> bool:
    """Whether the runs are different folds of one cross-validation (the same split of the
    same data but for `dataset.split.fold`), so that their validation splits do not overlap."""

    def rule(run: Run) -> tuple:
        split = run.cfg.dataset.split
        seed = run.cfg.seed if split.seed is None else split.seed
        return replace(split, fold=0, seed=seed), run.cfg.dataset.root, run.cfg.dataset.name

    first = rule(runs[0])
    folds = {run.cfg.dataset.split.fold for run in runs}
    return (
        bool(runs[0].cfg.dataset.split.folds)
        and len(folds) == len(runs)
        and all(rule(run) == first for run in runs)
    )


def predictor_of(
    runs: Sequence[Run], spec: ReadSpec, tta: str, batch_size: int, dtype: str = "float32"
):
    """A `Predictor` of one run, or the `Ensemble` of several, each predicting with its model
    rebuilt for inference in `dtype` (`flexseg.models.inference`)."""
    predictors = [
        Predictor(
            inference_model(run.model, dtype),
            spec,
            tta,
            batch_size=batch_size,
            from_logits=run.cfg.model.from_logits,
        )
        for run in runs
    ]
    return predictors[0] if len(predictors) == 1 else Ensemble(predictors)


def infer(cfg: InferConfig | Mapping) -> list[dict[str, Path]]:
    """Predicts `cfg.input` (a folder, an image, a list file or a list of images) with a
    training run's checkpoint (`cfg.checkpoint`, default the run's choice) into `cfg.output`
    (default `<run_dir>/predictions`), with the run's post-processing (`postprocessing.json`,
    `flexseg.evaluation.choose_postprocessing`). Several runs (`run_dir` a list, or a sweep
    folder) predict as an ensemble: the mean of their probabilities (default output
    `<their folder>/ensemble/predictions`).

    Images of one group (the dataset's `group_regex` on the file name) share intensity
    statistics, as in training; `overwrite`, `tta`, `batch_size` and `save_probabilities`
    apply.

    Args:
        cfg: an `InferConfig`, or a dict of the same keys.
    """
    cfg = parse(InferConfig, cfg)
    runs = load_runs(cfg.run_dir, cfg.checkpoint)
    run = runs[0]
    dataset = run.cfg.dataset
    spec = read_spec(dataset, run.model.size_multiple)
    images = find_inputs(cfg.input)
    problems = input_problems(images, spec.max_pixels)
    if problems:
        raise PreflightError(problems, "nothing was predicted")
    groups: dict[Path, str] = {}
    for path in images:
        try:
            groups[path] = (
                group_of(path.stem, dataset.group_regex) if dataset.group_regex else path.stem
            )
        except DataError:
            groups[path] = path.stem  # a file of no known group is its own group
    predictor = predictor_of(runs, spec, cfg.tta, cfg.batch_size, inference_dtype(cfg.precision))
    colormap = colormap_of(dataset) or ColorMap.default(dataset.num_classes)
    output = Path(cfg.output) if cfg.output else results_dir(runs) / "predictions"
    return predict_files(
        predictor,
        images,
        output,
        colormap,
        groups,
        overwrite=cfg.overwrite,
        save_probabilities=cfg.save_probabilities,
        rule=rule_of(runs),
    )
