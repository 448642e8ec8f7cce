"""Dataset statistics: counts, sizes, class frequencies and the mask report, per split."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from flexseg.data.files import MAX_PIXELS
from flexseg.data.masks import ColorMap, MaskReport, decode_mask
from flexseg.data.reading import read_image
from flexseg.data.sources import Sample, natural_key


def dataset_statistics(
    splits: Mapping[str, list[Sample]],
    class_names: Sequence[str],
    colormap: ColorMap | None = None,
    max_pixels: int = MAX_PIXELS,
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

    Returns:
        The statistics as a JSON-ready dict, and the report of blended and unknown colours.
    """
    names = list(class_names)
    num_classes = len(names)
    report = MaskReport()
    result = {}
    for split, samples in splits.items():
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
        values = {
            f"{k} pixels": v for k, v in s["class_pixel_fraction"].items() if k != "background"
        }
        values["images with foreground"] = s["fraction_with_foreground"]
        bars[f"{split} ({s['images']})"] = values
    png_path = save_bars(
        out_dir / "dataset_stats.png", bars, "class frequencies per split", "fraction"
    )
    return [json_path, png_path]
