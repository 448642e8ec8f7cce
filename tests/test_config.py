"""Every option of every config group composes, validates and builds."""

from __future__ import annotations

from pathlib import Path

import pytest

from flexseg.config import CONF_DIR, instantiate, load_config
from flexseg.data.build import colormap_of, read_spec_of
from flexseg.data.transforms import build_augmentation
from flexseg.errors import ConfigError
from flexseg.losses import build_loss
from flexseg.training.train import build_callbacks, build_optimizer

GROUPS = ("model", "dataset", "augment", "loss", "trainer")
NEEDS_ROOT = {"lgg"}


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONF_DIR) / group).glob("*.yaml"))


@pytest.mark.parametrize(
    ("group", "option"),
    [(g, o) for g in GROUPS for o in options(g)]
    + [("experiment", o) for o in options("experiment")],
)
def test_every_option_composes_and_builds(group, option, tmp_path):
    overrides = [f"{group}={option}"]
    if option in NEEDS_ROOT:
        overrides.append(f"dataset.root={tmp_path}")
    if group == "experiment" and option in ("lgg", "reference_t2"):
        overrides.append(f"dataset.root={tmp_path}")
    cfg = load_config(overrides)
    if group == "model":
        # A small input keeps building cheap; every other value is the option's own.
        model = instantiate(cfg["model"], input_shape=[64, 64, cfg["dataset"]["channels"]])
        assert model.count_params() > 0
    read_spec_of(cfg["dataset"], 2 ** (cfg["model"]["num_layers"] - 1))
    cmap = colormap_of(cfg["dataset"])
    assert cmap is None or cmap.num_classes == cfg["dataset"]["num_classes"]
    build_augmentation(cfg["augment"]["transforms"])
    build_loss(cfg["loss"], cfg["dataset"]["num_classes"])
    build_optimizer(cfg["trainer"])


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("trainer.reduer_patience=3", "reduer_patience"),  # the reference's silent typo
        ("+trainer.reduce_lr.patiense=3", "trainer.reduce_lr.patiense"),
        ("+seeds=1", "seeds"),
        ("trainer.epochs=many", "trainer.epochs"),
        ("model.base_filter=8", "base_filter"),
        ("dataset=nope", "dataset/nope"),
    ],
)
def test_unknown_keys_and_wrong_types_are_errors_that_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config([override])


def test_required_values_are_named():
    with pytest.raises(ConfigError, match="dataset.root"):
        load_config(["dataset=lgg"])


def test_shared_values_are_interpolated():
    cfg = load_config(["dataset.num_classes=2", "dataset.image_size=[96,64]"])
    assert cfg["model"]["num_classes"] == 2
    assert cfg["model"]["input_shape"] == [96, 64, 1]


def test_configured_patience_reaches_keras(tmp_path):
    import keras

    cfg = load_config(
        [
            "trainer.reduce_lr.patience=7",
            "trainer.reduce_lr.factor=0.4",
            "trainer.early_stopping.patience=11",
        ]
    )
    callbacks = build_callbacks(cfg, tmp_path, {})
    reducer = next(c for c in callbacks if isinstance(c, keras.callbacks.ReduceLROnPlateau))
    stopper = next(c for c in callbacks if isinstance(c, keras.callbacks.EarlyStopping))
    assert (reducer.patience, reducer.factor, stopper.patience) == (7, 0.4, 11)
    assert reducer.monitor == "fg_dice" and reducer.mode == "max"  # no valid split here


def test_schedule_and_plateau_reducer_exclude_each_other(tmp_path):
    cfg = load_config(["trainer.schedule=cosine"])
    with pytest.raises(ConfigError, match="trainer.reduce_lr.enabled=false"):
        build_callbacks(cfg, tmp_path, {})
