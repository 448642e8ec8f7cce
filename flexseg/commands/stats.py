"""`flexseg-stats`: dataset statistics and the mask report, as JSON and a bar chart."""

from __future__ import annotations

import sys
from pathlib import Path

from flexseg.commands._app import command
from flexseg.config.schema import StatsConfig


@command
def main(cfg: StatsConfig, run_dir: Path) -> None:
    """Counts, sizes and class frequencies per split; exit 1 when masks hold unknown colours."""
    from flexseg.data.stats import dataset_statistics, write_statistics
    from flexseg.from_config import colormap_of, find_samples

    dataset = cfg.dataset
    splits = find_samples(dataset, cfg.seed)
    result, report = dataset_statistics(
        splits, dataset.names, colormap_of(dataset), dataset.max_pixels, dataset.max_voxels
    )
    paths = write_statistics(run_dir, result, report)
    for split, s in result.items():
        if "cases" in s:
            print(_volumes_line(split, s))
            continue
        classes = ", ".join(f"{k} {v:.4f}" for k, v in s["class_pixel_fraction"].items())
        print(
            f"{split}: {s['images']} images from {s['groups']} groups, "
            f"sizes {s['image_sizes_wxh']}, {s['fraction_with_foreground']:.0%} with foreground, "
            f"class pixel fractions {classes}"
        )
        if s["groups_with_copied_channels"]:
            print(
                f"{split}: {len(s['groups_with_copied_channels'])} group(s) whose image channels "
                "are copies of each other (one sequence standing in for missing ones): "
                + ", ".join(s["groups_with_copied_channels"])
            )
    print(report.summary())
    print("wrote " + ", ".join(str(p) for p in paths))
    if report.unknown:
        print("error: masks hold colours that are in no rgb_map entry (see above)", file=sys.stderr)
        sys.exit(1)


def _volumes_line(split: str, s: dict) -> str:
    percentiles = "; ".join(
        f"{c} {v['0.5']:.4g} / {v['50']:.4g} / {v['99.5']:.4g}"
        for c, v in s["intensity_percentiles"].items()
    )
    classes = ", ".join(
        f"{k} {v['mean']:.3g} mL" for k, v in s["class_ml_per_case"].items() if k != "background"
    )
    return (
        f"{split}: {s['cases']} cases ({s['images']} slices along axis {s['slice_axis']}), "
        f"shapes {s['shapes_ras']} (RAS), spacing {s['spacing_mm_median']} mm median "
        f"({s['spacing_mm_min']} to {s['spacing_mm_max']}), stored as {s['orientations']}, "
        f"intensity 0.5 / 50 / 99.5th percentiles {percentiles}, mean per case {classes}, "
        f"{s['cases_without_foreground']} case(s) without foreground"
    )
