"""A data set's fingerprint: what a recipe is planned from, measured once and cached.

Sizes and spacings, anisotropy, intensities per channel over the foreground, class
frequencies, object sizes (connected components), copied channels and slice counts, over
the training and validation samples only (the test split is never looked at). The samples
are read by worker processes, as the loader reads them. The fingerprint is cached under a
key of the files (paths, sizes, modification times) and the settings that read them, so a
second plan of unchanged data reads nothing.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from scipy import ndimage

from flexseg.data import volumes
from flexseg.data.masks import ColorMap, decode_mask
from flexseg.data.reading import read_image
from flexseg.data.sources import Sample, natural_key
from flexseg.errors import DataError

VERSION = 1
PLANNED_SPLITS = ("train", "valid")  # what a plan may look at
PERCENTILES = (0.5, 1, 5, 25, 50, 75, 95, 99, 99.5)
_PIXELS_PER_IMAGE = 256  # foreground pixels of each 2D image that join the percentiles (seeded)
_VOXELS_PER_CASE = 10000  # and of each volume (nnU-Net samples as many)
_MAX_LABEL = 255


@dataclass(frozen=True)
class Reading:
    """How the fingerprint's workers read a data set's files (picklable)."""

    rgb_map: object
    color_tolerance: float
    max_pixels: int
    max_voxels: int

    def colormap(self) -> ColorMap | None:
        if self.rgb_map is None:
            return None
        return ColorMap.from_config(self.rgb_map, self.color_tolerance)


def fingerprint(
    splits: Mapping[str, Sequence[Sample]],
    reading: Reading,
    workers: int,
    cache_dir: Path | None = None,
    describe: Mapping | None = None,
    refresh: bool = False,
) -> dict:
    """The fingerprint of the samples of `PLANNED_SPLITS` (whole volumes or 2D images).

    Args:
        splits: samples per split; volumes as whole cases (`Sample.whole`).
        reading: how files are read.
        workers: processes that read the files (0: this process).
        cache_dir: where fingerprints are kept by key; None keeps none.
        describe: what the fingerprint records of the data set (name, root, layout).
        refresh: compute it again even when a cached one matches.

    Returns:
        A JSON-ready dict; `key` identifies the files and settings it was computed from.
    """
    used = {s: list(splits.get(s, [])) for s in PLANNED_SPLITS if splits.get(s)}
    samples = [sample for members in used.values() for sample in members]
    if not samples:
        raise DataError("the dataset has no training samples to plan from; check dataset.root.")
    key = _key(samples, reading)
    cached = cache_dir / f"{key}.json" if cache_dir is not None else None
    if cached is not None and cached.is_file() and not refresh:
        try:
            found = json.loads(cached.read_text())
            if found.get("key") == key and found.get("version") == VERSION:
                return {**found, "cached": True}
        except (OSError, ValueError):
            pass  # computed again below
    start = time.monotonic()
    facts = _read_all(samples, reading, workers)
    result = summarize(facts, samples)
    result.update(
        version=VERSION,
        key=key,
        dataset=dict(describe or {}),
        splits_used={split: len(members) for split, members in used.items()},
        seconds=round(time.monotonic() - start, 2),
        workers=workers,
    )
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        partial = cached.with_name(f".{cached.name}.{os.getpid()}")
        partial.write_text(json.dumps(result, indent=2))
        partial.replace(cached)
    return {**result, "cached": False}


def _key(samples: Sequence[Sample], reading: Reading) -> str:
    digest = hashlib.sha256(json.dumps([VERSION, repr(reading)]).encode())
    for sample in samples:
        for path in (*sample.images, sample.mask):
            try:
                stat = Path(path).stat()
                digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode())
            except OSError:
                digest.update(f"{path}\0missing\0".encode())
        digest.update(f"{sample.index}\0{sample.group}\n".encode())
    return digest.hexdigest()[:20]


def _read_all(samples: Sequence[Sample], reading: Reading, workers: int) -> list[dict]:
    if workers <= 0 or len(samples) < 8:
        return [sample_facts(s, reading, i) for i, s in enumerate(samples)]
    chunk = max(1, math.ceil(len(samples) / (workers * 8)))
    jobs = [(samples[i : i + chunk], reading, i) for i in range(0, len(samples), chunk)]
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        return [facts for part in pool.map(_facts_of_chunk, jobs) for facts in part]


def _facts_of_chunk(job: tuple) -> list[dict]:
    samples, reading, first = job
    return [sample_facts(s, reading, first + i) for i, s in enumerate(samples)]


def sample_facts(sample: Sample, reading: Reading, seed: int = 0) -> dict:
    """What the fingerprint needs of one sample: its shape, spacing, class counts, object
    sizes, and a seeded draw of its intensities over the foreground and over non-zero
    pixels."""
    rng = np.random.default_rng(seed)
    if sample.whole:
        channels = volumes.case_channels(sample.images, reading.max_voxels)
        image = np.stack(channels, -1)
        place = volumes.geometry(sample.image, "image", reading.max_voxels)
        labels = volumes.load(sample.mask, "label", reading.max_voxels).voxels
        spacing = [float(s) for s in place.spacing]
        draw = _VOXELS_PER_CASE
        dtype = "float32"
    else:
        image = read_image(sample.image, None, reading.max_pixels, sample.index)
        labels, _ = decode_mask(
            sample.mask, _MAX_LABEL + 1, reading.colormap(), reading.max_pixels, sample.index
        )
        if reading.rgb_map is None and set(np.unique(labels).tolist()) <= {0, 255}:
            labels = (labels > 0).astype(np.uint8)  # a 0/255 mask of one class
        spacing = None
        draw = _PIXELS_PER_IMAGE
        dtype = str(image.dtype)
    image = image.astype(np.float32, copy=False)
    if image.ndim == labels.ndim:  # (H, W) or (X, Y, Z): one channel
        image = image[..., None]
    counts = np.bincount(labels.ravel().astype(np.int64), minlength=2)
    objects = {}
    for k in np.flatnonzero(counts[1:]) + 1:
        components, found = ndimage.label(labels == k)
        objects[int(k)] = np.bincount(components.ravel())[1:].tolist() if found else []
    inside = labels > 0
    nonzero = (image != 0).any(-1)
    flat = image.reshape(-1, image.shape[-1])
    same = image.shape[-1] > 1 and bool(nonzero.any()) and bool((image == image[..., :1]).all())
    return {
        "group": sample.group,
        "shape": list(labels.shape),
        "spacing": spacing,
        "channels": int(image.shape[-1]),
        "dtype": dtype,
        "class_counts": counts.tolist(),
        "objects": objects,
        "foreground": _draw(flat, inside.ravel(), draw, rng),
        "nonzero": _draw(flat, nonzero.ravel(), draw, rng),
        "zero_fraction": [float((image[..., c] == 0).mean()) for c in range(image.shape[-1])],
        "copied_channels": same,
        "channel_means": [
            float(flat[nonzero.ravel(), c].mean()) if nonzero.any() else 0.0
            for c in range(flat.shape[1])
        ],  # fmt: skip
    }


def _draw(flat: np.ndarray, where: np.ndarray, count: int, rng) -> list[list[float]]:
    picked = np.flatnonzero(where)
    if picked.size > count:
        picked = rng.choice(picked, count, replace=False)
    return flat[picked].T.tolist()


def summarize(facts: Sequence[dict], samples: Sequence[Sample]) -> dict:
    """The fingerprint of the samples' facts (`sample_facts`)."""
    volume = bool(samples[0].whole)
    shapes = np.asarray([f["shape"] for f in facts], float)
    channels = max(f["channels"] for f in facts)
    found = max(len(f["class_counts"]) for f in facts)
    counts = np.zeros(found, np.int64)
    present = np.zeros(found, np.int64)
    for f in facts:
        c = np.asarray(f["class_counts"], np.int64)
        counts[: c.size] += c
        present[: c.size] += c > 0
    labels = [int(k) for k in np.flatnonzero(counts)]
    result = {
        "kind": "volumes" if volume else "images",
        "samples": len(facts),
        "groups": len({f["group"] for f in facts}),
        "channels": channels,
        "axes": ["x", "y", "z"] if volume else ["height", "width"],
        "sizes": _spread(shapes),
        "dtype": sorted({f["dtype"] for f in facts}),
        "labels_found": labels,
        "class_fraction": {str(k): float(counts[k] / max(counts.sum(), 1)) for k in labels},
        "samples_with_class": {str(k): float(present[k] / len(facts)) for k in labels},
        "samples_with_foreground": float(np.mean([sum(f["class_counts"][1:]) > 0 for f in facts])),
        "intensity": {
            "foreground": _channel_stats(facts, "foreground", channels),
            "nonzero": _channel_stats(facts, "nonzero", channels),
            "zero_fraction": [
                float(np.mean([f["zero_fraction"][c] for f in facts if c < f["channels"]]))
                for c in range(channels)
            ],
        },
        "objects": _objects(facts, labels),
        "copied_channels": _copied(facts, channels),
    }
    if volume:
        spacing = np.asarray([f["spacing"] for f in facts], float)
        median = np.median(spacing, 0)
        result["spacing_mm"] = _spread(spacing, 4)
        result["anisotropy"] = round(float(median.max() / max(median.min(), 1e-9)), 3)
        result["voxel_ml"] = float(np.prod(median) / 1000.0)
    else:
        per_group: dict[str, int] = {}
        for f in facts:
            per_group[f["group"]] = per_group.get(f["group"], 0) + 1
        result["images_per_group"] = _spread(np.asarray(list(per_group.values()), float)[:, None])
    return result


