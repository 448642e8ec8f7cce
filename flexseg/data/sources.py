"""Where samples come from: the split folder layout, or one flat folder and a split rule."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np

from flexseg.config.schema import SPLITS, DatasetConfig
from flexseg.data.pairing import Pair, find_pairs
from flexseg.data.splits import fold_groups, group_of, split_groups
from flexseg.errors import ConfigError, DataError

T = TypeVar("T")


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


def by_group(items: Iterable[T], group: Callable[[T], str]) -> dict[str, list[T]]:
    """The items of each group (`group(item)`), groups in the order of their first item."""
    members: dict[str, list[T]] = {}
    for item in items:
        members.setdefault(group(item), []).append(item)
    return members


def find_samples(
    dataset: DatasetConfig, seed: int, problems: list[str] | None = None
) -> dict[str, list[Sample]]:
    """Pairs the files of a dataset and splits them by group.

    Args:
        dataset: the `dataset` config: `root`, `layout`, `images_dir`, `masks_dir`,
            `mask_suffix`, `group_regex` and, for the flat layout, `split`.
        seed: seed of the fraction split and of the validation hold-out, unless
            `dataset.split.seed` is set.
        problems: where to add the pairing problems (unpaired files, entries that are no
            image file) and go on with the files that pair; without it they raise.

    Returns:
        `{"train": [...], "valid": [...], "test": [...]}`; samples of one group are never in
        two splits (except with `split.holdout_fraction`, which holds out slices of the
        training groups as validation on purpose, and says so in the docs).
    """
    root = Path(dataset.root).expanduser()
    if not root.is_dir():
        raise DataError(f"dataset.root {root} is not a folder; set dataset.root=<path>.")
    regex = dataset.group_regex

    found_problems: list[str] = []

    def checked(result: dict[str, list[Sample]]) -> dict[str, list[Sample]]:
        if found_problems and problems is None:
            raise DataError("; ".join(found_problems))
        if problems is not None:
            problems.extend(found_problems)
        return result

    if dataset.split.folds and (dataset.layout == "splits" or dataset.split.holdout_fraction):
        raise ConfigError(
            "dataset.split.folds deals whole groups into folds: it needs dataset.layout=flat "
            "and dataset.split.holdout_fraction=0."
        )
    if dataset.layout == "splits":
        if not (root / "train").exists():
            raise DataError(f"{root / 'train'} is missing; the splits layout needs train/.")
        return checked(
            {
                s: folder_samples(dataset, root / s, found_problems) if (root / s).exists() else []
                for s in SPLITS
            }
        )
    if not regex:
        raise ConfigError(
            "dataset.group_regex is required for the flat layout: a regex whose first group "
            "is the patient id of a file name, e.g. '^(p\\d+)_'."
        )
    samples = folder_samples(dataset, root, found_problems)
    rule = dataset.split
    split_seed = seed if rule.seed is None else rule.seed
    try:
        assignment = split_groups(
            [s.group for s in samples],
            split_groups=rule.groups or None,
            fractions=rule.fractions or None,
            seed=split_seed,
        )
        if rule.folds:
            assignment = fold_groups(assignment, rule.folds, rule.fold, split_seed)
    except (ConfigError, DataError) as error:
        if not found_problems:
            raise
        # Files that did not pair can leave a split without its groups: say both.
        found_problems.append(str(error))
        return checked({split: [] for split in SPLITS})
    result = {
        split: [s for s in samples if s.group in set(groups)]
        for split, groups in assignment.items()
    }
    if rule.holdout_fraction:
        result["train"], held = holdout_blocks(result["train"], rule.holdout_fraction, seed)
        result["valid"] = sorted(result["valid"] + held, key=lambda s: natural_key(s.name))
    if not result["train"] and not found_problems:
        raise DataError(
            "the split rule leaves no training images; check dataset.split (groups found: "
            f"{', '.join(sorted({s.group for s in samples}))})."
        )
    return checked(result)


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


def folder_samples(
    dataset: DatasetConfig, folder: Path, problems: list[str], key: str = "dataset.group_regex"
) -> list[Sample]:
    """The paired samples of one folder (`images_dir` + `masks_dir` of the dataset config),
    grouped by `dataset.group_regex` (None: each file is its own group); what does not pair
    or match the regex is added to `problems`, which name the regex as `key`."""
    regex = dataset.group_regex
    found, trouble = find_pairs(
        folder / dataset.images_dir, folder / dataset.masks_dir, dataset.mask_suffix
    )
    problems.extend(trouble)
    samples, unmatched = [], []
    for pair in found:
        try:
            samples.append(_sample(pair, regex))
        except DataError:
            unmatched.append(pair.name)
    if unmatched:
        more = len(unmatched) - 5
        shown = ", ".join(unmatched[:5]) + (f" and {more} more" if more > 0 else "")
        problems.append(
            f"group regex {regex!r} does not match the file name(s) {shown}; fix "
            f"{key} so that it captures the patient id of every file."
        )
    return samples


def _sample(pair: Pair, regex: str | None) -> Sample:
    group = group_of(pair.name, regex) if regex else pair.name
    return Sample(pair.image, pair.mask, group)
