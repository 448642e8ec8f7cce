"""Mixed precision: the body computes in bfloat16, the head and the loss stay float32."""

from __future__ import annotations

import csv
import math

import keras
import numpy as np
import pytest

from flexseg import backend
from flexseg.config import load_config
from flexseg.errors import ConfigError
from flexseg.models import FlexUNet
from flexseg.runs import load_run
from flexseg.training import train
from flexseg.training.train import check_trainer
from tests.helpers import TINY_RUN, make_flat_dataset

TINY = [
    *TINY_RUN,
    "dataset.split.groups={train:[p01,p02],test:[p03]}",
    "dataset.split.holdout_fraction=0.0",
    "trainer.epochs=1",
    "trainer.batch_size=4",
    "trainer.preview_images=0",
    "augment=none",
]


def test_two_steps_under_mixed_bfloat16(tmp_path):
    make_flat_dataset(tmp_path / "data", slices=4, size=(32, 32))
    cfg = load_config(
        [f"dataset.root={tmp_path / 'data'}", *TINY, "trainer.precision=mixed_bfloat16"]
    )
    cfg["_run_dir_"] = str(tmp_path / "run")
    summary = train(cfg)
    assert keras.mixed_precision.global_policy().name == "float32"  # restored afterwards
    with (tmp_path / "run" / "history.csv").open() as f:
        (row,) = list(csv.DictReader(f))
    assert math.isfinite(float(row["loss"])) and summary["epochs_run"] == 1
    assert summary["precision"] == "mixed_bfloat16"
    _, model, _ = load_run(tmp_path / "run", "last")  # loads, and predicts in float32
    assert model.get_layer("output").compute_dtype == "float32"


def test_the_body_computes_in_bfloat16_and_the_head_in_float32():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = FlexUNet(input_shape=(16, 16, 1), num_classes=2, base_filters=4, num_layers=2)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    convs = [layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.Conv2D)]
    assert all(layer.compute_dtype == "bfloat16" for layer in convs)
    assert all(w.dtype == "float32" for w in model.weights)  # variables stay float32
    output = model(np.zeros((1, 16, 16, 1), "float32"))
    assert keras.backend.standardize_dtype(output.dtype) == "float32"


def test_an_unknown_precision_is_refused():
    with pytest.raises(ConfigError, match="trainer.precision must be one of"):
        check_trainer(load_config(["trainer.precision=float8"])["trainer"])


def test_auto_precision_follows_the_measurements(monkeypatch):
    monkeypatch.setattr(backend, "gpu_compute_capability", lambda: (9, 0))  # H100
    assert backend.auto_precision() == "mixed_bfloat16"
    monkeypatch.setattr(backend, "gpu_compute_capability", lambda: (7, 5))  # T4: no bfloat16
    assert backend.auto_precision() == "mixed_float16"
    monkeypatch.setattr(backend, "gpu_compute_capability", lambda: None)
    monkeypatch.setattr(backend, "cpu_has_bf16_matrix_units", lambda: False)
    assert backend.auto_precision() == "float32"
    monkeypatch.setattr(backend, "cpu_has_bf16_matrix_units", lambda: True)
    expected = "float32" if backend.name() == "jax" else "mixed_bfloat16"
    assert backend.auto_precision() == expected
