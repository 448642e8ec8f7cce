"""Experiment logs: TensorBoard by default, MLflow with logger=mlflow."""

from __future__ import annotations

import re

import pytest
from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
from tensorboard.compat.proto.event_pb2 import Event

import flexseg.training.plan as plan_module
from flexseg.commands._compose import load_config
from flexseg.errors import PreflightError
from flexseg.training import train
from flexseg.training.callbacks import plain_lines
from flexseg.training.logs import tag_of
from tests.helpers import TINY_RUN, TRAIN_VALID_SPLIT, make_flat_dataset


def events(folder):
    (path,) = folder.glob("events.out.tfevents.*")
    read = (Event.FromString(record) for record in RawEventFileLoader(str(path)).Load())
    return [e for e in read if e.HasField("summary")]


def test_tensorboard_logs_every_epoch_by_default(trained):
    """The trained run (2 epochs, the default logger): each epoch's losses, metrics and
    learning rate as scalars, and its preview as an image."""
    _, run_dir, summary = trained
    logged = events(run_dir / "tensorboard")
    assert [e.step for e in logged] == [1, 2]
    tags = {v.tag for v in logged[-1].summary.value}
    assert {"train/loss", "valid/loss", "train/fg_dice", "valid/fg_dice", "learning_rate"} <= tags
    (image,) = [v.image for v in logged[-1].summary.value if v.tag == "preview"]
    assert image.encoded_image_string == (run_dir / "previews" / "epoch_002.png").read_bytes()
    loss = next(v.simple_value for v in logged[0].summary.value if v.tag == "train/loss")
    history = (run_dir / "history.csv").read_text().splitlines()
    column = history[0].split(",").index("loss")
    assert loss == pytest.approx(float(history[1].split(",")[column]), rel=1e-6)
    assert list(summary["logging_seconds"]) == ["tensorboard"]
    assert 0 < summary["logging_seconds"]["tensorboard"] < summary["train_seconds"]


def test_tags_group_training_and_validation_values():
    assert [tag_of(k) for k in ("loss", "val_fg_dice", "learning_rate")] == [
        "train/loss", "valid/fg_dice", "learning_rate"
    ]  # fmt: skip


@pytest.mark.once
def test_mlflow_keeps_params_metrics_and_files(tmp_path, monkeypatch):
    from mlflow import MlflowClient

    make_flat_dataset(tmp_path / "data", slices=2, size=(32, 32))
    monkeypatch.chdir(tmp_path)  # the local store goes into the working folder
    cfg = load_config(
        [f"dataset.root={tmp_path / 'data'}", *TINY_RUN, *TRAIN_VALID_SPLIT, "logger=mlflow",
         "trainer.epochs=2", "trainer.batch_size=2", "trainer.preview_images=0", "augment=none"]
    )  # fmt: skip
    summary = train(cfg, tmp_path / "run")
    assert (tmp_path / "mlruns" / "mlflow.db").is_file()
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("ms_lesjak").experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    assert run.data.params["trainer.epochs"] == "2" and run.data.params["logger.name"] == "mlflow"
    history = client.get_metric_history(run.info.run_id, "val_fg_dice")
    assert [m.step for m in history] == [1, 2]
    assert run.data.metrics["best_val_fg_dice"] == pytest.approx(summary["best_value"])
    files = {f.path for f in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "history.csv", "train_summary.json", "checkpoints"} <= files
    stored = tmp_path / "mlruns" / "artifacts" / run.info.run_id / "artifacts"
    assert (stored / "checkpoints" / "best.keras").is_file()


def test_a_missing_logger_package_is_a_plan_problem(tmp_path, monkeypatch):
    make_flat_dataset(tmp_path / "data", slices=2, size=(32, 32))
    cfg = load_config([f"dataset.root={tmp_path / 'data'}", *TINY_RUN, *TRAIN_VALID_SPLIT,
                       "logger=mlflow"])  # fmt: skip
    real = plan_module.importlib.util.find_spec
    monkeypatch.setattr(
        plan_module.importlib.util, "find_spec", lambda n: None if n == "mlflow" else real(n)
    )
    with pytest.raises(PreflightError, match=r"logger.mlflow=true needs mlflow, not installed"):
        train(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_a_training_whose_stdout_is_no_terminal_writes_one_plain_line_an_epoch(tmp_path, capfd):
    """As in a SLURM log or `> train.log`: no progress bar, no carriage return or colour code,
    one line per epoch with its seconds and every logged value."""
    make_flat_dataset(tmp_path / "data", slices=4, size=(32, 32))
    cfg = load_config(
        [f"dataset.root={tmp_path / 'data'}", *TINY_RUN, *TRAIN_VALID_SPLIT, "trainer.verbose=1",
         "trainer.epochs=3", "trainer.early_stopping.enabled=false", "trainer.preview_images=0",
         "logger=none"]
    )  # fmt: skip
    capfd.readouterr()
    train(cfg, tmp_path / "run")
    out = capfd.readouterr().out
    assert "\r" not in out and "\x1b" not in out and "\b" not in out
    lines = [line for line in out.splitlines() if line.startswith("epoch ")]
    assert [line.split()[1] for line in lines] == ["1/3", "2/3", "3/3"]
    for line in lines:
        assert re.match(r"^epoch \d/3 \d+\.\d s: ", line), line
        for name in ("loss", "fg_dice", "val_loss", "val_fg_dice", "learning_rate"):
            assert re.search(rf"(: |, ){name} [-\d.e]+(,|$)", line), (name, line)


class _Stream:
    def __init__(self, tty: bool):
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_the_bar_stays_on_a_terminal_and_verbose_chooses():
    terminal, file = _Stream(True), _Stream(False)
    assert not plain_lines(1, terminal)  # Keras' bar
    assert plain_lines(1, file)
    assert plain_lines(2, terminal) and plain_lines(2, file)
    assert not plain_lines(0, terminal) and not plain_lines(0, file)  # silent
