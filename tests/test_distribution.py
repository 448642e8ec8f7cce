"""trainer.distribution: data parallel on two devices trains like one device."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from flexseg import backend
from flexseg.config import load_config
from flexseg.errors import ConfigError
from flexseg.training import train
from flexseg.training.train import check_trainer, resolve_distribution
from tests.helpers import TINY_RUN

# TensorFlow's MirroredStrategy computes the loss on each device's half of the batch (the Dice
# term over that half) and averages it, where one device takes the whole batch at once: the
# losses agree to about 1e-3. JAX shards one program over the devices: equal to float noise.
TOLERANCE = {"jax": 1e-5, "tensorflow": 3e-3}


def test_two_devices_train_like_one_with_the_same_global_batch(tmp_path):
    if backend.name() == "torch":  # Keras' torch trainer cannot be wrapped in DDP: refused
        cfg = load_config([*TINY_RUN, "trainer.distribution=data_parallel"])
        cfg["_run_dir_"] = str(tmp_path / "run")
        with pytest.raises(ConfigError, match="KERAS_BACKEND=jax or tensorflow"):
            train(cfg)
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


def test_auto_is_data_parallel_only_with_several_devices(monkeypatch):
    monkeypatch.setattr(backend, "devices", lambda: ["cpu:0"])
    assert resolve_distribution("auto") == "none"
    monkeypatch.setattr(backend, "devices", lambda: ["cuda:0", "cuda:1"])
    expected = "none" if backend.name() == "torch" else "data_parallel"
    assert resolve_distribution("auto") == expected
    assert resolve_distribution("none") == "none"


def test_a_batch_that_does_not_split_over_the_devices_is_refused(monkeypatch, tmp_path):
    @contextlib.contextmanager
    def three_devices():
        yield 3

    monkeypatch.setattr(backend, "data_parallel", three_devices)
    cfg = load_config([*TINY_RUN, "trainer.distribution=data_parallel", "trainer.batch_size=8"])
    cfg["_run_dir_"] = str(tmp_path / "run")
    with pytest.raises(ConfigError, match=r"trainer.batch_size=8 .* multiple of 3"):
        train(cfg)


def test_an_unknown_distribution_is_refused():
    with pytest.raises(ConfigError, match="trainer.distribution must be one of"):
        check_trainer(load_config(["trainer.distribution=ddp"])["trainer"])
