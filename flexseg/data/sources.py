"""Where samples come from: the split folder layout, or one flat folder and a split rule."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np

from flexseg.data import layouts, readers, volumes
from flexseg.data.layouts import Case
from flexseg.data.pairing import Pair, find_pairs
from flexseg.data.splits import SPLITS, fold_groups, group_of, split_groups
from flexseg.errors import ConfigError, DataError

T = TypeVar("T")
# flat: root/{images,masks} and a split rule | splits: root/{train,valid,test}/{images,masks}
# nnunet: nnU-Net v2's raw folder | msd: the Decathlon's | auto: told by the folder
LAYOUTS = ("auto", "flat", "splits", "nnunet", "msd")


@dataclass(frozen=True)
class Sample:
    """One image, its mask (None at inference) and its group (the patient).

    A slice of a volume has its `index` along `axis` of the volume in RAS order
    (`flexseg.data.volumes`), its case's name and any further channel files (nnU-Net keeps
    one file per channel); a whole volume (3D models) has the case's name and channel
    files but no `index` or `axis`; a 2D image has none of them. `index` without `axis` is a slice
    along the first axis of a multi-page file.
    """

    image: Path
    mask: Path | None
    group: str
    index: int | None = None
    axis: int | None = None
    case: str | None = None
    channels: tuple[Path, ...] = ()

    @property
    def images(self) -> tuple[Path, ...]:
        """The sample's image files, in channel order."""
        return (self.image, *self.channels)

    @property
    def name(self) -> str:
        """The case's or file's name, and the slice's position for a slice of a volume."""
        stem = self.case or readers.stem_of(self.image)
        return stem if self.index is None else f"{stem}_z{self.index:03d}"

    @property
    def volume(self) -> bool:
        """Whether the sample is a volume or a slice of one."""
        return self.case is not None

    @property
    def whole(self) -> bool:
        """Whether the sample is a whole volume (not one slice of it)."""
        return self.case is not None and self.axis is None


@dataclass(frozen=True)
class SplitRule:
    """How the groups of the flat layout are dealt into train, valid and test.

    Args:
        groups: the group ids of each split, e.g. `{"train": ["p07"], "test": ["p26"]}`.
        fractions: or the share of the groups in each split, seeded (they sum to 1).
        holdout_fraction: share of each training group's slices held out, as one contiguous
            block, for validation.
        seed: seed of the fractions and the hold-out; None: the run's seed.
        folds, fold: cross-validation: the groups outside test dealt into `folds` seeded
            folds, of which fold `fold` validates.
    """

    groups: Mapping[str, Sequence[str]] | None = None
    fractions: Mapping[str, float] | None = None
    holdout_fraction: float = 0.0
    seed: int | None = None
    folds: int | None = None
    fold: int = 0


