"""train(cfg, run_dir): the files a run writes, its seed, and the stops that keep its work."""

from __future__ import annotations

import csv
import importlib

import keras
import numpy as np
import pytest

from flexseg.commands._compose import load_config
from flexseg.config import as_dict, read_config
from flexseg.errors import TrainingError
from flexseg.runs import load_run
from flexseg.training import train
from tests.conftest import TRAINED_RUN
from tests.helpers import TINY_RUN, TRAIN_VALID_SPLIT, make_flat_dataset, write_png


def test_training_writes_every_file(trained):
    _, run_dir, summary = trained
    assert summary["epochs_run"] == 2 and summary["samples"] == {"train": 8, "valid": 4, "test": 6}
    for name in (
        "config.yaml",
        "checkpoints/best.keras",
        "checkpoints/last.keras",
        "history.csv",
        "train_losses.csv",
        "train_metrics.csv",
        "train_summary.json",
        "plots/loss.png",
        "plots/metrics.png",
        "previews/epoch_001.png",
        "previews/epoch_002.png",
    ):
        assert (run_dir / name).is_file(), name
    with (run_dir / "history.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert {"loss", "val_loss", "fg_dice", "val_fg_dice", "learning_rate"} <= set(rows[0])
    with (run_dir / "train_losses.csv").open() as f:
        assert next(csv.reader(f)) == ["epoch", "loss", "val_loss"]
    assert not list(run_dir.rglob(".*.tmp*"))  # atomic writes leave no temporaries


def test_the_run_keeps_its_whole_config(trained):
    root, run_dir, _ = trained
    saved = read_config(run_dir / "config.yaml")
    assert saved == as_dict(load_config([f"dataset.root={root}", *TRAINED_RUN]))
    assert saved["model"]["input_shape"] == [32, 32, 1] and saved["loss"]["name"] == "ce_dice"


def test_a_second_run_never_writes_into_the_first(trained):
    root, run_dir, _ = trained
    with pytest.raises(ValueError, match="already holds a training run"):
        train(load_config([f"dataset.root={root}", *TRAINED_RUN]), run_dir)


DETERMINISM_RUN = [
    *TINY_RUN,
    *TRAIN_VALID_SPLIT,
    "trainer.epochs=2",
    "trainer.batch_size=2",
    "trainer.preview_images=0",
    "trainer.workers=2",  # two loader processes augment in parallel
    "trainer.foreground_fraction=0.5",  # a random draw of empty slices every epoch
    "model.dropout_rate=0.2",
    "augment=strong",
]


def history(cfg, run_dir) -> list[dict]:
    train(cfg, run_dir)
    with (run_dir / "history.csv").open() as f:
        return list(csv.DictReader(f))


def test_the_same_seed_gives_identical_metrics_and_another_seed_does_not(tmp_path):
    """The second run's config is a plain dict written out, as a notebook user would."""
    data = tmp_path / "data"
    make_flat_dataset(data, slices=6, size=(32, 32))
    for name in ("p01_z004", "p01_z005", "p02_z005"):  # slices without foreground
        write_png(data / "masks" / f"{name}.png", np.zeros((32, 32), np.uint8))
    composed = load_config([*DETERMINISM_RUN, f"dataset.root={data}", "seed=3"])
    first = history(composed, tmp_path / "a")
    in_process = as_dict(composed)
    in_process["trainer"]["workers"] = 0  # the same batches without loader processes
    second = history(in_process, tmp_path / "b")
    assert first == second  # every metric of every epoch, as written
    other = history(
        load_config([*DETERMINISM_RUN, f"dataset.root={data}", "seed=4"]), tmp_path / "c"
    )
    assert [r["loss"] for r in other] != [r["loss"] for r in first]


def test_a_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(tmp_path):
    """One epoch of training that goes well, then an epoch whose loss becomes NaN."""
    make_flat_dataset(tmp_path / "data", slices=4, size=(30, 28))
    overrides = [
        "dataset.split.groups={train:[p01,p02],test:[p03]}",
        "dataset.split.holdout_fraction=0.0",
        "trainer.epochs=3",
        "trainer.batch_size=2",
        "trainer.preview_images=0",
        "trainer.schedule=step",
        "trainer.step_epochs=1",
        "trainer.step_gamma=1e30",
        "trainer.reduce_lr.enabled=false",
        "trainer.early_stopping.enabled=false",
        "augment=none",
    ]
    run_dir = tmp_path / "run"
    cfg = load_config([f"dataset.root={tmp_path / 'data'}", *TINY_RUN, *overrides])
    with pytest.raises(TrainingError) as info:
        train(cfg, run_dir)
    message = str(info.value)
    assert "the training loss became" in message and "at epoch 2, batch" in message
    assert f"{run_dir / 'checkpoints' / 'last.keras'} (epoch 1)" in message
    for weight in load_run(run_dir, "last").model.weights:
        assert np.isfinite(keras.ops.convert_to_numpy(weight)).all()


def test_a_file_damaged_during_training_stops_it_by_name(tmp_path, monkeypatch):
    """The loader reads every file the way the check does: a file cut short after the check
    stops training with its name, and the last finished epoch's checkpoint stays."""
    training_module = importlib.import_module("flexseg.training.train")  # not the function

    make_flat_dataset(tmp_path / "data", slices=4, size=(32, 32))
    victim = tmp_path / "data" / "images" / "p01_z001.png"

    class CutAFile(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            victim.write_bytes(victim.read_bytes()[:60])

    build = training_module.build_callbacks
    monkeypatch.setattr(training_module, "build_callbacks", lambda *a: [*build(*a), CutAFile()])
    cfg = load_config(
        [f"dataset.root={tmp_path / 'data'}", *TINY_RUN, *TRAIN_VALID_SPLIT, "dataset.cache=none",
         "trainer.epochs=3", "trainer.batch_size=2", "trainer.preview_images=0", "augment=none"]
    )  # fmt: skip
    with pytest.raises(TrainingError) as info:
        train(cfg, tmp_path / "run")
    message = str(info.value)
    assert f"cannot read image {victim}: it is truncated" in message
    assert "(read in epoch 2); training stopped" in message
    assert (
        f"the last good checkpoint is {tmp_path / 'run' / 'checkpoints' / 'last.keras'}" in message
    )
    assert (tmp_path / "run" / "checkpoints" / "last.keras").is_file()
