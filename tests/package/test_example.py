"""examples/predict_onnx.py, which follows preprocessing.json with numpy, OpenCV and
onnxruntime only, gives flexseg-infer's masks on the built-in sample."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import keras
import numpy as np
import pytest
from PIL import Image

from flexseg.commands._compose import SAMPLE_DATA, load_config
from flexseg.config import instantiate
from flexseg.config.files import save_config
from flexseg.config.parse import as_dict
from flexseg.predict.export import export, sample_batch
from flexseg.predict.inference import infer
from flexseg.predict.postprocess import classes
from flexseg.runs import load_run

pytestmark = pytest.mark.once  # the package and its examples, on one backend

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "predict_onnx.py"


def untrained_run(run_dir: Path) -> None:
    """A run of the demo recipe (group z-score, zero-padding to 224 x 192) whose model is
    seeded, not trained, with its output bias set so that about a fifth of the pixels are
    foreground: masks with many class boundaries, where any preprocessing slip shows."""
    cfg = load_config(["experiment=demo", "model.base_filters=4", "model.num_layers=3"])
    (run_dir / "checkpoints").mkdir(parents=True)
    save_config(as_dict(cfg), run_dir / "config.yaml")
    keras.utils.set_random_seed(0)
    model = instantiate(cfg.model)
    path = run_dir / "checkpoints" / "best.keras"
    model.save(path)
    probs = keras.ops.convert_to_numpy(model(sample_batch(load_run(run_dir))[0]))
    margin = np.log(probs[..., 1] + 1e-9) - np.log(probs[..., 0] + 1e-9)
    head = next(layer for layer in reversed(model.layers) if layer.weights)
    kernel, bias = (keras.ops.convert_to_numpy(w) for w in head.weights)
    bias[1] -= np.quantile(margin, 0.8) + 1e-3  # the padding's equal margins: background
    head.set_weights([kernel, bias])
    model.save(path)


def test_predict_onnx_gives_flexseg_infers_masks(tmp_path):
    run_dir = tmp_path / "run"
    untrained_run(run_dir)
    export({"run_dir": str(run_dir), "format": "onnx"})
    images = tmp_path / "images"
    images.mkdir()
    for path in sorted((SAMPLE_DATA / "ms-lesjak-flair" / "images").glob("p26_*.png"))[::4]:
        shutil.copy(path, images / path.name)
    infer({"run_dir": str(run_dir), "input": str(images), "output": str(tmp_path / "infer")})
    subprocess.run(
        [sys.executable, EXAMPLE, run_dir / "export" / "onnx", images, tmp_path / "onnx"],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    prep = json.loads((run_dir / "export" / "onnx" / "preprocessing.json").read_text())
    assert prep["postprocessing"]["rule"] == {"name": "none"}  # the rules: the test below
    ids = {tuple(c["color"]): c["id"] for c in prep["classes"]}
    same = total = foreground = 0
    for path in sorted((tmp_path / "infer" / "masks").glob("*.png")):
        expected = np.array(Image.open(path))  # palette PNG: class ids
        rgb = cv2.cvtColor(cv2.imread(str(tmp_path / "onnx" / path.name)), cv2.COLOR_BGR2RGB)
        found = np.full(rgb.shape[:2], -1)
        for color, class_id in ids.items():
            found[(rgb == color).all(-1)] = class_id
        same, total = same + int((found == expected).sum()), total + expected.size
        foreground += int((expected > 0).sum())
    assert total == 29 * 218 * 182  # every slice, at its own size
    assert 0.05 < foreground / total < 0.5  # masks with real boundaries to get right
    assert same / total >= 0.999


def test_the_example_makes_class_ids_as_flexseg_does():
    spec = importlib.util.spec_from_file_location("predict_onnx", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    rng = np.random.default_rng(0)
    logits = cv2.GaussianBlur(rng.normal(size=(64, 64, 3)).astype(np.float32), (0, 0), 2.0)
    probs = np.exp(4 * logits)
    probs /= probs.sum(-1, keepdims=True)  # blobs of each class, many near a tie
    for rule in (
        {"name": "none"},
        {"name": "min_size", "min_size": 25},
        {"name": "largest"},
        {"name": "none", "threshold": 0.3},
        {"name": "min_size", "min_size": 10, "threshold": 0.7},
        {"name": "largest", "threshold": 0.6},
    ):
        expected = classes(probs, rule)
        assert 0 < (expected > 0).mean() < 1 and len(np.unique(expected)) == 3
        np.testing.assert_array_equal(example.class_ids(probs, rule), expected)
