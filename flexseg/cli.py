"""Command-line entry points: each is a few lines around a library call.

Every command takes Hydra overrides (`dataset=lgg dataset.root=/data/lgg trainer.epochs=5`)
and writes into its own run directory.
"""

from __future__ import annotations

import sys
from pathlib import Path

from flexseg.config import hydra_app
from flexseg.errors import ConfigError, DataError


def _fail(error: Exception) -> None:
    print(f"error: {error}", file=sys.stderr)
    sys.exit(2)


@hydra_app("train")
def stats(cfg: dict) -> None:
    """`flexseg-stats`: dataset statistics and the mask report, as JSON and a bar chart."""
    from flexseg.data.sources import find_samples
    from flexseg.data.stats import dataset_statistics, write_statistics

    try:
        splits = find_samples(cfg["dataset"], cfg["seed"])
        result, report = dataset_statistics(cfg["dataset"], splits)
    except (ConfigError, DataError) as error:
        _fail(error)
    paths = write_statistics(cfg["_run_dir_"], result, report)
    for split, s in result.items():
        classes = ", ".join(f"{k} {v:.4f}" for k, v in s["class_pixel_fraction"].items())
        print(
            f"{split}: {s['images']} images from {s['groups']} groups, "
            f"sizes {s['image_sizes_wxh']}, {s['fraction_with_foreground']:.0%} with foreground, "
            f"class pixel fractions {classes}"
        )
    print(report.summary())
    print("wrote " + ", ".join(str(p) for p in paths))
    if report.unknown:
        print("error: masks hold colours that are in no rgb_map entry (see above)", file=sys.stderr)
        sys.exit(1)


@hydra_app("train")
def preview_augment(cfg: dict) -> None:
    """`flexseg-preview-augment`: a grid of augmented training images with their masks."""
    from flexseg.data.build import build_datasets
    from flexseg.data.preview import save_augmentation_grid

    try:
        train = build_datasets(cfg)["train"]
    except (ConfigError, DataError) as error:
        _fail(error)
    path = save_augmentation_grid(train, Path(cfg["_run_dir_"]) / "augmentation.png")
    print(f"augment={cfg['augment']['name']}: wrote {path}")
