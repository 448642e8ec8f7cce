"""Dataset statistics: counts, sizes, class frequencies and the mask report, per split."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from flexseg.data import volumes
from flexseg.data.files import MAX_PIXELS
from flexseg.data.masks import ColorMap, MaskReport, decode_mask
from flexseg.data.reading import read_image
from flexseg.data.sources import Sample, by_group, natural_key

PERCENTILES = (0.5, 1, 50, 99, 99.5)  # of each channel's intensities, over non-zero voxels
_PER_CASE = 10000  # voxels of each channel of a case that join the percentiles (seeded)


def dataset_statistics(
    splits: Mapping[str, list[Sample]],
    class_names: Sequence[str],
    colormap: ColorMap | None = None,
    max_pixels: int = MAX_PIXELS,
    max_voxels: int = volumes.MAX_VOXELS,
) -> tuple[dict, MaskReport]:
    """Per split: image and group counts, image sizes, class pixel frequencies, the share of
    images with any foreground, and the groups whose image channels are copies of each other
    (a scan missing sequences, whose one sequence was copied into every channel). Masks are
    read at their own size, one at a time.

    Args:
        splits: samples per split.
        class_names: one per class, background first.
        colormap: maps mask colours to class ids; None for masks of class ids.
        max_pixels: the most pixels a file may declare.
        max_voxels: the most voxels a volume may declare.

    Splits of volumes get `volume_statistics` instead.

    Returns:
        The statistics as a JSON-ready dict, and the report of blended and unknown colours.
    """
    names = list(class_names)
    num_classes = len(names)
    report = MaskReport()
    result = {}
    for split, samples in splits.items():
        if samples and samples[0].volume:
            result[split] = volume_statistics(samples, names, max_voxels)
            continue
        sizes, pixels, with_fg = Counter(), np.zeros(num_classes, np.int64), 0
        copies: dict[str, list[bool]] = {}  # per group: each non-blank image's channels equal?
        for sample in samples:
            mask, found = decode_mask(sample.mask, num_classes, colormap, max_pixels, sample.index)
            report.update(found)
            image = read_image(sample.image, None, max_pixels, sample.index)  # its own channels
            sizes[f"{image.shape[1]}x{image.shape[0]}"] += 1
            if image.shape[-1] > 1 and image.any():
                same = bool((image == image[..., :1]).all())
                copies.setdefault(sample.group, []).append(same)
            pixels += np.bincount(mask.ravel(), minlength=num_classes)[:num_classes]
            with_fg += bool((mask > 0).any())
        total = max(int(pixels.sum()), 1)
        result[split] = {
            "images": len(samples),
            "groups": len({s.group for s in samples}),
            "image_sizes_wxh": dict(sizes),
            "class_pixel_fraction": {
                n: float(p / total) for n, p in zip(names, pixels, strict=True)
            },
            "fraction_with_foreground": with_fg / len(samples) if samples else 0.0,
            "groups_with_copied_channels": sorted(
                (g for g, same in copies.items() if all(same)), key=natural_key
            ),
        }
    return result, report


def volume_statistics(
    samples: Sequence[Sample], class_names: Sequence[str], max_voxels: int = volumes.MAX_VOXELS
) -> dict:
    """Of the cases of a split of volume slices: shapes and spacings (RAS order, mm), the
    orientations they are stored in, the intensity percentiles of each channel over non-zero
    voxels (`PERCENTILES`; up to `_PER_CASE` seeded voxels of each case), each class's volume
    per case in mL, and the slice counts. One case is read at a time."""
    names = list(class_names)
    cases = by_group(samples, lambda sample: sample.case)
    shapes, spacings, orientations, millilitres = Counter(), [], Counter(), []
    values: list[list[np.ndarray]] = []
    rng = np.random.default_rng(0)
    with_fg = 0
    for members in cases.values():
        first = members[0]
        place = volumes.geometry(first.image, "image", max_voxels)
        shapes["x".join(map(str, place.shape))] += 1
        spacings.append(place.spacing)
        orientations[place.orientation] += 1
        channels = volumes.case_channels(first.images, max_voxels)
        values += [[] for _ in range(len(channels) - len(values))]
        for c, channel in enumerate(channels):
            inside = channel[channel != 0]
            take = min(_PER_CASE, inside.size)
            values[c].append(rng.choice(inside, take, replace=False) if take else inside)
        labels = volumes.load(first.mask, "label", max_voxels).voxels
        counts = np.bincount(labels.ravel(), minlength=len(names))[: len(names)]
        millilitres.append(counts * float(np.prod(place.spacing)) / 1000.0)
        with_fg += sum(bool(volumes.cut(labels, s.axis, s.index).any()) for s in members)
    spacing = np.asarray(spacings, float)
    ml = np.asarray(millilitres, float)
    return {
        "cases": len(cases),
        "images": len(samples),  # the slices a 2D model sees
        "groups": len({s.group for s in samples}),
        "slice_axis": samples[0].axis,
        "shapes_ras": dict(shapes),
        "spacing_mm_median": np.median(spacing, 0).round(4).tolist(),
        "spacing_mm_min": spacing.min(0).round(4).tolist(),
        "spacing_mm_max": spacing.max(0).round(4).tolist(),
        "orientations": dict(orientations),
        "intensity_percentiles": {
            f"channel_{c}": {
                str(p): float(v)
                for p, v in zip(
                    PERCENTILES, np.percentile(np.concatenate(vs), PERCENTILES), strict=True
                )
            }
            for c, vs in enumerate(values)
            if sum(v.size for v in vs)
        },
        "class_ml_per_case": {
            n: {
                "mean": float(ml[:, k].mean()),
                "min": float(ml[:, k].min()),
                "max": float(ml[:, k].max()),
            }
            for k, n in enumerate(names)
        },  # fmt: skip
        "cases_without_foreground": sum(int(row[1:].sum() == 0) for row in ml),
        "fraction_with_foreground": with_fg / len(samples) if samples else 0.0,
    }


def write_statistics(out_dir: str | Path, stats: dict, report: MaskReport) -> list[Path]:
    """Writes `dataset_stats.json` and `dataset_stats.png` into `out_dir`."""
    from flexseg.plots import save_bars

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    payload = {
        "splits": stats,
        "mask_report": {
            "pixels": report.pixels,
            "blended_pixels": report.blended_pixels,
            "unknown_colors": {str(list(c)): n for c, n in report.unknown.items()},
            "files_with_unknown_colors": sorted(report.unknown_files),
        },
    }
    json_path = out_dir / "dataset_stats.json"
    json_path.write_text(json.dumps(payload, indent=2))
    bars = {}
    for split, s in stats.items():
        if "class_pixel_fraction" not in s:  # volumes: each class's mean share of a case
            total = sum(v["mean"] for v in s["class_ml_per_case"].values()) or 1.0
            fractions = {k: v["mean"] / total for k, v in s["class_ml_per_case"].items()}
        else:
            fractions = s["class_pixel_fraction"]
        values = {f"{k} pixels": v for k, v in fractions.items() if k != "background"}
        values["images with foreground"] = s["fraction_with_foreground"]
        bars[f"{split} ({s['images']})"] = values
    png_path = save_bars(
        out_dir / "dataset_stats.png", bars, "class frequencies per split", "fraction"
    )
    return [json_path, png_path]
