"""How a training runs here: data parallel on two devices trains like one device; mixed
precision computes the body in bfloat16 and keeps the head and the loss in float32."""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from flexseg import backend
from flexseg.cluster import Processes
from flexseg.commands._compose import load_config
from flexseg.errors import ConfigError
from flexseg.models import FlexUNet
from flexseg.runs import load_run
from flexseg.training import train
from flexseg.training.setup import Setup, resolve_distribution, resolve_jit_compile
from tests.helpers import TINY_RUN, make_flat_dataset

# TensorFlow's MirroredStrategy computes the loss on each device's half of the batch (the Dice
# term over that half) and averages it, where one device takes the whole batch at once: the
# losses agree to about 1e-3. JAX shards one program over the devices: equal to float noise.
TOLERANCE = {"jax": 1e-5, "tensorflow": 3e-3}


def test_two_devices_train_like_one_with_the_same_global_batch(tmp_path):
    if backend.name() == "torch":  # one device per process (tests/training/test_processes.py)
        cfg = load_config([*TINY_RUN, "trainer.distribution=data_parallel"])
        with pytest.raises(ConfigError, match="flexseg-launch --nproc <devices> train"):
            train(cfg, tmp_path / "run")
        assert not (tmp_path / "run").exists()
        return
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    result = subprocess.run(
        [sys.executable, "-m", "tests.data_parallel_worker", str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(report["devices"]) == 2, report["devices"]
    assert report["replicas"] == {"none": 1, "data_parallel": 2}
    one, two = report["histories"]["none"], report["histories"]["data_parallel"]
    assert len(one) == len(two) == 2
    for key in ("loss", "val_loss"):
        np.testing.assert_allclose(
            [e[key] for e in two], [e[key] for e in one], rtol=TOLERANCE[backend.name()]
        )
    assert one[0]["loss"] != one[1]["loss"]  # it trained


def test_auto_is_data_parallel_with_several_devices_or_processes(monkeypatch):
    monkeypatch.setattr(backend, "devices", lambda: ["cpu:0"])
    assert resolve_distribution("auto") == "none"
    two = Processes(rank=1, count=2, coordinator="node01:12345", source="SLURM")
    assert resolve_distribution("auto", two) == "data_parallel"
    with pytest.raises(ConfigError, match="distribution=none, but this is process 1 of 2"):
        resolve_distribution("none", two)
    monkeypatch.setattr(backend, "devices", lambda: ["cuda:0", "cuda:1"])
    expected = "none" if backend.name() == "torch" else "data_parallel"  # torch: a process each
    assert resolve_distribution("auto") == expected
    assert resolve_distribution("none") == "none"


def test_a_batch_that_does_not_split_over_the_devices_is_refused(monkeypatch, tmp_path):
    @contextlib.contextmanager
    def three_devices():
        yield 3

    monkeypatch.setattr(backend, "data_parallel", lambda processes: three_devices())
    cfg = load_config([*TINY_RUN, "trainer.distribution=data_parallel", "trainer.batch_size=8"])
    with pytest.raises(ConfigError, match=r"trainer.batch_size=8 .* multiple of 3"):
        train(cfg, tmp_path / "run")


def test_auto_settings_are_resolved_once_per_backend(monkeypatch):
    monkeypatch.setattr(backend, "devices", lambda: ["cpu:0"])
    monkeypatch.setattr(backend, "auto_precision", lambda: "mixed_bfloat16")
    setup = Setup.of(load_config(["trainer.precision=auto"]).trainer)
    assert setup == Setup("mixed_bfloat16", backend.name() == "jax", "none")
    assert resolve_jit_compile(False) is False and resolve_jit_compile(True) is True


def test_two_steps_under_mixed_bfloat16(tmp_path):
    make_flat_dataset(tmp_path / "data", slices=4, size=(32, 32))
    cfg = load_config(
        [
            f"dataset.root={tmp_path / 'data'}",
            *TINY_RUN,
            "dataset.split.groups={train:[p01,p02],test:[p03]}",
            "dataset.split.holdout_fraction=0.0",
            "trainer.epochs=1",
            "trainer.batch_size=4",
            "trainer.preview_images=0",
            "augment=none",
            "trainer.precision=mixed_bfloat16",
        ]
    )
    summary = train(cfg, tmp_path / "run")
    assert keras.mixed_precision.global_policy().name == "float32"  # restored afterwards
    with (tmp_path / "run" / "history.csv").open() as f:
        (row,) = list(csv.DictReader(f))
    assert math.isfinite(float(row["loss"])) and summary["epochs_run"] == 1
    assert summary["precision"] == "mixed_bfloat16"
    model = load_run(tmp_path / "run", "last").model  # loads, and predicts in float32
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
