"""Volumes end to end on each backend: a 2D model trained on the slices of an nnU-Net folder
predicts NIfTI label volumes on each input's own grid, and evaluates in millimetres."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from flexseg.commands._compose import load_config
from flexseg.errors import DataError
from flexseg.predict.evaluation import evaluate
from flexseg.predict.inference import infer
from flexseg.training import train
from tests.helpers import TINY_RUN, make_volume_dataset

# RAS -> LPS: the first two axes reversed
LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


@pytest.fixture(scope="module")
def volume_run(tmp_path_factory):
    """(data folder, run folder) of a tiny 2D run on the slices of three 1 x 1 x 2.5 mm
    cases, FLAIR-like and T2-like channels."""
    root = tmp_path_factory.mktemp("volumes")
    make_volume_dataset(root, shape=(20, 18, 10), affine=np.diag([1.0, 1.0, 2.5, 1.0]))
    run_dir = tmp_path_factory.mktemp("volume_run")
    cfg = load_config(
        [
            f"dataset.root={root}",
            *TINY_RUN,
            "dataset.layout=auto",
            "dataset.group_regex=null",
            "dataset.rgb_map=null",
            "dataset.channels=2",
            "dataset.normalize=volume_zscore",
            "dataset.slice_axis=axial",
            "dataset.split.groups={train:[p01],valid:[p02],test:[p03]}",
            "trainer.epochs=2",
            "trainer.batch_size=4",
            "trainer.preview_images=2",
        ]
    )
    train(cfg, run_dir)
    return root, run_dir


def test_a_predicted_label_volume_has_the_input_shape_and_affine(volume_run, tmp_path):
    root, run_dir = volume_run
    images = sorted(str(p) for p in (root / "imagesTr").glob("p03_*.nii.gz"))
    written = infer(
        {
            "run_dir": str(run_dir),
            "input": images,
            "output": str(tmp_path / "out"),
            "save_probabilities": True,
        }  # fmt: skip
    )
    assert [w["mask"].name for w in written] == ["p03.nii.gz"]
    source, predicted = nib.load(images[0]), nib.load(written[0]["mask"])
    assert predicted.shape == source.shape == (20, 18, 10)
    np.testing.assert_allclose(predicted.affine, source.affine)
    assert predicted.get_data_dtype() == np.uint8
    assert set(np.unique(np.asarray(predicted.dataobj))) <= {0, 1}
    probs = nib.load(written[0]["probabilities"]).get_fdata()
    assert probs.shape == (20, 18, 10, 2)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-4)
    with pytest.raises(DataError, match="overwrite=true"):
        infer({"run_dir": str(run_dir), "input": images, "output": str(tmp_path / "out")})
    with pytest.raises(DataError, match=r"case p03 has channel file\(s\) \[0\]"):
        infer({"run_dir": str(run_dir), "input": images[:1], "output": str(tmp_path / "o2")})


def test_an_input_stored_in_another_orientation_predicts_the_same_labels(volume_run, tmp_path):
    root, run_dir = volume_run
    given = tmp_path / "lps"
    for channel in (0, 1):
        image = nib.load(root / "imagesTr" / f"p03_{channel:04d}.nii.gz")
        voxels = np.asarray(image.dataobj)[::-1, ::-1]  # the same scan, stored as LPS
        affine = image.affine @ np.array(
            [[-1, 0, 0, 19], [0, -1, 0, 17], [0, 0, 1, 0], [0, 0, 0, 1]], float
        )
        given.mkdir(exist_ok=True)
        nib.save(nib.Nifti1Image(voxels, affine), given / f"p03_{channel:04d}.nii.gz")
    assert "".join(nib.aff2axcodes(affine)) == "LPS"
    ras = infer({"run_dir": str(run_dir), "input": str(root / "imagesTr"),
                 "output": str(tmp_path / "ras_out")})  # fmt: skip
    lps = infer({"run_dir": str(run_dir), "input": str(given), "output": str(tmp_path / "lps_out")})
    first = nib.load(next(w["mask"] for w in ras if w["mask"].name == "p03.nii.gz"))
    second = nib.load(lps[0]["mask"])
    np.testing.assert_allclose(second.affine, affine)
    back = nib.as_closest_canonical(second)  # both brought to RAS
    np.testing.assert_array_equal(np.asarray(back.dataobj), np.asarray(first.dataobj))


def test_evaluation_of_volumes_reports_millimetres_and_millilitres(volume_run):
    _, run_dir = volume_run
    summary = evaluate({"run_dir": str(run_dir), "split": "test"})
    case = summary["per_volume"]["p03"]
    assert case["images"] == 10  # the case's axial slices, scored as one volume
    written = json.loads((run_dir / "evaluation" / "test" / "evaluation.json").read_text())
    assert case["fg_ml_true"] == pytest.approx(6 * 6 * 3 * 2.5 / 1000)  # box of 6x6x3 at 2.5 mm
    for key in ("hd95_volume_mean_mm", "msd_volume_mean_mm", "fg_ml_true_volume_mean"):
        assert key in written
    if case["predicted_foreground"]:
        assert case["hd95_mm"] >= 0 and case["msd_mm"] >= 0
    assert set(case) >= {"dice_background", "dice_lesion", "lesions_detected"}


def test_the_export_preprocessing_of_a_volume_run_says_how_volumes_are_cut(volume_run):
    from flexseg.predict.export import preprocessing
    from flexseg.runs import load_run

    _, run_dir = volume_run
    rules = preprocessing(load_run(run_dir), "onnx")
    assert rules["volume"]["slice_axis"] == 2 and rules["volume"]["axis_order"].startswith("RAS")
    assert rules["intensity"]["normalize"] == "volume_zscore"
    assert rules["input"]["shape"][-1] == 2
