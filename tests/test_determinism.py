"""`seed` seeds everything: the same seed on the same backend gives the same run."""

from __future__ import annotations

import csv
import random

import keras
import numpy as np
import pytest

from flexseg import backend
from flexseg.config import load_config
from flexseg.training import train
from tests.helpers import TINY_RUN, TRAIN_VALID_SPLIT, make_flat_dataset, write_png

RUN = [
    *TINY_RUN,
    *TRAIN_VALID_SPLIT,
    "trainer.epochs=2",
    "trainer.batch_size=2",
    "trainer.preview_images=0",
    "trainer.workers=2",  # loader threads augment in parallel
    "trainer.foreground_fraction=0.5",  # a random draw of empty slices every epoch
    "model.dropout_rate=0.2",
    "augment=strong",
]


def history(data, run_dir, seed: int) -> list[dict]:
    cfg = load_config([*RUN, f"dataset.root={data}", f"seed={seed}"])
    cfg["_run_dir_"] = str(run_dir)
    train(cfg)
    with (run_dir / "history.csv").open() as f:
        return list(csv.DictReader(f))


@pytest.fixture
def data(tmp_path):
    make_flat_dataset(tmp_path / "data", slices=6, size=(32, 32))
    for name in ("p01_z004", "p01_z005", "p02_z005"):  # slices without foreground
        write_png(tmp_path / "data" / "masks" / f"{name}.png", np.zeros((32, 32), np.uint8))
    return tmp_path / "data"


def test_the_same_seed_gives_identical_metrics_and_another_seed_does_not(data, tmp_path):
    first = history(data, tmp_path / "a", seed=3)
    second = history(data, tmp_path / "b", seed=3)
    assert first == second  # every metric of every epoch, as written
    other = history(data, tmp_path / "c", seed=4)
    assert [r["loss"] for r in other] != [r["loss"] for r in first]


def draws(seed: int) -> tuple:
    backend.set_random_seed(seed)
    layer = keras.layers.Dense(3)
    layer.build((None, 4))
    return (
        random.random(),
        float(np.random.rand()),
        keras.ops.convert_to_numpy(keras.random.uniform((2,))).tolist(),
        keras.ops.convert_to_numpy(layer.kernel).tolist(),
    )


def test_set_random_seed_repeats_python_numpy_and_keras_draws():
    first, second, other = draws(5), draws(5), draws(6)
    assert first == second
    assert all(a != b for a, b in zip(first, other, strict=True))
