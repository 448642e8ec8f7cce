from __future__ import annotations

import pytest

from flexseg.data import find_samples, group_of, split_groups
from flexseg.errors import ConfigError, DataError
from tests.helpers import data_source, make_flat_dataset


@pytest.mark.parametrize(
    ("name", "regex", "group"),
    [
        ("p07_z026", r"^(p\d+)_", "p07"),
        ("TCGA_CS_4941_19960909_11", r"^([^_]+_[^_]+_[^_]+_[^_]+)_", "TCGA_CS_4941_19960909"),
        ("case12", r"case\d+", "case12"),
    ],
)
def test_group_of(name, regex, group):
    assert group_of(name, regex) == group


def test_regex_that_matches_nothing_names_the_file():
    with pytest.raises(DataError, match="slice_1"):
        group_of("slice_1", r"^(p\d+)_")


def test_fraction_split_is_seeded_and_disjoint():
    groups = [f"g{i}" for i in range(20)]
    fractions = {"train": 0.7, "valid": 0.1, "test": 0.2}
    first = split_groups(groups, fractions=fractions, seed=3)
    assert first == split_groups(groups, fractions=fractions, seed=3)
    assert [len(first[s]) for s in ("train", "valid", "test")] == [14, 2, 4]
    assert sorted(sum(first.values(), [])) == sorted(groups)
    assert first != split_groups(groups, fractions=fractions, seed=4)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(split_groups={"train": ["g1"], "test": ["g1"]}), "both train and test"),
        (dict(split_groups={"train": ["g9"]}), "'g9' has no files"),
        (dict(split_groups={"training": ["g1"]}), "training"),
        (dict(fractions={"train": 0.5, "test": 0.2}), "sum to 1"),
        ({}, "exactly one"),
    ],
)
def test_bad_split_rules(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        split_groups(["g1", "g2"], **kwargs)


def test_no_group_leaks_across_splits(tmp_path):
    make_flat_dataset(tmp_path, groups=[f"p{i:02d}" for i in range(10)], slices=3)
    dataset = data_source(tmp_path, split={"fractions": {"train": 0.6, "valid": 0.2, "test": 0.2}})
    splits = find_samples(dataset, seed=0)
    groups = {split: {s.group for s in samples} for split, samples in splits.items()}
    assert not groups["train"] & groups["valid"]
    assert not groups["train"] & groups["test"]
    assert not groups["valid"] & groups["test"]
    assert sum(len(v) for v in splits.values()) == 30


def test_holdout_takes_a_block_of_each_training_group(tmp_path):
    make_flat_dataset(tmp_path, groups=("p01", "p02", "p03"), slices=10)
    split = {"groups": {"train": ["p01", "p02"], "test": ["p03"]}, "holdout_fraction": 0.2}
    dataset = data_source(tmp_path, split=split)
    splits = find_samples(dataset, seed=0)
    assert len(splits["valid"]) == 4 and len(splits["train"]) == 16
    assert {s.group for s in splits["test"]} == {"p03"}
    for group in ("p01", "p02"):
        slices = sorted(int(s.name[-3:]) for s in splits["valid"] if s.group == group)
        assert slices == list(range(slices[0], slices[0] + 2))  # contiguous


def test_split_layout(tmp_path):
    for split in ("train", "valid", "test"):
        make_flat_dataset(tmp_path / split, groups=(f"{split}1",), slices=2)
    splits = find_samples(data_source(tmp_path, layout="splits", group_regex=None), seed=0)
    assert {k: len(v) for k, v in splits.items()} == {"train": 2, "valid": 2, "test": 2}


def test_folds_partition_the_groups_outside_test_with_no_leak(tmp_path):
    groups = [f"p{i:02d}" for i in range(11)]
    make_flat_dataset(tmp_path, groups=groups, slices=2, size=(8, 8))
    split = {"fractions": {"train": 0.8, "test": 0.2}, "folds": 4}
    runs = [
        find_samples(data_source(tmp_path, split={**split, "fold": k}), seed=3) for k in range(4)
    ]
    named = [{k: {s.group for s in v} for k, v in splits.items()} for splits in runs]
    test = named[0]["test"]
    assert len(test) == 2 and all(n["test"] == test for n in named)  # fixed, in no fold
    valid = [n["valid"] for n in named]
    assert sorted(g for v in valid for g in v) == sorted(set(groups) - test)  # each once
    assert sorted(len(v) for v in valid) == [2, 2, 2, 3]
    for n in named:
        assert not n["train"] & n["valid"] and not (n["train"] | n["valid"]) & test
        assert n["train"] | n["valid"] | test == set(groups)
    again = find_samples(data_source(tmp_path, split={**split, "fold": 1}), seed=3)
    assert {s.group for s in again["valid"]} == valid[1]  # the same deal every time


@pytest.mark.parametrize(
    ("split", "message"),
    [
        ({"folds": 4, "fold": 4}, r"fold=4 is not a fold of dataset.split.folds=4"),
        ({"folds": 9}, r"folds=9 but only 2 groups are outside the test split"),
        ({"folds": 2, "holdout_fraction": 0.2}, "needs dataset.layout=flat and .*holdout"),
    ],
)
def test_bad_fold_settings(tmp_path, split, message):
    make_flat_dataset(tmp_path, groups=("p01", "p02", "p03"), slices=2, size=(8, 8))
    rule = {"groups": {"train": ["p01", "p02"], "test": ["p03"]}, **split}
    with pytest.raises(ConfigError, match=message):
        find_samples(data_source(tmp_path, split=rule), seed=0)
