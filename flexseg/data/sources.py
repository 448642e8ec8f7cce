"""Where samples come from: the split folder layout, or one flat folder and a split rule."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from flexseg.data.pairing import Pair, pair_by_name
from flexseg.data.splits import SPLITS, group_of, split_groups
from flexseg.errors import ConfigError, DataError

LAYOUTS = ("flat", "splits")


@dataclass(frozen=True)
class Sample:
    """One image, its mask (None at inference) and its group (the patient)."""

    image: Path
    mask: Path | None
    group: str

    @property
    def name(self) -> str:
        return self.image.stem


def natural_key(name: str) -> list:
    """Sort key that puts `slice_2` before `slice_10`."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def find_samples(dataset: Mapping, seed: int = 0) -> dict[str, list[Sample]]:
    """Pairs the files of a dataset and splits them by group.

    Args:
        dataset: the `dataset` config: `root`, `layout`, `images_dir`, `masks_dir`,
            `mask_suffix`, `group_regex` and, for the flat layout, `split`.
        seed: seed of the fraction split and of the validation hold-out.

    Returns:
        `{"train": [...], "valid": [...], "test": [...]}`; samples of one group are never in
        two splits (except with `split.holdout_fraction`, which holds out slices of the
        training groups as validation on purpose, and says so in the docs).
    """
    root = Path(dataset["root"]).expanduser()
    if not root.is_dir():
        raise DataError(f"dataset.root {root} is not a folder; set dataset.root=<path>.")
    layout = dataset.get("layout", "flat")
    images_dir = dataset.get("images_dir", "images")
    masks_dir = dataset.get("masks_dir", "masks")
    suffix = dataset.get("mask_suffix", "") or ""
    regex = dataset.get("group_regex")
    if layout == "splits":
        result = {}
        for split in SPLITS:
            folder = root / split
            if not folder.exists():
                result[split] = []
                continue
            pairs = pair_by_name(folder / images_dir, folder / masks_dir, suffix)
            result[split] = [_sample(p, regex) for p in pairs]
        if not result["train"]:
            raise DataError(f"{root / 'train'} is missing; the splits layout needs train/.")
        return result
    if layout != "flat":
        raise ConfigError(f"dataset.layout must be one of {LAYOUTS}. Received: {layout!r}")
    if not regex:
        raise ConfigError(
            "dataset.group_regex is required for the flat layout: a regex whose first group "
            "is the patient id of a file name, e.g. '^(p\\d+)_'."
        )
    samples = [_sample(p, regex) for p in pair_by_name(root / images_dir, root / masks_dir, suffix)]
    rule = dataset.get("split") or {}
    assignment = split_groups(
        [s.group for s in samples],
        split_groups=rule.get("groups") or None,
        fractions=rule.get("fractions") or None,
        seed=rule.get("seed", seed) if rule.get("seed") is not None else seed,
    )
    result = {
        split: [s for s in samples if s.group in set(groups)]
        for split, groups in assignment.items()
    }
    holdout = rule.get("holdout_fraction") or 0.0
    if holdout:
        result["train"], held = holdout_blocks(result["train"], holdout, seed)
        result["valid"] = sorted(result["valid"] + held, key=lambda s: natural_key(s.name))
    if not result["train"]:
        raise DataError(
            "the split rule leaves no training images; check dataset.split (groups found: "
            f"{', '.join(sorted({s.group for s in samples}))})."
        )
    return result


def holdout_blocks(
    samples: list[Sample], fraction: float, seed: int
) -> tuple[list[Sample], list[Sample]]:
    """Moves a contiguous block of `fraction` of each group's slices out, for validation.

    A contiguous block of slices shares fewer near-duplicate neighbours with the training
    slices than a random pick would, so validation scores are less optimistic.
    """
    if not 0 < fraction < 1:
        raise ConfigError(
            f"dataset.split.holdout_fraction must be between 0 and 1. Received: {fraction}"
        )
    rng = np.random.default_rng(seed)
    keep, held = [], []
    for group in sorted({s.group for s in samples}):
        members = sorted(
            (s for s in samples if s.group == group), key=lambda s: natural_key(s.name)
        )
        count = max(1, round(fraction * len(members)))
        start = int(rng.integers(0, len(members) - count + 1))
        held += members[start : start + count]
        keep += members[:start] + members[start + count :]
    return keep, held


def _sample(pair: Pair, regex: str | None) -> Sample:
    group = group_of(pair.name, regex) if regex else pair.name
    return Sample(pair.image, pair.mask, group)
