"""3D training: a FlexUNet of spatial_dims=3 on patches of tiny volumes, on every backend."""

from __future__ import annotations

import csv
import subprocess
import sys

import numpy as np
import pytest

from flexseg.commands._compose import load_config
from flexseg.errors import ConfigError
from flexseg.training import make_plan, train
from flexseg.training.resume import read_resume_state
from tests.helpers import make_volume_dataset
from tests.training.test_resume import wait_for_epochs

RUN_3D = [
    "dataset=ms_lesjak_volumes",
    "dataset.cache=none",
    "dataset.patch_size=[16,16,8]",
    "dataset.split.groups={train:[p01,p02,p03],valid:[p04],test:[]}",
    "dataset.split.holdout_fraction=0.0",
    "model.spatial_dims=3",
    "model.base_filters=4",
    "model.num_layers=3",
    "model.normalization=instance",
    "model.pool_sizes=[[2,2,1],2]",
    "trainer.epochs=2",
    "trainer.batch_size=2",
    "trainer.patches_per_epoch=4",
    "trainer.preview_images=2",
    "trainer.verbose=0",
    "trainer.workers=0",
    "augment=none",
]


@pytest.fixture(scope="module")
def volumes(tmp_path_factory):
    root = tmp_path_factory.mktemp("volumes")
    make_volume_dataset(root, cases=("p01", "p02", "p03", "p04"), shape=(20, 18, 12))
    return root


def history(overrides, run_dir) -> list[dict]:
    train(load_config(overrides), run_dir)
    with (run_dir / "history.csv").open() as f:
        return list(csv.DictReader(f))


def test_a_tiny_3d_run_trains_on_patches_the_same_in_any_process(volumes, tmp_path):
    run = [*RUN_3D, f"dataset.root={volumes}"]
    cfg = load_config(run)
    assert cfg.model.input_shape == [16, 16, 8, 2]
    text = make_plan(cfg).describe()
    assert "input       [16, 16, 8, 2] (x, y, z, channels), 2 classes" in text
    assert "GFLOP per patch (forward)" in text
    assert "train       3 cases, 100% with foreground" in text
    first = history(run, tmp_path / "a")
    assert len(first) == 2 and all(np.isfinite(float(r["loss"])) for r in first)
    assert (tmp_path / "a" / "previews" / "epoch_002.png").is_file()
    # the same seed, the loader in a worker process: the same patches, the same metrics
    assert history([*run, "trainer.workers=1"], tmp_path / "b") == first
    # augmentation of volumes: albumentations' 3D transforms on the patches
    augmented = [*run, "augment=light", "trainer.epochs=1"]  # 2D transforms on each plane
    assert history(augmented, tmp_path / "d")[0]["loss"] != first[0]["loss"]
    augmented = [*run, "augment.transforms=[{name: CoarseDropout3D, p: 1.0}]", "trainer.epochs=1"]
    assert history(augmented, tmp_path / "c")[0]["loss"] != first[0]["loss"]


@pytest.mark.once
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.spatial_dims=3", "dataset.patch_size=null"], "model.spatial_dims=3 and dataset"),
        (["model.spatial_dims=2"], "model.spatial_dims=2 and dataset.patch_size=[16, 16, 8]"),
        (["dataset.context_slices=1"], "dataset.context_slices=1"),
        (["dataset.patch_size=[16,16]"], "dataset.patch_size"),
        (["trainer.foreground_patches=2"], "trainer.foreground_patches"),
        (["dataset.split.holdout_fraction=0.15"], "dataset.split.holdout_fraction=0.15"),
    ],
)
def test_3d_settings_that_disagree_are_named(volumes, overrides, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_config([*RUN_3D, f"dataset.root={volumes}", *overrides])


def test_a_3d_run_killed_mid_training_resumes_to_the_uninterrupted_weights(volumes, tmp_path):
    run = [
        *RUN_3D, f"dataset.root={volumes}", "trainer.epochs=4", "trainer.patches_per_epoch=16",
        "augment=volumes_3d", "model.dropout_rate=0.2",
    ]  # fmt: skip
    train(load_config(run), tmp_path / "whole")
    killed = tmp_path / "killed"
    process = subprocess.Popen(
        [sys.executable, "-m", "flexseg", "train", *run, f"hydra.run.dir={killed}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    saved = wait_for_epochs(killed, 1, process)
    process.kill()
    process.communicate(timeout=60)
    kept = read_resume_state(killed / "checkpoints")[0]["epoch"]
    assert saved <= kept < 4  # killed before the end
    train(load_config([*run, "trainer.resume=auto"]), killed)
    a = read_resume_state(tmp_path / "whole" / "checkpoints")
    b = read_resume_state(killed / "checkpoints")
    assert a[0]["epoch"] == b[0]["epoch"] == 4
    for key in a[1]:
        np.testing.assert_allclose(a[1][key], b[1][key], rtol=1e-4, atol=1e-5, err_msg=key)
