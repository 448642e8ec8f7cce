"""Splitting slices into train / valid / test by group (the patient), never by slice."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np

from flexseg.errors import ConfigError, DataError

SPLITS = ("train", "valid", "test")


def group_of(name: str, pattern: str | re.Pattern) -> str:
    """The group id of a file stem: the first capture group of `pattern`, or its whole match.

    >>> group_of("p07_z026", r"^(p\\d+)_")
    'p07'
    """
    pattern = re.compile(pattern)
    match = pattern.search(name)
    if match is None:
        raise DataError(
            f"group regex {pattern.pattern!r} does not match file name {name!r}; fix "
            "dataset.group_regex so that it captures the patient id of every file."
        )
    return match.group(1) if pattern.groups else match.group(0)


def fold_groups(
    assignment: Mapping[str, Sequence[str]], folds: int, fold: int, seed: int = 0
) -> dict[str, list[str]]:
    """Cross-validation: the groups of train and valid dealt into `folds` seeded folds of
    (nearly) equal size; fold `fold` becomes valid, the others train, test stays as it is.

    The deal depends on the groups and the seed only, so the K runs of one cross-validation
    (same seed, `fold` = 0 ... K-1) validate on disjoint groups that together are all of them.
    """
    pool = sorted([*assignment.get("train", ()), *assignment.get("valid", ())])
    if not 0 <= fold < folds:
        raise ConfigError(
            f"dataset.split.fold={fold} is not a fold of dataset.split.folds={folds}; use 0 to "
            f"{folds - 1}."
        )
    if folds > len(pool):
        raise ConfigError(
            f"dataset.split.folds={folds} but only {len(pool)} groups are outside the test "
            "split; use at most that many folds."
        )
    order = np.random.default_rng(np.random.SeedSequence([seed, folds])).permutation(len(pool))
    chosen = {pool[i] for i in np.array_split(order, folds)[fold]}
    return {
        "train": sorted(g for g in pool if g not in chosen),
        "valid": sorted(chosen),
        "test": sorted(assignment.get("test", ())),
    }


def split_groups(
    groups: Sequence[str],
    split_groups: Mapping[str, Sequence[str]] | None = None,
    fractions: Mapping[str, float] | None = None,
    seed: int = 0,
) -> dict[str, list[str]]:
    """Assigns every group to one split.

    Either list the groups of each split explicitly (`split_groups`; a split may be left
    out), or give seeded `fractions` of the groups (they must sum to 1). Groups are never
    shared by two splits.

    Returns:
        `{"train": [...], "valid": [...], "test": [...]}` with sorted group ids.
    """
    known = sorted(set(groups))
    if (split_groups is None) == (fractions is None):
        raise ConfigError(
            "dataset.split: give exactly one of `groups` (group ids per split) or "
            "`fractions` (a share of the groups per split)."
        )
    result: dict[str, list[str]] = {s: [] for s in SPLITS}
    if split_groups is not None:
        seen: dict[str, str] = {}
        for split, ids in split_groups.items():
            if split not in SPLITS:
                raise ConfigError(f"dataset.split.groups.{split}: unknown split; use {SPLITS}.")
            for gid in ids:
                gid = str(gid)
                if gid not in known:
                    raise ConfigError(
                        f"dataset.split.groups.{split}: group {gid!r} has no files; known "
                        f"groups: {', '.join(known)}."
                    )
                if gid in seen:
                    raise ConfigError(
                        f"dataset.split.groups: group {gid!r} is in both {seen[gid]} and "
                        f"{split}; a patient must belong to one split."
                    )
                seen[gid] = split
                result[split].append(gid)
    else:
        unknown = set(fractions) - set(SPLITS)
        if unknown:
            raise ConfigError(
                f"dataset.split.fractions: unknown split(s) {sorted(unknown)}; use {SPLITS}."
            )
        values = np.array([float(fractions.get(s, 0.0)) for s in SPLITS])
        if (values < 0).any() or not np.isclose(values.sum(), 1.0):
            raise ConfigError(
                f"dataset.split.fractions must be >= 0 and sum to 1. Received: {dict(fractions)}"
            )
        order = np.random.default_rng(seed).permutation(len(known))
        # Round the cumulative shares so that the counts always add up to the group count.
        bounds = np.rint(np.cumsum(values) * len(known)).astype(int)
        start = 0
        for split, share, end in zip(SPLITS, values, bounds, strict=True):
            result[split] = [known[i] for i in order[start:end]]
            if share > 0 and not result[split]:
                raise ConfigError(
                    f"dataset.split.fractions.{split}={share:g} of {len(known)} groups gives "
                    f"{split} no group; raise the fraction, set it to 0, or list the groups in "
                    "dataset.split.groups."
                )
            start = end
    return {split: sorted(ids) for split, ids in result.items()}
