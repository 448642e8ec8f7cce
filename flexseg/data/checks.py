"""Data checks: every file of a split or of an inference input read once, every problem named.

Each problem is one line that names the file, says what is wrong and how to fix it; callers
collect them all and raise one `PreflightError`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from flexseg.data import readers, volumes
from flexseg.data.batches import read_pair
from flexseg.data.masks import ColorMap
from flexseg.data.reading import ReadSpec, read_image
from flexseg.data.sources import Sample, Source, find_samples
from flexseg.errors import ConfigError, DataError
from flexseg.progress import progress_bar


def scan_samples(
    samples: Sequence[Sample], num_classes: int, spec: ReadSpec, colormap: ColorMap | None
) -> tuple[dict, list[str], np.ndarray]:
    """Reads every image and mask of a split, in threads.

    Returns:
        Facts about the split, one problem line per bad file, and the pixel count per class.
    """

    def read(sample: Sample):
        try:
            _, mask = read_pair(sample, num_classes, spec, colormap)
        except DataError as error:
            return str(error)
        return np.bincount(mask.ravel(), minlength=num_classes)[:num_classes]

    progress = progress_bar(len(samples), "checking")
    results = []
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        for result in pool.map(read, samples):
            results.append(result)
            progress.add(1)
    # the slices of one bad volume fail alike: each problem once
    problems = list(dict.fromkeys(r for r in results if isinstance(r, str)))
    problems += empty_label_volumes(samples, spec.max_voxels)
    counts = [r for r in results if not isinstance(r, str)]
    facts = {
        "images": len(samples),
        "groups": len({s.group for s in samples}),
        "with_foreground": float(np.mean([c[1:].sum() > 0 for c in counts])) if counts else 0.0,
    }
    pixels = np.sum(counts, axis=0) if counts else np.zeros(num_classes, np.int64)
    return facts, problems, pixels


def empty_label_volumes(samples: Sequence[Sample], max_voxels: int) -> list[str]:
    """One line per label volume of the samples' cases with no foreground voxel at all (the
    whole volume: a split may hold only some of a case's slices). One that cannot be read is
    named by the reading already."""
    problems = []
    for path in dict.fromkeys(s.mask for s in samples if s.volume):
        try:
            empty = not volumes.load(path, "label", max_voxels).voxels.any()
        except DataError:
            continue
        if empty:
            problems.append(
                f"label volume {path} is empty: no voxel of any class but background; add the "
                "case's labels, or move the case out of the data set."
            )
    return problems


def dataset_problems(
    source: Source,
    num_classes: int,
    seed: int,
    spec: ReadSpec | None,
    colormap: ColorMap | None,
) -> tuple[dict[str, list[Sample]], dict, list[str], np.ndarray]:
    """Every problem of a dataset's files in one list: pairing, splitting, then reading every
    image and mask of every split (those that pair), when `spec` (the reading) is known.

    Returns:
        The samples per split, facts per split (`scan_samples`), the problem lines, and the
        pixel count per class of the training split.
    """
    problems: list[str] = []
    try:
        splits = find_samples(source, seed, problems)
    except (ConfigError, DataError) as error:
        return {}, {}, [*problems, str(error)], np.zeros(num_classes, np.int64)
    facts, pixels = {}, np.zeros(num_classes, np.int64)
    for split, samples in splits.items():
        if not samples or spec is None:
            continue
        facts[split], split_problems, counts = scan_samples(samples, num_classes, spec, colormap)
        problems += split_problems
        if split == "train":
            pixels = counts
    return splits, facts, problems, pixels


def input_problems(paths: Sequence[Path], spec: ReadSpec) -> list[str]:
    """One line per inference input that cannot be read as an image or a volume (a volume
    is read whole, checked and kept for the prediction after)."""

    def read(path: Path) -> str | None:
        try:
            if readers.is_volume(path):
                volumes.load(path, "image", spec.max_voxels)
            else:
                read_image(path, None, spec.max_pixels)
        except DataError as error:
            return str(error)
        return None

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        return [r for r in pool.map(read, paths) if r]


def channel_notes(splits: Mapping[str, list[Sample]], spec: ReadSpec) -> list[str]:
    """A note when the files hold another channel count than the model reads."""
    first = next(s for samples in splits.values() for s in samples)
    if first.volume:  # a volume's channels are read as they are (read_sample checks them)
        return []
    found = read_image(first.image, None, spec.max_pixels, first.index).shape[-1]
    if found == spec.channels:
        return []
    return [
        f"{first.image} has {found} channel(s) and dataset.channels={spec.channels}: images are "
        + ("averaged to gray" if spec.channels == 1 else "repeated to RGB")
    ]
