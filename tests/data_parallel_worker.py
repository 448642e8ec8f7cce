"""Trains one tiny run on one device and again data parallel on two; prints both histories.

Run in a fresh process (the device count is fixed when the backend starts):
    XLA_FLAGS=--xla_force_host_platform_device_count=2 KERAS_BACKEND=jax \
        python -m tests.data_parallel_worker <folder>
With TensorFlow the process splits its CPU into two logical devices itself.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from pathlib import Path

if os.environ.get("KERAS_BACKEND") == "tensorflow":
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

from flexseg.runtime import prepare_process  # noqa: E402

prepare_process()

from flexseg import backend  # noqa: E402
from flexseg.commands._compose import load_config  # noqa: E402
from flexseg.training import train  # noqa: E402
from tests.helpers import TINY_RUN, TRAIN_VALID_SPLIT, make_flat_dataset  # noqa: E402

RUN = [
    *TINY_RUN,
    *TRAIN_VALID_SPLIT,
    "trainer.epochs=2",
    "trainer.batch_size=4",
    "trainer.preview_images=0",
    "augment=none",
]


def main(folder: Path) -> None:
    make_flat_dataset(folder / "data", slices=6, size=(32, 32))
    histories, replicas = {}, {}
    for mode in ("none", "data_parallel"):
        cfg = load_config([*RUN, f"dataset.root={folder / 'data'}", f"trainer.distribution={mode}"])
        replicas[mode] = train(cfg, folder / mode)["replicas"]
        with (folder / mode / "history.csv").open() as f:
            histories[mode] = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]
    print(json.dumps({"devices": backend.devices(), "replicas": replicas, "histories": histories}))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
