"""Run folders: a run's config and checkpoint load, and a broken one is named."""

from __future__ import annotations

import shutil

import keras
import pytest
import yaml

from flexseg.config import as_dict
from flexseg.errors import DataError
from flexseg.runs import load_run, read_run_config


def test_a_run_loads_with_its_selected_checkpoint(trained):
    _, run_dir, _ = trained
    run = load_run(run_dir)
    assert run.checkpoint == "best" and run.selected
    assert run.model.input_shape == (None, 32, 32, 1)
    other = load_run(run_dir, "last")
    assert other.checkpoint == "last" and not other.selected


def test_the_config_of_an_older_run_is_read(trained, tmp_path):
    """Runs written before each command had its own config held every command's keys and
    every loss's parameters in one section; before the logger section, the trainer's
    `tensorboard` switch; before loader processes, `use_multiprocessing` and a true/false
    cache."""
    _, run_dir, _ = trained
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    saved = yaml.safe_load((copy / "config.yaml").read_text())
    older = {
        **{k: v for k, v in saved.items() if k != "logger"},
        "trainer": {**saved["trainer"], "tensorboard": True, "use_multiprocessing": False},
        "dataset": {**saved["dataset"], "cache": False},
        "loss": {**saved["loss"], "gamma": 2.0, "alpha": 0.3, "beta": 0.7},
        "run_dir": None, "input": None, "output": None, "overwrite": False, "tta": "none",
        "save_probabilities": False, "split": "test", "checkpoint": None, "preview_samples": 16,
    }  # fmt: skip
    (copy / "config.yaml").write_text(yaml.safe_dump(older))
    assert as_dict(read_run_config(copy)) == as_dict(read_run_config(run_dir))


@pytest.mark.parametrize(
    "damage",
    [b"PK\x03\x04 half a zip", b"", bytes(range(256)) * 4, "truncated", "folder"],
)
def test_a_corrupt_checkpoint_is_named_as_damaged_and_the_other_offered(trained, tmp_path, damage):
    _, run_dir, _ = trained
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    last = copy / "checkpoints" / "last.keras"
    if damage == "truncated":
        last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    elif damage == "folder":
        last.unlink()
        last.mkdir()
    else:
        last.write_bytes(damage)
    with pytest.raises(DataError) as info:
        load_run(copy, "last")
    message = str(info.value)
    assert str(last) in message and "not found" not in message.lower()
    assert any(word in message for word in ("damaged", "is a folder", "cannot load"))
    assert message.endswith("checkpoint=best.")  # the intact one, offered


def test_a_checkpoint_of_another_model(trained, tmp_path):
    _, run_dir, _ = trained
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    other = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(5, 1)])
    other.save(copy / "checkpoints" / "last.keras")
    with pytest.raises(DataError, match="last.keras is not this run's model"):
        load_run(copy, "last")
