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


def make_room(plan: Mapping[object, Mapping[str, Path]], overwrite: bool) -> None:
    """Makes the folders of every planned file, once no planned file exists (or `overwrite`).

    Raises:
        DataError: a planned file exists and `overwrite` is False; nothing is made then.
    """
    existing = [str(p) for paths in plan.values() for p in paths.values() if p.exists()]
    if existing and not overwrite:
        raise DataError(
            f"{len(existing)} prediction file(s) exist already, e.g. {existing[0]}; choose "
            "another output folder or set overwrite=true."
        )
    for folder in {p.parent for paths in plan.values() for p in paths.values()}:
        folder.mkdir(parents=True, exist_ok=True)


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
    make_room(plan, overwrite)

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
