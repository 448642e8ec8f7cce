"""A picture of what the augmentation does: N augmented image/mask overlays in one PNG."""

from __future__ import annotations

from pathlib import Path

from flexseg.data.dataset import SegmentationDataset
from flexseg.plots import overlay, save_grid


def save_augmentation_grid(
    dataset: SegmentationDataset, path: str | Path, count: int = 16, columns: int = 4
) -> Path:
    """Saves `count` augmented training samples, spread over the data set, as overlays."""
    pictures, titles = [], []
    for k in range(count):
        i = (k * len(dataset.samples)) // count  # spread over the data set
        image, mask = dataset.load(i, epoch=k)
        pictures.append(overlay(image, mask))
        titles.append(dataset.samples[i].name)
    rows = [pictures[r : r + columns] for r in range(0, len(pictures), columns)]
    name = "no augmentation" if dataset.augment is None else "augmented training samples"
    return save_grid(path, rows, title=f"{name} (mask tinted)")
