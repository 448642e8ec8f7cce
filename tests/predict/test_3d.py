"""3D runs end to end on each backend: a FlexUNet of spatial_dims=3 trained on patches
predicts whole volumes by sliding windows, written on each input's grid and scored in mm."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pytest

from flexseg.commands._compose import load_config
from flexseg.predict.evaluation import choose_postprocessing, evaluate
from flexseg.predict.export import export, sample_batch
from flexseg.predict.inference import infer
from flexseg.predict.postprocess import describe
from flexseg.runs import load_run
from flexseg.training import train
from tests.helpers import make_volume_dataset
from tests.training.test_train_3d import RUN_3D


@pytest.fixture(scope="module")
def run_3d(tmp_path_factory):
    """(data folder, run folder) of a tiny 3D run on four 1 x 1 x 2 mm cases."""
    root = tmp_path_factory.mktemp("volumes3d")
    make_volume_dataset(
        root, cases=("p01", "p02", "p03", "p04"), shape=(20, 18, 12),
        affine=np.diag([1.0, 1.0, 2.0, 1.0]),
    )  # fmt: skip
    run_dir = tmp_path_factory.mktemp("run3d")
    split = "dataset.split.groups={train:[p01,p02],valid:[p03],test:[p04]}"
    train(load_config([*RUN_3D, f"dataset.root={root}", split]), run_dir)
    return root, run_dir


@pytest.mark.parametrize("tta", ["none", "mirror"])
def test_a_3d_run_predicts_whole_volumes_on_their_grid(run_3d, tmp_path, tta):
    root, run_dir = run_3d
    images = sorted(str(p) for p in (root / "imagesTr").glob("p04_*.nii.gz"))
    settings = {"run_dir": str(run_dir), "input": images, "save_probabilities": True}
    written = infer({**settings, "output": str(tmp_path / "out"), "tta": tta})
    source, predicted = nib.load(images[0]), nib.load(written[0]["mask"])
    assert predicted.shape == source.shape == (20, 18, 12)  # larger than a 16x16x8 patch
    np.testing.assert_allclose(predicted.affine, source.affine)
    probs = nib.load(written[0]["probabilities"]).get_fdata()
    assert probs.shape == (20, 18, 12, 2)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-4)
    labels = np.asarray(predicted.dataobj)
    np.testing.assert_array_equal(labels, probs.argmax(-1))


def test_a_3d_run_evaluates_each_case_in_millimetres(run_3d):
    root, run_dir = run_3d
    summary = evaluate({"run_dir": str(run_dir), "split": "test"})
    case = summary["per_volume"]["p04"]
    assert case["images"] == 1  # the case, whole
    truth = np.asarray(nib.load(root / "labelsTr" / "p04.nii.gz").dataobj)
    assert case["fg_ml_true"] == pytest.approx(truth.sum() * 2.0 / 1000)  # 1 x 1 x 2 mm voxels
    written = json.loads((run_dir / "evaluation" / "test" / "evaluation.json").read_text())
    assert written["volumes"] == 1 and "hd95_volume_mean_mm" in written
    assert set(case) >= {"dice_lesion", "hd95_mm", "msd_mm", "lesions_detected"}


def test_a_3d_run_exports_to_onnx_with_its_windowing(run_3d, tmp_path):
    _, run_dir = run_3d
    out = tmp_path / "onnx"
    result = export({"run_dir": str(run_dir), "format": "onnx", "output": str(out)})
    assert result["max_difference"] <= 1e-4
    assert result["checked_on"] == "1 test cases (centre patches) of ms_lesjak_volumes"
    batch, _ = sample_batch(load_run(run_dir))
    assert batch.shape == (1, 16, 16, 8, 2)  # the patch at the centre of p04, 2 channels
    assert abs(float(batch.mean())) < 1.0 and float(batch.std()) > 0.3  # z-scored, not noise
    prep = json.loads((out / "preprocessing.json").read_text())
    assert prep["input"]["layout"] == "NXYZC" and prep["input"]["shape"] == [None, 16, 16, 8, 2]
    size = prep["size"]
    assert (size["policy"], size["window"], size["overlap"]) == ("sliding_window", [16, 16, 8], 0.5)
    assert size["weighting"] == "gaussian" and size["sigma_scale"] == 0.125
    assert prep["volume"]["axis_order"].startswith("RAS")


def test_a_3d_run_chooses_post_processing_and_ensembles(run_3d, tmp_path):
    _, run_dir = run_3d
    copies = []
    for name in ("fold_a", "fold_b"):
        skip = shutil.ignore_patterns("evaluation", "postprocessing.json")
        shutil.copytree(run_dir, tmp_path / name, ignore=skip)
        copies.append(str(tmp_path / name))
    own = evaluate({"run_dir": copies[0], "split": "test"})
    ensemble = evaluate({"run_dir": copies, "split": "test"})  # of copies: the run's scores
    for key in ("fg_dice", "hd95_volume_mean_mm", "fg_ml_pred_volume_mean"):
        assert ensemble[key] == pytest.approx(own[key], abs=1e-6), key
    chosen = choose_postprocessing(copies[0])  # on the valid case, p03
    assert "none" in chosen["fg_dice_volume_mean"] and len(chosen["fg_dice_volume_mean"]) > 1
    again = evaluate({"run_dir": copies[0], "split": "test"})
    assert again["postprocessing"] == describe(chosen["rule"])


def test_masks_made_elsewhere_are_scored_as_the_runs_own(run_3d, tmp_path):
    """flexseg-evaluate predictions=<folder>: another tool's masks, the run's split and scores."""
    root, run_dir = run_3d
    images = sorted(str(p) for p in (root / "imagesTr").glob("p04_*.nii.gz"))
    written = infer({"run_dir": str(run_dir), "input": images, "output": str(tmp_path / "out")})
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    shutil.copy(written[0]["mask"], theirs / "p04.nii.gz")
    given = evaluate({"run_dir": str(run_dir), "split": "test", "predictions": str(theirs)})
    own = evaluate({"run_dir": str(run_dir), "split": "test"})
    assert own["postprocessing"] == "none"  # the run's model, as it predicts
    assert given["per_volume"]["p04"]["fg_dice"] == pytest.approx(
        own["per_volume"]["p04"]["fg_dice"]
    )
    assert given["written_to"].endswith("test_given_theirs") and given["loss"] != given["loss"]
    perfect = tmp_path / "perfect"
    perfect.mkdir()
    shutil.copy(root / "labelsTr" / "p04.nii.gz", perfect / "p04.nii.gz")
    summary = evaluate({"run_dir": str(run_dir), "split": "test", "predictions": str(perfect)})
    assert summary["fg_dice"] == 1.0 and summary["per_volume"]["p04"]["hd95_mm"] == 0.0
    from flexseg.errors import DataError

    with pytest.raises(DataError, match="no prediction for p04"):
        evaluate({"run_dir": str(run_dir), "split": "test", "predictions": str(tmp_path)})
