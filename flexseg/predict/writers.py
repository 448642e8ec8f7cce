"""Predictions written: each image's palette mask, overlay and (optionally) probabilities."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from flexseg.data.masks import ColorMap, write_palette_png
from flexseg.data.reading import read_image
from flexseg.data.sources import by_group
from flexseg.errors import DataError
from flexseg.plots import overlay
from flexseg.predict.outputs import OutputFolder, write_bytes
from flexseg.predict.postprocess import NONE, classes
from flexseg.predict.predictor import Predictor
from flexseg.predict.reading import grouped_reads
from flexseg.progress import progress_bar


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
    out: OutputFolder,
    colormap: ColorMap,
    groups: Mapping[Path, str] | None = None,
    save_probabilities: bool = False,
    rule: Mapping = NONE,
) -> list[dict[str, Path]]:
    """Predicts every image and writes its palette mask, overlay and optional probabilities
    (masks and overlays after the post-processing `rule`, probabilities as predicted) into
    the output folder `out` (`flexseg.predict.outputs`: only its own files replaced, each
    file whole or not at all, a rerun finishing what an interrupted one left).

    Each file is read once; with `group_zscore` the images of a group (`groups`, default each
    image its own) are read together and share the statistics computed from them (a rerun
    predicts the whole group of an image still to do). Reading, the forward passes and
    writing overlap.

    Returns:
        The paths of each image's files.
    """
    plan = {p: output_paths(p, out.folder, save_probabilities) for p in images}
    stems = [p.stem for p in images]
    clashes = sorted({s for s in stems if stems.count(s) > 1})
    if clashes:
        raise DataError(f"several input images share the name(s) {clashes}; rename them.")
    group = (groups or {p: p.stem for p in images}).__getitem__
    todo = set(out.plan(plan))
    open_groups = {group(p) for p in todo}
    images = [p for p in images if group(p) in open_groups]
    if out.skipped:
        print(f"{out.skipped} of {len(plan)} image(s) were predicted before: the rest follow")

    def read(path: Path) -> np.ndarray:
        # Converted to the model's channels, with a warning, if need be.
        return read_image(path, None, predictor.spec.max_pixels)

    def write(paths: dict[str, Path], raw: np.ndarray, probs: np.ndarray) -> None:
        index = classes(probs, rule)
        out.write(paths["mask"], lambda tmp: write_palette_png(tmp, index, colormap))
        picture = cv2.cvtColor(overlay(raw, index), cv2.COLOR_RGB2BGR)
        out.write(paths["overlay"], lambda tmp: _write_png(tmp, picture))
        if save_probabilities:
            out.write(paths["probabilities"], lambda tmp: np.save(tmp, probs.astype(np.float16)))

    members = by_group(images, group)
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
    return list(plan.values())


def _write_png(path: Path, picture: np.ndarray) -> None:
    """A PNG through OpenCV's encoder, its result checked (`imwrite` only returns False)."""
    ok, data = cv2.imencode(".png", picture)
    if not ok:
        raise DataError(f"OpenCV could not encode {path.name} as PNG")
    write_bytes(path, data.tobytes())