def _spread(values: np.ndarray, digits: int = 1) -> dict:
    """Median, 10th and 90th percentile, min and max of each column."""

    def row(v) -> list:
        return [round(float(x), digits) for x in v]

    return {
        "median": row(np.median(values, 0)),
        "p10": row(np.percentile(values, 10, 0)),
        "p90": row(np.percentile(values, 90, 0)),
        "min": row(values.min(0)),
        "max": row(values.max(0)),
    }


def _channel_stats(facts: Sequence[dict], kind: str, channels: int) -> list[dict | None]:
    rows = []
    for c in range(channels):
        parts = [np.asarray(f[kind][c], np.float32) for f in facts if c < len(f[kind])]
        values = np.concatenate(parts) if parts else np.zeros(0, np.float32)
        if values.size == 0:
            rows.append(None)
            continue
        found = np.percentile(values, PERCENTILES)
        rows.append(
            {
                "percentiles": {str(p): float(v) for p, v in zip(PERCENTILES, found, strict=True)},
                "mean": float(values.mean()),
                "std": float(values.std()),
                "min": float(values.min()),
                "max": float(values.max()),
            }
        )
    return rows


def _objects(facts: Sequence[dict], labels: Sequence[int]) -> dict:
    """Per class: connected components in each sample (2D images: in each image), their
    count and sizes in pixels or voxels."""
    result = {}
    for k in labels:
        if k == 0:
            continue
        sizes = np.asarray([s for f in facts for s in f["objects"].get(k, [])])
        if sizes.size == 0:
            continue
        result[str(k)] = {
            "count": int(sizes.size),
            "per_sample": round(float(sizes.size / len(facts)), 3),
            "median": float(np.median(sizes)),
            "p10": float(np.percentile(sizes, 10)),
            "p90": float(np.percentile(sizes, 90)),
            "min": int(sizes.min()),
            "max": int(sizes.max()),
        }
    return result


def _copied(facts: Sequence[dict], channels: int) -> dict:
    """Groups whose every non-blank image has all channels equal (one sequence copied into
    the others), and the channel they resemble most: by the mean over non-zero pixels, the
    channel of the other groups whose mean is nearest to theirs."""
    by_group: dict[str, list[dict]] = {}
    for f in facts:
        by_group.setdefault(f["group"], []).append(f)
    copied = sorted(
        (g for g, members in by_group.items() if all(m["copied_channels"] for m in members)),
        key=natural_key,
    )
    result = {"groups": copied, "share_of_groups": round(len(copied) / len(by_group), 4)}
    if channels > 1 and copied and len(copied) < len(by_group):
        others = [f for f in facts if f["group"] not in copied]
        means = np.asarray([f["channel_means"] for f in others], float).mean(0)
        theirs = float(np.mean([f["channel_means"][0] for g in copied for f in by_group[g]]))
        result["closest_channel"] = int(np.argmin(np.abs(means - theirs)))
    return result