@dataclass(frozen=True)
class Source:
    """Where a data set's files are, how images pair with masks, and how they split.

    Args:
        root: the data set's folder.
        layout: one of `LAYOUTS`.
        images_dir, masks_dir: the folders of images and masks (in `root`, or in each split's
            folder for the splits layout).
        mask_suffix: text after the image's stem in each mask's stem (`a.png`, `a_mask.png`).
        group_regex: its first capture group is the group (the patient) of a file name;
            None makes each file its own group (required for 2D files of the flat layout;
            volumes are each their case's group).
        split: the split rule of the flat, nnunet and msd layouts.
        slice_axis: the axis of RAS order that volumes are cut along into the slices a 2D
            model sees, one of `volumes.SLICE_AXES` ("auto": the coarsest spacing).
        max_voxels: the most voxels a volume header may declare.
        whole_volumes: each case is one sample, its whole volumes (3D models), instead of
            its slices.
    """

    root: str | Path
    layout: str = "auto"
    images_dir: str = "images"
    masks_dir: str = "masks"
    mask_suffix: str = ""
    group_regex: str | None = None
    split: SplitRule = field(default_factory=SplitRule)
    slice_axis: str = "auto"
    max_voxels: int = volumes.MAX_VOXELS
    whole_volumes: bool = False

    def __post_init__(self):
        if str(self.slice_axis) not in volumes.SLICE_AXES:
            raise ConfigError(
                f"dataset.slice_axis must be one of {volumes.SLICE_AXES}. "
                f"Received: {self.slice_axis!r}"
            )
        if self.layout not in LAYOUTS:
            raise ConfigError(f"dataset.layout must be one of {LAYOUTS}. Received: {self.layout!r}")


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
    source: Source, seed: int, problems: list[str] | None = None
) -> dict[str, list[Sample]]:
    """Pairs the files of a dataset and splits them by group.

    Args:
        source: where the files are and how they split.
        seed: seed of the fraction split and of the validation hold-out, unless
            `dataset.split.seed` is set.
        problems: where to add the pairing problems (unpaired files, entries that are no
            image file) and go on with the files that pair; without it they raise.

    Returns:
        `{"train": [...], "valid": [...], "test": [...]}`; samples of one group are never in
        two splits (except with `split.holdout_fraction`, which holds out slices of the
        training groups as validation on purpose, and says so in the docs).
    """
    root = Path(source.root).expanduser()
    if not root.is_dir():
        raise DataError(f"dataset.root {root} is not a folder; set dataset.root=<path>.")
    regex = source.group_regex

    found_problems: list[str] = []

    def checked(result: dict[str, list[Sample]]) -> dict[str, list[Sample]]:
        if found_problems and problems is None:
            raise DataError("; ".join(found_problems))
        if problems is not None:
            problems.extend(found_problems)
        return result

    rule = source.split
    layout = layouts.detect(root) if source.layout == "auto" else source.layout
    if rule.folds and (layout == "splits" or rule.holdout_fraction):
        raise ConfigError(
            "dataset.split.folds deals whole groups into folds: it needs dataset.layout=flat "
            "and dataset.split.holdout_fraction=0."
        )
    if layout == "splits":
        if not (root / "train").exists():
            raise DataError(f"{root / 'train'} is missing; the splits layout needs train/.")
        return checked(
            {
                s: folder_samples(source, root / s, found_problems) if (root / s).exists() else []
                for s in SPLITS
            }
        )
    if layout == "nnunet":
        cases = layouts.nnunet_cases(root, "imagesTr", "labelsTr", found_problems)
        samples = case_samples(cases, source, found_problems)
    elif layout == "msd":
        samples = case_samples(layouts.msd_cases(root, found_problems), source, found_problems)
    else:
        if not regex and not _holds_volumes(root / source.images_dir):
            raise ConfigError(
                "dataset.group_regex is required for the flat layout: a regex whose first "
                "group is the patient id of a file name, e.g. dataset.group_regex='^(p\\d+)_' "
                "(quoted), or '^(.*)$' when each file is a patient of its own."
            )
        samples = folder_samples(source, root, found_problems)
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
    source: Source, folder: Path, problems: list[str], key: str = "dataset.group_regex"
) -> list[Sample]:
    """The paired samples of one folder (`images_dir` + `masks_dir` of the source), grouped
    by `source.group_regex` (None: each file is its own group); what does not pair or match
    the regex is added to `problems`, which name the regex as `key`."""
    regex = source.group_regex
    found, trouble = find_pairs(
        folder / source.images_dir, folder / source.masks_dir, source.mask_suffix
    )
    problems.extend(trouble)
    pictures = [pair for pair in found if not readers.is_volume(pair.image)]
    cases = [Case(p.name, (p.image,), p.mask) for p in found if readers.is_volume(p.image)]
    if pictures and cases:
        problems.append(
            f"{folder / source.images_dir} holds both 2D images ({pictures[0].image.name}) "
            f"and volumes ({cases[0].images[0].name}); keep one kind in a data set."
        )
        return []
    if cases:
        return case_samples(cases, source, problems, key)
    samples, unmatched = [], []
    for pair in pictures:
        try:
            samples.append(_sample(pair, regex))
        except DataError:
            unmatched.append(pair.name)
    _unmatched(unmatched, regex, key, problems)
    return samples


def case_samples(
    cases: Sequence[Case],
    source: Source,
    problems: list[str],
    key: str = "dataset.group_regex",
) -> list[Sample]:
    """The slices of each case's volumes along the source's slice axis (or each case whole,
    with `source.whole_volumes`), grouped by `source.group_regex` on the case name (None:
    each case its own group). A case whose first image's header cannot be read is a
    problem; its slices are left out."""
    regex = source.group_regex
    shapes, spacings, unmatched = {}, [], []
    for case in cases:
        try:
            place = volumes.geometry(case.images[0], "image", source.max_voxels)
        except DataError as error:
            problems.append(str(error))
            continue
        shapes[case.name] = place.shape
        spacings.append(place.spacing)
    axis = volumes.slice_axis(str(source.slice_axis), spacings)
    samples = []
    for case in cases:
        if case.name not in shapes:
            continue
        try:
            group = group_of(case.name, regex) if regex else case.name
        except DataError:
            unmatched.append(case.name)
            continue
        image, *channels = case.images
        if source.whole_volumes:
            samples.append(Sample(image, case.label, group, None, None, case.name, tuple(channels)))
            continue
        samples += [
            Sample(image, case.label, group, index, axis, case.name, tuple(channels))
            for index in range(shapes[case.name][axis])
        ]
    _unmatched(unmatched, regex, key, problems)
    return samples


def _unmatched(names: list[str], regex: str | None, key: str, problems: list[str]) -> None:
    if names:
        more = len(names) - 5
        shown = ", ".join(names[:5]) + (f" and {more} more" if more > 0 else "")
        problems.append(
            f"group regex {regex!r} does not match the file name(s) {shown}; fix "
            f"{key} so that it captures the patient id of every file."
        )


def _holds_volumes(folder: Path) -> bool:
    """Whether a folder's files are volumes (its first file of a known format is one)."""
    if not folder.is_dir():
        return False
    known = (p for p in sorted(folder.iterdir()) if readers.suffix_of(p) is not None)
    first = next(known, None)
    return first is not None and readers.is_volume(first)


def _sample(pair: Pair, regex: str | None) -> Sample:
    group = group_of(pair.name, regex) if regex else pair.name
    return Sample(pair.image, pair.mask, group)
