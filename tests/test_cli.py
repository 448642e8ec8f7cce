"""The console commands, run as a user runs them: in a subprocess, with Hydra overrides."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np

from tests.helpers import make_flat_dataset, write_png


def run(module: str, *overrides: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", f"flexseg.{module}", *overrides],
        cwd=cwd,
        env={**os.environ},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_stats_reports_unknown_colours_and_fails(tmp_path):
    make_flat_dataset(tmp_path / "data", slices=2, size=(16, 16))
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[:2, :2] = [0, 180, 0]
    write_png(tmp_path / "data" / "masks" / "p02_z001.png", rgb)
    result = run(
        "stats",
        f"dataset.root={tmp_path / 'data'}",
        "dataset.split.groups={train:[p01,p02],test:[p03]}",
        f"hydra.run.dir={tmp_path / 'out'}",
        cwd=tmp_path,
    )
    assert result.returncode == 1, result.stderr
    assert "unknown colour [0, 180, 0] in" in result.stdout
    assert "p02_z001.png: 4 pixels" in result.stdout
    assert (tmp_path / "out" / "dataset_stats.json").is_file()
    assert (tmp_path / "out" / "dataset_stats.png").is_file()


def test_a_misspelled_key_stops_the_command_with_its_name(tmp_path):
    result = run("train", "trainer.reduer_patience=3", cwd=tmp_path)
    assert result.returncode != 0
    assert "reduer_patience" in result.stderr
    assert not (tmp_path / "outputs").exists()  # nothing was started
