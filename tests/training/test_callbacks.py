"""The callbacks a training config asks for, and checkpoints that survive a failed write."""

from __future__ import annotations

import keras
import pytest

from flexseg.config.compose import load_config
from flexseg.runs import load_run
from flexseg.training.callbacks import EpochSchedule, atomic_save, build_callbacks


def test_configured_patience_reaches_keras(tmp_path):
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


def test_a_schedule_replaces_the_plateau_reducer(tmp_path):
    cfg = load_config(["trainer.schedule=cosine", "trainer.reduce_lr.enabled=false"])
    callbacks = build_callbacks(cfg, tmp_path, {})
    schedule = next(c for c in callbacks if isinstance(c, EpochSchedule))
    assert not any(isinstance(c, keras.callbacks.ReduceLROnPlateau) for c in callbacks)
    assert schedule.rate(0) == pytest.approx(1e-3) and schedule.rate(49) < 1e-5


def test_a_failed_write_leaves_the_previous_checkpoint_intact(trained, tmp_path, monkeypatch):
    _, run_dir, _ = trained
    model = load_run(run_dir, "last").model
    path = atomic_save(model, tmp_path / "last.keras")
    before = path.read_bytes()

    def disk_full(target, *args, **kwargs):
        with open(target, "wb") as f:
            f.write(before[: len(before) // 2])  # half a file, then the disk is full
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(model, "save", disk_full)
    with pytest.raises(OSError, match="No space left"):
        atomic_save(model, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.keras"]  # no half-written file left
    keras.saving.load_model(path, compile=False)
