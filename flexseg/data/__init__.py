"""Data: pairing, splits, mask colour maps, reading, the streaming loader, augmentation."""

from flexseg.data.dataset import SegmentationDataset, compute_group_stats
from flexseg.data.masks import ColorMap, MaskReport, decode_mask, write_palette_png
from flexseg.data.pairing import pair_by_name
from flexseg.data.reading import ReadSpec, read_image
from flexseg.data.sources import Sample, find_samples
from flexseg.data.splits import group_of, split_groups
from flexseg.data.transforms import build_augmentation

__all__ = [
    "ColorMap",
    "MaskReport",
    "ReadSpec",
    "Sample",
    "SegmentationDataset",
    "build_augmentation",
    "compute_group_stats",
    "decode_mask",
    "find_samples",
    "group_of",
    "pair_by_name",
    "read_image",
    "split_groups",
    "write_palette_png",
]
