"""Experiment logs: TensorBoard event files (on by default) and MLflow runs (`logger=mlflow`).

Both are Keras callbacks that log what `HistoryFiles` keeps (every epoch's losses, metrics
and learning rate) and the newest epoch preview image; neither touches a backend framework:
TensorBoard's event files are written record by record with the `tensorboard` package's
protocol buffers and record format, so JAX and torch processes stay free of TensorFlow.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from pathlib import Path

import keras

from flexseg.errors import ConfigError

LEARNING_RATE = "learning_rate"


def epoch_values(model: keras.Model, logs: dict | None) -> dict:
    """What Keras logged at an epoch's end, and the learning rate the epoch used."""
    rate = float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
    return {**(logs or {}), LEARNING_RATE: rate}


class TensorBoardLog(keras.callbacks.Callback):
    """`<run_dir>/tensorboard/`: per epoch, every logged value (`train/loss`, `valid/loss`, ...,
    `learning_rate`) and the epoch's preview image. `tensorboard --logdir outputs` shows all
    runs side by side."""

    name = "tensorboard"

    def __init__(self, folder: str | Path, preview=None):
        super().__init__()
        self.folder = Path(folder)
        self.preview = preview  # the run's EpochPreview (its `path(epoch)`), or None
        self._writer = None
        self.seconds = 0.0  # time spent logging, for the record

    def on_train_begin(self, logs=None):
        from tensorboard.compat.proto.event_pb2 import Event

        self.folder.mkdir(parents=True, exist_ok=True)
        # One file per process, named as TensorBoard's own writer names them.
        name = f"events.out.tfevents.{time.time():.6f}.{socket.gethostname()}.{os.getpid()}"
        self._writer = open(self.folder / name, "ab")  # noqa: SIM115
        self._write(Event(wall_time=time.time(), file_version="brain.Event:2"))

    def _write(self, event) -> None:
        """One record of TensorFlow's record format: length, its checksum, data, checksum.

        Written here, in this thread, with TensorBoard's own checksum: its `tensorboard.summary`
        writers would import TensorFlow's summary machinery (and a thread of its own) whenever
        TensorFlow can be imported, which left TensorFlow processes stopped by a signal
        aborting at exit."""
        from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c

        data = event.SerializeToString()
        header = struct.pack("<Q", len(data))
        record = header + struct.pack("<I", masked_crc32c(header)) + data
        self._writer.write(record + struct.pack("<I", masked_crc32c(data)))
        self._writer.flush()

    def on_epoch_end(self, epoch, logs=None):
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.compat.proto.summary_pb2 import Summary

        start = time.perf_counter()
        values = epoch_values(self.model, logs)
        summary = Summary(
            value=[Summary.Value(tag=tag_of(k), simple_value=float(v)) for k, v in values.items()]
        )
        preview = self.preview.path(epoch) if self.preview else None
        if preview is not None and preview.is_file():
            import cv2

            height, width = cv2.imread(str(preview), cv2.IMREAD_UNCHANGED).shape[:2]
            image = Summary.Image(
                height=height, width=width, colorspace=3, encoded_image_string=preview.read_bytes()
            )
            summary.value.add(tag="preview", image=image)
        self._write(Event(wall_time=time.time(), step=epoch + 1, summary=summary))
        self.seconds += time.perf_counter() - start

    def on_train_end(self, logs=None):
        self.close()

    def close(self, failed: bool = False, summary: dict | None = None) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def tag_of(key: str) -> str:
    """`val_fg_dice` -> `valid/fg_dice`, `loss` -> `train/loss`: TensorBoard groups by the
    prefix, so each metric's training and validation curves sit side by side."""
    if key == LEARNING_RATE:
        return key
    return f"valid/{key[4:]}" if key.startswith("val_") else f"train/{key}"


class MLflowLog(keras.callbacks.Callback):
    """An MLflow run per training run: the config as parameters, every epoch's values as
    metrics, and at the end the run folder's files (config, history, plots, summary, the
    selected checkpoint) as artifacts.

    Args:
        run_dir: the training run's folder.
        params: flat `{key: value}` of the run's config.
        tracking_uri: where MLflow keeps runs; None: `mlruns/` in the working folder (an
            SQLite file, `mlruns/mlflow.db`, and the artifacts beside it).
        experiment: the MLflow experiment's name.
    """

    name = "mlflow"

    def __init__(
        self, run_dir: str | Path, params: dict, tracking_uri: str | None, experiment: str
    ):
        super().__init__()
        try:
            import mlflow
        except ImportError as error:
            raise ConfigError(
                "logger.mlflow=true needs MLflow, not installed: pip install 'flexseg[mlflow]'"
            ) from error
        self.mlflow = mlflow
        self.run_dir = Path(run_dir)
        self.config = params  # not `params`: Keras sets that attribute of a callback
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.seconds = 0.0

    def on_train_begin(self, logs=None):
        start = time.perf_counter()
        store = Path("mlruns").resolve()
        if self.tracking_uri is None:
            store.mkdir(exist_ok=True)
        self.mlflow.set_tracking_uri(self.tracking_uri or f"sqlite:///{store / 'mlflow.db'}")
        client = self.mlflow.MlflowClient()
        found = client.get_experiment_by_name(self.experiment)
        if found is None:  # artifacts beside the local store, not in the working folder
            location = None if self.tracking_uri else (store / "artifacts").as_uri()
            experiment_id = client.create_experiment(self.experiment, location)
        else:
            experiment_id = found.experiment_id
        self.mlflow.start_run(experiment_id=experiment_id, run_name=self.run_dir.name)
        self.mlflow.log_params({k: str(v)[:500] for k, v in self.config.items()})
        self.mlflow.set_tag("run_dir", str(self.run_dir.resolve()))
        self.seconds += time.perf_counter() - start

    def on_epoch_end(self, epoch, logs=None):
        start = time.perf_counter()
        values = epoch_values(self.model, logs)
        self.mlflow.log_metrics({k: float(v) for k, v in values.items()}, step=epoch + 1)
        self.seconds += time.perf_counter() - start

    def close(self, failed: bool = False, summary: dict | None = None) -> None:
        """Ends the MLflow run: with the run's files and summary, or marked failed."""
        if self.mlflow.active_run() is None:
            return
        if failed:
            self.mlflow.end_run(status="FAILED")
            return
        start = time.perf_counter()
        if summary and summary.get("best_value") is not None:
            self.mlflow.log_metric(f"best_{summary['monitor']}", summary["best_value"])
        for name in ("config.yaml", "history.csv", "train_summary.json"):
            if (self.run_dir / name).is_file():
                self.mlflow.log_artifact(str(self.run_dir / name))
        for path in sorted((self.run_dir / "plots").glob("*.png")):
            self.mlflow.log_artifact(str(path), artifact_path="plots")
        best = self.run_dir / "checkpoints" / "best.keras"
        if best.is_file():
            self.mlflow.log_artifact(str(best), artifact_path="checkpoints")
        self.mlflow.end_run()
        self.seconds += time.perf_counter() - start
