"""The config's sections as the data layer's settings: every field from the key of its name."""

from __future__ import annotations

import dataclasses

import pytest

from flexseg.config import DatasetConfig, TrainConfig
from flexseg.data import LoaderSettings, ReadSpec, Source, SplitRule
from flexseg.from_config import loader_of, read_spec, settings, source_of


def test_a_dataset_section_gives_its_source_and_split_rule():
    dataset = DatasetConfig(
        name="scans", root="/data", group_regex="^(p\\d+)_", mask_suffix="_mask",
        split={"groups": {"train": ["p1"], "test": ["p2"]}, "folds": 3, "fold": 2},
    )  # fmt: skip
    source = source_of(dataset)
    assert source == Source(
        root="/data",
        group_regex="^(p\\d+)_",
        mask_suffix="_mask",
        split=SplitRule(groups={"train": ["p1"], "test": ["p2"]}, folds=3, fold=2),
    )
    assert source.split.fractions is None  # the schema's empty {}: not given


def test_the_schema_defaults_are_the_data_layers():
    """A default is written once: the schema takes the data layer's (DatasetConfig's
    images_dir is Source's), so a section left alone gives the settings' defaults."""
    dataset = DatasetConfig(name="scans", root="/data")
    assert source_of(dataset) == Source(root="/data")
    assert read_spec(dataset) == ReadSpec()
    assert read_spec(dataset, 16) == ReadSpec(size_multiple=16)


def test_read_spec_takes_sizes_as_tuples():
    dataset = DatasetConfig(
        name="s", root="r", image_size=[96, 64], size_policy="resize", clip_percentiles=[1, 99]
    )
    spec = read_spec(dataset, 8)
    assert (spec.image_size, spec.clip_percentiles, spec.size_multiple) == ((96, 64), (1, 99), 8)


def test_the_loader_settings_come_from_trainer_dataset_and_augment():
    cfg = TrainConfig(
        dataset=DatasetConfig(name="s", root="r", cache="disk", stand_in_channel=1, stand_in_p=0.2),
        trainer={"batch_size": 4, "workers": 0, "foreground_fraction": 0.5},
        augment={"transforms": [{"name": "HorizontalFlip", "p": 0.5}]},
        seed=7,
    )
    loader = loader_of(cfg)
    assert dataclasses.asdict(loader) | {"augment": None} == dataclasses.asdict(
        LoaderSettings(
            batch_size=4, seed=7, workers=0, prefetch=2, drop_remainder=True,
            foreground_fraction=0.5, small_lesion_pixels=None, small_lesion_repeats=3,
            cache="disk", cache_dir=None, stand_in_channel=1, stand_in_p=0.2, augment=None,
        )
    )  # fmt: skip
    assert loader.augment == [{"name": "HorizontalFlip", "p": 0.5}]


def test_a_setting_no_section_gives_is_an_error():
    @dataclasses.dataclass
    class Wanted:
        root: str
        not_a_key: int

    with pytest.raises(TypeError, match=r"no config section gives Wanted\.not_a_key"):
        settings(Wanted, DatasetConfig(name="s", root="r"))
