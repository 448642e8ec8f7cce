"""Training over several processes: two CPU processes of this machine stand in for two GPUs.

torch (gloo) and JAX (its distributed runtime, gloo collectives) train data parallel over
processes; TensorFlow refuses. Each process is started as a user starts it: `python -m flexseg
train` with the variables `flexseg-launch` sets.
"""

from __future__ import annotations

import csv
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from flexseg import backend
from flexseg.commands._compose import load_config
from flexseg.commands.launch import free_port, process_env
from flexseg.training import train
from tests.helpers import TINY_RUN, TRAIN_VALID_SPLIT, make_flat_dataset

# A global batch of 8 over 2 processes. Cross-entropy and no normalization layer: the loss of
# a batch is then the mean of its halves' losses, and the step equals one process's step up to
# float rounding. (A Dice term is computed per process over its half of the batch, and batch
# normalization normalizes each half apart: see docs/performance.md for how far those differ.)
RUN = [
    *TINY_RUN,
    *TRAIN_VALID_SPLIT,
    "trainer.batch_size=8",
    "trainer.preview_images=1",
    "augment=light",
    "loss=ce",
    "model.normalization=none",
    "model.num_layers=2",  # few variables: JAX checks each new one across processes
]


def start(tmp_path, rank: int, count: int, port: int, *overrides: str) -> subprocess.Popen:
    """Process `rank` of a training of `count` processes, as flexseg-launch starts it."""
    return subprocess.Popen(
        [sys.executable, "-m", "flexseg", "train", *overrides],
        cwd=tmp_path, env=process_env(rank, count, port),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def history(run_dir) -> list[dict[str, float]]:
    with (run_dir / "history.csv").open() as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def test_two_processes_train_like_one_with_the_same_global_batch(tmp_path):
    make_flat_dataset(tmp_path / "data", slices=10, size=(32, 32))
    run = [*RUN, f"dataset.root={tmp_path / 'data'}", "trainer.epochs=2"]
    if backend.name() == "tensorflow":  # refused before anything is made
        overrides = [*run, f"hydra.run.dir={tmp_path / 'run'}"]
        processes = [start(tmp_path, rank, 2, free_port(), *overrides) for rank in range(2)]
        for process in processes:
            _, error = process.communicate(timeout=120)
            assert process.returncode == 2, error
            assert "keras-team/keras issue 20585" in error and "Traceback" not in error
        assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]
        return
    one = train(load_config(run), tmp_path / "one")
    result = subprocess.run(
        [sys.executable, "-m", "flexseg.commands.launch", "--nproc", "2", "train", *run,
         f"hydra.run.dir={tmp_path / 'two'}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "the 2 processes hold the same weights after training" in result.stdout
    a, b = history(tmp_path / "one"), history(tmp_path / "two")
    assert len(a) == len(b) == 2
    for key in ("loss", "val_loss", "fg_dice", "val_fg_dice", "pixel_accuracy"):
        np.testing.assert_allclose([e[key] for e in b], [e[key] for e in a], rtol=1e-5)
    assert a[0]["loss"] != a[1]["loss"]  # it trained
    # One set of run files, written by process 0; nothing anywhere else.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "one", "two"]
    names = {p.relative_to(tmp_path / "two").as_posix() for p in (tmp_path / "two").rglob("*")}
    assert {"config.yaml", "history.csv", "checkpoints/best.keras", "previews"} <= names
    assert len(list((tmp_path / "two" / "tensorboard").iterdir())) == 1
    summary = (tmp_path / "two" / "train_summary.json").read_text()
    assert '"processes": 2' in summary and '"replicas": 2' in summary
    assert one["processes"] == 1


def fault_run(tmp_path, epochs: int) -> list[str]:
    make_flat_dataset(tmp_path / "data", slices=10, size=(32, 32))
    return [
        *RUN, f"dataset.root={tmp_path / 'data'}", f"trainer.epochs={epochs}",
        "trainer.batch_size=4", "trainer.early_stopping.enabled=false", "trainer.resume=auto",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]  # fmt: skip


def launch(tmp_path, run: list[str]) -> list[subprocess.Popen]:
    port = free_port()
    return [start(tmp_path, rank, 2, port, *run) for rank in range(2)]


def wait_for_epochs(run_dir, processes, epochs: int) -> None:
    deadline = time.monotonic() + 120
    while not (run_dir / "history.csv").is_file() or len(history(run_dir)) < epochs:
        assert all(p.poll() is None for p in processes), processes[0].stderr.read()
        assert time.monotonic() < deadline
        time.sleep(0.2)


# Faults and sweeps run once, on torch (scripts/run_tests.py): the glue they test serves JAX
# the same way, and JAX's processes start too slowly on a 2-core CPU for tests of a minute
# (a killed JAX process is named within seconds too, and its run resumes).
faults = pytest.mark.once


@faults
def test_a_stop_signal_to_one_process_stops_every_process_at_the_same_batch(tmp_path):
    processes = launch(tmp_path, fault_run(tmp_path, epochs=8))
    wait_for_epochs(tmp_path / "run", processes, 1)
    processes[1].send_signal(signal.SIGUSR1)  # SLURM signals every task; one is enough here
    errors = [p.communicate(timeout=120)[1] for p in processes]
    assert [p.returncode for p in processes] == [3, 3], errors  # stopped, resumable
    stops = [e[e.index("training stopped at") :].split(";")[0] for e in errors]
    assert stops[0] == stops[1], stops  # "training stopped at epoch E, batch B"


@faults
def test_a_lost_process_stops_the_other_naming_it_and_the_run_resumes(tmp_path):
    run = fault_run(tmp_path, epochs=3)
    processes = launch(tmp_path, run)
    wait_for_epochs(tmp_path / "run", processes, 1)
    processes[1].kill()  # mid-epoch 2
    killed = time.monotonic()
    _, error = processes[0].communicate(timeout=150)
    assert time.monotonic() - killed < 120
    assert processes[0].returncode == 2, error
    assert "process 0 of 2 stopped: lost process 1" in error and "Traceback" not in error
    processes[1].wait()
    # Resumed with the same processes, it finishes the planned epochs.
    processes = launch(tmp_path, run)
    assert [p.wait(timeout=300) for p in processes] == [0, 0], processes[0].stderr.read()
    assert [int(e["epoch"]) for e in history(tmp_path / "run")] == [1, 2, 3]


@pytest.mark.once
def test_other_commands_refuse_several_processes(tmp_path, monkeypatch):
    from flexseg.commands._app import processes_of
    from flexseg.errors import ConfigError

    monkeypatch.setitem(os.environ, "WORLD_SIZE", "2")
    monkeypatch.setitem(os.environ, "RANK", "1")
    with pytest.raises(ConfigError, match="flexseg-evaluate runs as one process"):
        processes_of("evaluate", None)


@faults
def test_a_sweep_of_multi_process_jobs_meets_on_a_port_per_job(tmp_path):
    """`-m` with jobs of two tasks each (submitit's local executor stands in for SLURM)."""
    make_flat_dataset(tmp_path / "data", slices=10, size=(32, 32))
    sweep = tmp_path / "sweep"
    result = subprocess.run(
        [sys.executable, "-m", "flexseg", "train", "-m", *RUN, "trainer.epochs=1",
         f"dataset.root={tmp_path / 'data'}", "seed=0,1", "hydra/launcher=submitit_local",
         "hydra.launcher.tasks_per_node=2", "hydra.launcher.timeout_min=10",
         f"hydra.sweep.dir={sweep}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    ports = set()
    for job in ("0", "1"):
        assert '"processes": 2' in (sweep / job / "train_summary.json").read_text()
        log = (sweep / job / "train.log").read_text()
        ports |= set(re.findall(r"meeting at 127\.0\.0\.1:(\d+)", log))
    assert len(ports) == 2  # each job its own rendezvous
    assert (sweep / "sweep_summary.md").is_file()


@faults
def test_torchrun_starts_the_console_script_and_every_process_exits_0(tmp_path):
    """As `srun flexseg-train` runs on SLURM: each process's exit status is 0 when the
    training succeeded (a console script's return value would be its status)."""
    run = fault_run(tmp_path, epochs=1)
    script = Path(sys.executable).with_name("flexseg-train")
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "--no-python", str(script), *run],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(history(tmp_path / "run")) == 1
    assert "Traceback" not in result.stderr
