"""`flexseg-preview-augment`: a grid of augmented training images with their masks."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from flexseg.commands._app import command
from flexseg.config.schema import PreviewAugmentConfig


@command
def main(cfg: PreviewAugmentConfig, run_dir: Path) -> None:
    """Draws `preview_samples` augmented training samples into one picture."""
    from flexseg.data.preview import save_augmentation_grid
    from flexseg.from_config import build_datasets

    # A few samples are shown: no cache of the whole split is built for them.
    uncached = replace(cfg, dataset=replace(cfg.dataset, cache="none"))
    train_data = build_datasets(uncached, only="train")["train"]
    path = save_augmentation_grid(train_data, run_dir / "augmentation.png", cfg.preview_samples)
    print(f"augment={cfg.augment.name}: wrote {path}")
