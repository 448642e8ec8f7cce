"""Data: pairing, splits, mask colour maps, reading, the streaming loader, augmentation."""

import importlib

from flexseg.data.masks import ColorMap, MaskReport, decode_mask, write_palette_png
from flexseg.data.pairing import pair_by_name
from flexseg.data.reading import ReadSpec, read_image
from flexseg.data.sources import Sample, Source, SplitRule, find_samples
from flexseg.data.splits import group_of, split_groups

_LAZY = {
    "LoaderSettings": "build",
    "SegmentationDataset": "dataset",
    "build_datasets": "build",
    "compute_group_stats": "dataset",
    "build_augmentation": "transforms",
}


def __getattr__(name: str):
    # Keras and albumentations are imported on first use: loader worker processes import
    # this package for the batch maker alone, before they keep albumentations from
    # importing torch (see flexseg.data.workers).
    if name in _LAZY:
        module = importlib.import_module(f"flexseg.data.{_LAZY[name]}")
        return getattr(module, name)
    raise AttributeError(f"module 'flexseg.data' has no attribute {name!r}")


__all__ = [
    "ColorMap",
    "LoaderSettings",
    "MaskReport",
    "ReadSpec",
    "Sample",
    "SegmentationDataset",
    "Source",
    "SplitRule",
    "build_augmentation",
    "build_datasets",
    "compute_group_stats",
    "decode_mask",
    "find_samples",
    "group_of",
    "pair_by_name",
    "read_image",
    "split_groups",
    "write_palette_png",
]
