"""infer(cfg): predictions written at each image's original size, never over a file."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from flexseg.errors import DataError, PreflightError
from flexseg.predict.inference import infer
from tests.helpers import write_png


def test_inference_at_original_size_tiled_and_never_overwriting(trained, tmp_path):
    _, run_dir, _ = trained
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
    before = {p: p.read_bytes() for p in output.rglob("*") if p.is_file()}
    infer(cfg)  # the same run and settings again: everything is there, nothing is redone
    assert {p: p.read_bytes() for p in output.rglob("*") if p.is_file()} == before
    with pytest.raises(ValueError, match="another run or other settings; set overwrite=true"):
        infer({**cfg, "tta": "none"})
    assert {p: p.read_bytes() for p in output.rglob("*") if p.is_file()} == before
    infer({**cfg, "tta": "none", "overwrite": True})


def test_inference_into_the_data_sets_own_folder_is_refused(trained, tmp_path):
    """output=<the data set's root> would write masks/ over the ground truth."""
    root, run_dir, _ = trained
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    for output in (root, root / "masks"):
        with pytest.raises(DataError, match="data set"):
            infer({"run_dir": str(run_dir), "input": str(root / "images"), "output": str(output),
                   "overwrite": True})  # fmt: skip
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before


def test_an_input_folder_without_images(trained, tmp_path):
    _, run_dir, _ = trained
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=f"{tmp_path / 'empty'} holds no images"):
        infer({"run_dir": str(run_dir), "input": str(tmp_path / "empty")})


def test_an_unreadable_input_stops_inference_before_any_prediction(trained, tmp_path):
    root, run_dir, _ = trained
    (tmp_path / "broken.png").write_bytes(b"not a png")
    good = root / "images" / "p03_z000.png"
    output = tmp_path / "out"
    with pytest.raises(PreflightError, match="nothing was predicted") as info:
        infer({"run_dir": str(run_dir), "input": [str(good), str(tmp_path / "broken.png")],
               "output": str(output)})  # fmt: skip
    assert "broken.png" in str(info.value)
    assert not output.exists()  # nothing was predicted


def test_progress_shows_on_a_terminal_only(trained, tmp_path, capsys, monkeypatch):
    root, run_dir, _ = trained
    cfg = {"run_dir": str(run_dir), "input": str(root / "images"), "output": str(tmp_path / "a")}
    infer(cfg)
    assert capsys.readouterr().out == ""  # a log file or a cluster job gets no bar
    monkeypatch.setattr("sys.stdout.isatty", lambda: True)
    infer({**cfg, "output": str(tmp_path / "b")})
    shown = capsys.readouterr().out
    assert "predicting: 18 images" in shown and "18/18" in shown


@pytest.mark.once
def test_a_sweep_folder_predicts_as_the_ensemble_of_its_runs(trained, tmp_path):
    """Two copies of one run in a sweep's numbered folders: the ensemble's probabilities
    are the run's own, written to the sweep's ensemble/ folder."""
    import shutil

    _, run_dir, _ = trained
    inputs = tmp_path / "in"
    write_png(inputs / "p09_a.png", np.random.default_rng(2).integers(0, 255, (30, 28), np.uint8))
    for job in ("0", "1"):
        shutil.copytree(run_dir, tmp_path / "sweep" / job)
    common = {"input": str(inputs), "save_probabilities": True, "tta": "flip"}
    infer({**common, "run_dir": str(run_dir), "output": str(tmp_path / "one")})
    infer({**common, "run_dir": str(tmp_path / "sweep")})
    ensemble = tmp_path / "sweep" / "ensemble" / "predictions"
    np.testing.assert_allclose(
        np.load(ensemble / "probabilities" / "p09_a.npy"),
        np.load(tmp_path / "one" / "probabilities" / "p09_a.npy"),
        atol=1e-6,
    )
