"""Train, evaluate and infer on a tiny dataset, checking every output file and its content."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from flexseg.config import load_config
from flexseg.errors import ConfigError
from flexseg.evaluation import evaluate
from flexseg.inference import infer
from flexseg.training import train
from tests.helpers import TINY_RUN, make_flat_dataset, write_png

TINY = [
    *TINY_RUN,
    "dataset.cache=false",
    "dataset.split.groups={train:[p01,p02],test:[p03]}",
    "dataset.split.holdout_fraction=0.25",
    "trainer.epochs=2",
    "trainer.batch_size=4",
    "trainer.preview_images=2",
    "augment=strong",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    make_flat_dataset(root, slices=6, size=(30, 28))
    run_dir = tmp_path_factory.mktemp("run")
    cfg = load_config([f"dataset.root={root}", *TINY])
    cfg["_run_dir_"] = str(run_dir)
    summary = train(cfg)
    return root, run_dir, summary


def test_training_writes_every_file(trained):
    _, run_dir, summary = trained
    assert summary["epochs_run"] == 2 and summary["samples"] == {"train": 8, "valid": 4, "test": 6}
    for name in (
        "config.yaml",
        "checkpoints/best.keras",
        "checkpoints/last.keras",
        "history.csv",
        "train_losses.csv",
        "train_metrics.csv",
        "train_summary.json",
        "plots/loss.png",
        "plots/metrics.png",
        "previews/epoch_001.png",
        "previews/epoch_002.png",
    ):
        assert (run_dir / name).is_file(), name
    with (run_dir / "history.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert {"loss", "val_loss", "fg_dice", "val_fg_dice", "learning_rate"} <= set(rows[0])
    with (run_dir / "train_losses.csv").open() as f:
        assert next(csv.reader(f)) == ["epoch", "loss", "val_loss"]
    assert not list(run_dir.rglob(".*.tmp*"))  # atomic writes leave no temporaries


def test_a_second_run_never_writes_into_the_first(trained):
    root, run_dir, _ = trained
    cfg = load_config([f"dataset.root={root}", *TINY])
    cfg["_run_dir_"] = str(run_dir)
    with pytest.raises(ValueError, match="already holds a training run"):
        train(cfg)


def test_evaluation_files_and_numbers(trained):
    _, run_dir, _ = trained
    summary = evaluate({"run_dir": str(run_dir), "split": "test", "tta": "flip"})
    out = run_dir / "evaluation" / "test"
    saved = json.loads((out / "evaluation.json").read_text())
    assert saved["images"] == 6 and saved["volumes"] == 1
    for key in (
        "loss",
        "fg_dice",
        "fg_dice_image_mean",
        "fg_dice_volume_mean",
        "fg_dice_volume_median",
        "hd95_volume_mean_px",
        "pixel_accuracy",
    ):
        assert key in saved and key in summary
    assert 0.0 <= saved["fg_dice"] <= 1.0 and 0.0 <= saved["pixel_accuracy"] <= 1.0
    assert set(saved["per_class"]) == {"background", "lesion"}
    with (out / "evaluation_images.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6 and {r["group"] for r in rows} == {"p03"}
    with (out / "evaluation.csv").open() as f:
        metrics = dict(csv.reader(f))
    assert float(metrics["fg_dice"]) == pytest.approx(saved["fg_dice"])
    assert saved["checkpoint"] == "best"  # the run's trainer.select_checkpoint


def test_evaluating_the_checkpoint_the_run_did_not_select(trained):
    _, run_dir, _ = trained
    summary = evaluate({"run_dir": str(run_dir), "checkpoint": "last"})
    saved = json.loads((run_dir / "evaluation" / "test_last" / "evaluation.json").read_text())
    assert saved["checkpoint"] == summary["checkpoint"] == "last"
    with pytest.raises(ConfigError, match="checkpoint must be best or last"):
        evaluate({"run_dir": str(run_dir), "checkpoint": "final"})


def test_inference_at_original_size_tiled_and_never_overwriting(trained, tmp_path):
    root, run_dir, _ = trained
    inputs = tmp_path / "in"
    rng = np.random.default_rng(1)
    write_png(inputs / "p09_small.png", rng.integers(0, 255, (20, 26), dtype=np.uint8))
    write_png(inputs / "p09_large.png", rng.integers(0, 255, (70, 45), dtype=np.uint8))
    write_png(inputs / "p09_rgb.png", rng.integers(0, 255, (30, 28, 3), dtype=np.uint8))
    output = tmp_path / "out"
    cfg = {
        "run_dir": str(run_dir),
        "input": str(inputs),
        "output": str(output),
        "tta": "flip",
        "save_probabilities": True,
    }
    with pytest.warns(UserWarning, match="3-channel"):
        written = infer(cfg)
    assert len(written) == 3
    for stem, size in (("p09_small", (20, 26)), ("p09_large", (70, 45)), ("p09_rgb", (30, 28))):
        with Image.open(output / "masks" / f"{stem}.png") as mask:
            assert mask.mode == "P" and mask.size == (size[1], size[0])
            assert set(np.unique(np.asarray(mask))) <= {0, 1}
        with Image.open(output / "overlays" / f"{stem}.png") as picture:
            assert picture.size == (size[1], size[0])
        probs = np.load(output / "probabilities" / f"{stem}.npy")
        assert probs.shape == (*size, 2)
        np.testing.assert_allclose(probs.astype(np.float32).sum(-1), 1.0, atol=1e-2)
    before = (output / "masks" / "p09_small.png").read_bytes()
    with pytest.raises(ValueError, match="overwrite=true"):
        infer(cfg)
    assert (output / "masks" / "p09_small.png").read_bytes() == before
    infer({**cfg, "overwrite": True})


def test_inference_on_an_empty_folder_is_refused(trained, tmp_path):
    _, run_dir, _ = trained
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no images"):
        infer({"run_dir": str(run_dir), "input": str(tmp_path / "empty")})
