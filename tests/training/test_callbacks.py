"""The callbacks a training config asks for, and checkpoints that survive a failed write."""

from __future__ import annotations

from types import SimpleNamespace

import keras
import pytest

from flexseg.commands._compose import load_config
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


class Rate:
    """A stand-in for the optimizer's learning-rate variable."""

    def assign(self, value):
        self.value = value


def test_a_cosine_decay_is_fitted_to_the_time_limit(monkeypatch):
    """A machine that fits 10 of 20 epochs in the time limit (a first epoch of 15 s, which
    compiles, then 5 s each, in 60 s) gets the whole decay in those 10."""
    clock = iter([0.0, 15.0, *range(20, 200, 5)])
    monkeypatch.setattr("flexseg.training.callbacks.time.monotonic", lambda: float(next(clock)))
    schedule = EpochSchedule(1e-3, 20, "cosine", 1, 30, 0.1, 0.0, minutes=1)
    untimed = EpochSchedule(1e-3, 20, "cosine", 1, 30, 0.1, 0.0)
    rate = Rate()
    schedule.set_model(SimpleNamespace(optimizer=SimpleNamespace(learning_rate=rate)))
    schedule.on_train_begin()
    rates = []
    for epoch in range(10):
        schedule.on_epoch_begin(epoch)
        rates.append(rate.value)
    assert schedule.length == 10
    assert rates == pytest.approx([untimed.rate(0), *(schedule.rate(e) for e in range(1, 10))])
    assert rates[1] == pytest.approx(1e-3) and rates[-1] < 0.04 * 1e-3  # down by the 10th
    assert untimed.rate(9) > 0.5 * 1e-3  # the untimed decay would be half-way at the cut
    assert rates[1:] == sorted(rates[1:], reverse=True)  # down all the way


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
