"""Preemption: a killed or signalled training resumes and finishes its planned epochs."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from flexseg.commands._compose import load_config
from flexseg.errors import ConfigError, DataError, PreemptedError
from flexseg.locks import LOCK
from flexseg.training import train
from flexseg.training.resume import RESUME_FILE, StopOnSignal, read_resume_state
from tests.helpers import TINY_RUN, TRAIN_VALID_SPLIT, make_flat_dataset

EPOCHS = 10  # long enough that a signal sent after epoch 1 lands mid-run
TINY = [
    *TINY_RUN,
    *TRAIN_VALID_SPLIT,
    f"trainer.epochs={EPOCHS}",
    "trainer.batch_size=2",
    "trainer.preview_images=0",
    "trainer.reduce_lr.patience=1",
    "trainer.early_stopping.patience=50",
    "augment=strong",
    "model.dropout_rate=0.2",  # the dropout generators' state must resume too
]


def start(data, run_dir, *extra) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "flexseg", "train", f"dataset.root={data}", *TINY, *extra,
         f"hydra.run.dir={run_dir}"],
        env={**os.environ},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip


def wait_for_epochs(run_dir, epochs: int, process: subprocess.Popen) -> int:
    """Waits until the run has a resume state of at least `epochs` epochs; returns its epoch."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[1][-2000:]
        try:
            state = read_resume_state(run_dir / "checkpoints")
        except (OSError, ValueError, EOFError):
            state = None  # caught between a write and its rename
        if state is not None and state[0]["epoch"] >= epochs:
            return state[0]["epoch"]
        time.sleep(0.05)
    raise AssertionError("training made no progress")


def history_epochs(run_dir) -> list[int]:
    with (run_dir / "history.csv").open() as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]


@pytest.fixture
def data(tmp_path):
    make_flat_dataset(tmp_path / "data", slices=12, size=(32, 32))
    return tmp_path / "data"


def stop(process: subprocess.Popen, run_dir, how: signal.Signals) -> tuple[int, str]:
    """Sends `how` once the run has finished an epoch more; returns the epoch kept and the
    process's output."""
    before = read_resume_state(run_dir / "checkpoints")
    saved = wait_for_epochs(run_dir, (before[0]["epoch"] if before else 0) + 1, process)
    process.send_signal(how)
    stdout, stderr = process.communicate(timeout=120)
    if how == signal.SIGTERM:  # a clean stop at the next batch boundary that says how to go on
        assert process.returncode == PreemptedError.exit_code, stderr[-2000:]
        assert "SIGTERM received: training stopped at epoch" in stderr
        assert "trainer.resume=auto" in stderr
    else:
        assert process.returncode == -signal.SIGKILL
    state, _ = read_resume_state(run_dir / "checkpoints")
    assert saved <= state["epoch"] < EPOCHS  # at most the epoch in progress was lost
    return state["epoch"], stdout + stderr


def test_a_stopped_run_resumes_and_finishes_its_epochs(data, tmp_path):
    """Stopped by SIGTERM, resumed, killed by SIGKILL, resumed again: all epochs, once each."""
    run_dir = tmp_path / "run"
    kept, _ = stop(start(data, run_dir), run_dir, signal.SIGTERM)
    kept_again, output = stop(start(data, run_dir, "trainer.resume=auto"), run_dir, signal.SIGKILL)
    assert f"resuming {run_dir} after epoch {kept} of {EPOCHS}" in output
    assert kept_again > kept

    final = start(data, run_dir, "trainer.resume=auto")
    stdout, stderr = final.communicate(timeout=300)
    assert final.returncode == 0, stderr[-2000:]
    assert f"resuming {run_dir} after epoch {kept_again} of {EPOCHS}" in stdout + stderr
    assert history_epochs(run_dir) == list(range(1, EPOCHS + 1))
    summary = json.loads((run_dir / "train_summary.json").read_text())
    assert summary["epochs_run"] == EPOCHS


def test_resume_restores_the_optimizer_and_the_callbacks(data, tmp_path):
    """A run resumed after epoch 2 ends exactly where the uninterrupted run ends."""
    base = [f"dataset.root={data}", *TINY, "augment=none", "trainer.epochs=3"]
    train(load_config(base), tmp_path / "whole")
    train(load_config([*base[:-1], "trainer.epochs=2"]), tmp_path / "part")
    # Continue the 2-epoch run to 3 epochs: only the planned epochs differ.
    (tmp_path / "part" / "config.yaml").write_text((tmp_path / "whole" / "config.yaml").read_text())
    train(load_config([*base, "trainer.resume=auto"]), tmp_path / "part")
    a = read_resume_state(tmp_path / "whole" / "checkpoints")
    b = read_resume_state(tmp_path / "part" / "checkpoints")
    assert a[0]["epoch"] == b[0]["epoch"] == 3
    assert a[0]["callbacks"].keys() == b[0]["callbacks"].keys()
    for key, state in a[0]["callbacks"].items():  # best score, reducer and early stopping state
        assert state == pytest.approx(b[0]["callbacks"][key]), key
    for key in a[1]:
        np.testing.assert_allclose(a[1][key], b[1][key], rtol=1e-4, atol=1e-5, err_msg=key)


def test_resuming_with_other_settings_is_refused(data, tmp_path):
    train(load_config([f"dataset.root={data}", *TINY, "trainer.epochs=1"]), tmp_path / "run")
    changed = load_config(
        [f"dataset.root={data}", *TINY, "trainer.epochs=1", "trainer.learning_rate=0.1",
         "trainer.resume=auto"]
    )  # fmt: skip
    with pytest.raises(ConfigError, match="trainer.learning_rate"):
        train(changed, tmp_path / "run")


def test_a_signal_is_passed_on_to_the_handler_installed_before_training(tmp_path):
    received = []
    before = signal.signal(signal.SIGUSR2, lambda signum, frame: received.append(signum))
    try:
        stop = StopOnSignal(tmp_path)
        stop.on_train_begin()
        stop.on_train_batch_end(0)  # nothing received: training goes on
        os.kill(os.getpid(), signal.SIGUSR2)
        assert received == []  # held until the batch boundary
        with pytest.raises(PreemptedError, match="SIGUSR2 received"):
            stop.on_train_batch_end(1)
        assert received == [signal.SIGUSR2]  # e.g. submitit's handler: requeue the job
    finally:
        signal.signal(signal.SIGUSR2, before)


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 cut", b"not a zip at all"])
def test_a_damaged_resume_state_is_one_error_naming_it(tmp_path, content):
    (tmp_path / RESUME_FILE).write_bytes(content)
    with pytest.raises(DataError, match=rf"the resume state .*{RESUME_FILE} is damaged"):
        read_resume_state(tmp_path)
    assert (tmp_path / RESUME_FILE).read_bytes() == content


def test_a_second_training_into_a_folder_in_use_is_refused(data, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK).write_text(f"{os.getppid()}\n")  # a process that runs
    with pytest.raises(DataError, match=f"in use: process {os.getppid()} is writing there"):
        train(load_config([f"dataset.root={data}", *TINY_RUN, *TRAIN_VALID_SPLIT]), run)
    assert sorted(p.name for p in run.iterdir()) == [LOCK]
