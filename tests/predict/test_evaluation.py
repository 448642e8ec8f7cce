"""flexseg.predict.evaluation: a run scored on one of its splits, with every file it writes."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest

from flexseg.config import EvaluateConfig
from flexseg.errors import ConfigError, DataError, PreflightError
from flexseg.predict.evaluation import HEADLINE, evaluate
from tests.helpers import write_png


def test_evaluation_files_and_numbers(trained):
    _, run_dir, _ = trained
    summary = evaluate({"run_dir": str(run_dir), "split": "test", "tta": "flip"})
    out = run_dir / "evaluation" / "test"
    saved = json.loads((out / "evaluation.json").read_text())
    assert saved["images"] == 6 and saved["volumes"] == 1
    assert len(HEADLINE) == 8
    for key in HEADLINE:
        assert key in saved and key in summary
    assert 0.0 <= saved["fg_dice"] <= 1.0 and 0.0 <= saved["pixel_accuracy"] <= 1.0
    assert saved["postprocessing"] == "none" and saved["volumes_with_foreground"] == 1
    assert list(saved["worst_volumes"]) == ["p03"] and 0.0 <= saved["lesion_f1"] <= 1.0
    assert set(saved["per_class"]) == {"background", "lesion"}
    with (out / "evaluation_images.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6 and {r["group"] for r in rows} == {"p03"}
    with (out / "evaluation.csv").open() as f:
        metrics = dict(csv.reader(f))
    assert float(metrics["fg_dice"]) == pytest.approx(saved["fg_dice"])
    assert saved["checkpoint"] == "best"  # the run's trainer.select_checkpoint


def test_bfloat16_evaluation_scores_what_float32_does(trained):
    """The model rebuilt for inference in bfloat16 scores the split within 16-bit rounding
    of float32, and the evaluation says which precision it predicted in."""
    _, run_dir, _ = trained
    scores = {
        precision: evaluate({"run_dir": str(run_dir), "precision": precision})
        for precision in ("float32", "bfloat16")
    }
    assert {p: s["precision"] for p, s in scores.items()} == {
        "float32": "float32",
        "bfloat16": "bfloat16",
    }
    for key in ("fg_dice", "pixel_accuracy", "loss"):
        assert scores["bfloat16"][key] == pytest.approx(scores["float32"][key], abs=0.02)


def test_evaluating_the_checkpoint_the_run_did_not_select(trained):
    _, run_dir, _ = trained
    summary = evaluate(EvaluateConfig(run_dir=str(run_dir), checkpoint="last"))
    saved = json.loads((run_dir / "evaluation" / "test_last" / "evaluation.json").read_text())
    assert saved["checkpoint"] == summary["checkpoint"] == "last"
    with pytest.raises(ConfigError, match="checkpoint must be one of"):
        evaluate({"run_dir": str(run_dir), "checkpoint": "final"})


def test_a_folder_without_a_run_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=f"run_dir={tmp_path} holds no config.yaml"):
        evaluate({"run_dir": str(tmp_path)})


def copy_split(root, group, target, images_dir="images", masks_dir="masks"):
    """The files of one patient of a flat dataset, copied into a folder of their own."""
    for source, folder in (("images", images_dir), ("masks", masks_dir)):
        (target / folder).mkdir(parents=True)
        for path in (root / source).glob(f"{group}_*.png"):
            shutil.copy(path, target / folder / path.name)


def test_new_labelled_data_scores_as_the_runs_own_split(trained, tmp_path):
    """The run's test patient, copied into a folder that is no run's dataset, scores the same
    as the run's own evaluation of its test split (same preprocessing, colours, groups)."""
    root, run_dir, _ = trained
    own = evaluate({"run_dir": str(run_dir), "split": "test", "tta": "flip"})
    copy_split(root, "p03", tmp_path / "hospital_b", "scans", "labels")
    data = {"root": str(tmp_path / "hospital_b"), "images_dir": "scans", "masks_dir": "labels"}
    new = evaluate({"run_dir": str(run_dir), "tta": "flip", "data": data})
    out = run_dir / "evaluation" / "hospital_b"
    assert new["written_to"] == str(out) and new["split"] == "hospital_b"
    saved = json.loads((out / "evaluation.json").read_text())
    assert saved["data_root"] == str(tmp_path / "hospital_b")
    for key in ("loss", "images", "volumes", *HEADLINE):
        assert saved[key] == pytest.approx(own[key], abs=1e-6), key
    assert (out / "evaluation_images.csv").read_text() == (
        run_dir / "evaluation" / "test" / "evaluation_images.csv"
    ).read_text()


def test_new_data_that_does_not_fit_the_run_is_refused(trained, tmp_path):
    root, run_dir, _ = trained
    copy_split(root, "p03", tmp_path / "new")
    odd = tmp_path / "new" / "masks" / "p03_z002.png"
    write_png(odd, np.full((30, 28, 3), (0, 200, 0), np.uint8))  # a colour of no class
    with pytest.raises(PreflightError, match="nothing was evaluated") as error:
        evaluate({"run_dir": str(run_dir), "data": {"root": str(tmp_path / "new")}})
    assert str(odd) in str(error.value)
    assert not (run_dir / "evaluation" / "new").exists()
    with pytest.raises(ConfigError, match="data.name='test' would mix"):
        evaluate({"run_dir": str(run_dir), "data": {"root": str(tmp_path / "new"), "name": "test"}})
    with pytest.raises(DataError, match="is not a folder"):
        evaluate({"run_dir": str(run_dir), "data": {"root": str(tmp_path / "nowhere")}})


@pytest.mark.once
def test_failures_a_mean_hides_are_reported(tmp_path):
    """A volume with no prediction, a false lesion and the lowest Dice, named in the summary."""
    from types import SimpleNamespace

    from flexseg.data import find_samples
    from flexseg.data.reading import ReadSpec
    from flexseg.predict.evaluation import evaluate_samples
    from tests.helpers import data_source, make_flat_dataset

    make_flat_dataset(tmp_path, groups=("p01", "p02", "p03", "p04"), slices=3, size=(32, 32))
    split = {"groups": {"train": ["p04"], "test": ["p01", "p02", "p03"]}}
    samples = find_samples(data_source(tmp_path, split=split), 0)["test"]

    class Oracle:  # p01 predicted exactly, p02 not at all, p03 with a false blob
        spec, batch_size = ReadSpec(), 4

        def predict_many(self, items):
            for _, _, (sample, truth) in items:
                pred = {"p01": truth, "p02": np.zeros_like(truth)}.get(sample.group)
                if pred is None:
                    pred = truth.copy()
                    pred[:3, :3] = 1
                job = SimpleNamespace(item=(sample, truth), outputs=None, fit_mask=lambda t: t)
                yield np.eye(2)[pred], job

    summary, _ = evaluate_samples(Oracle(), samples, ["background", "lesion"], None)
    assert summary["volumes_with_foreground"] == 3
    assert summary["volumes_missed"] == ["p02"]
    assert list(summary["worst_volumes"]) == ["p02", "p03", "p01"]
    assert summary["worst_volumes"]["p02"] == 0.0 and summary["worst_volumes"]["p01"] == 1.0
    volumes = summary["per_volume"]
    assert volumes["p01"]["lesion_f1"] == 1.0 and volumes["p02"]["lesions_detected"] == 0
    assert volumes["p02"]["lesions_missed"] >= 1 and volumes["p03"]["lesions_false"] == 1
    detected = sum(v["lesions_detected"] for v in volumes.values())
    assert summary["lesions_detected"] == detected and 0 < summary["lesion_f1"] < 1
    by_size = summary["lesions_by_size"].values()
    assert sum(n["detected"] for n in by_size) == detected
    assert sum(n["lesions"] for n in by_size) == detected + summary["lesions_missed"]


def test_an_ensemble_of_copies_of_a_run_scores_as_the_run(trained, tmp_path):
    _, run_dir, _ = trained
    own = evaluate({"run_dir": str(run_dir), "split": "test"})
    copies = []
    for name in ("fold_a", "fold_b"):
        shutil.copytree(
            run_dir, tmp_path / "cv" / name, ignore=shutil.ignore_patterns("evaluation")
        )
        copies.append(str(tmp_path / "cv" / name))
    ensemble = evaluate({"run_dir": copies, "split": "test"})
    out = tmp_path / "cv" / "ensemble" / "evaluation" / "test"
    assert ensemble["written_to"] == str(out) and ensemble["runs"] == copies
    for key in ("fg_dice", "fg_dice_volume_mean", "lesion_f1", "hd95_volume_mean_px"):
        assert ensemble[key] == pytest.approx(own[key], abs=1e-6), key
    assert (out / "evaluation_images.csv").read_text() == (
        run_dir / "evaluation" / "test" / "evaluation_images.csv"
    ).read_text()
    assert not (tmp_path / "cv" / "fold_a" / "evaluation").exists()  # the members untouched


@pytest.mark.once
def test_runs_that_read_images_differently_are_no_ensemble(trained, tmp_path):
    _, run_dir, _ = trained
    other = tmp_path / "other"
    shutil.copytree(run_dir, other)
    config = (other / "config.yaml").read_text()
    (other / "config.yaml").write_text(config.replace("normalize: zscore", "normalize: scale01"))
    with pytest.raises(ConfigError, match=r"differ in dataset.normalize \(.*'zscore'.*'scale01'"):
        evaluate({"run_dir": [str(run_dir), str(other)]})
    assert not (tmp_path / "ensemble").exists()


@pytest.mark.once
def test_every_test_image_can_be_scored_with_one_channel_standing_in(trained):
    _, run_dir, _ = trained
    own = evaluate({"run_dir": str(run_dir), "split": "test"})
    alone = evaluate({"run_dir": str(run_dir), "split": "test", "stand_in_channel": 0})
    assert alone["written_to"] == str(run_dir / "evaluation" / "test_channel0_only")
    assert alone["stand_in_channel"] == 0
    assert alone["fg_dice"] == pytest.approx(own["fg_dice"])  # one gray channel: the same
    with pytest.raises(ConfigError, match="stand_in_channel=2 is not a channel"):
        evaluate({"run_dir": str(run_dir), "stand_in_channel": 2})


@pytest.mark.once
def test_each_class_of_a_volume_gets_its_dice_and_hd95_in_mm(tmp_path):
    """Three classes on 1 x 1 x 2 mm voxels: class 1 predicted exactly, class 2 shifted."""
    from types import SimpleNamespace

    from flexseg.data import Source, SplitRule, find_samples
    from flexseg.data.reading import ReadSpec
    from flexseg.metrics import hd95
    from flexseg.predict.evaluation import evaluate_samples
    from tests.helpers import write_nifti

    label = np.zeros((12, 12, 8), np.uint8)
    label[2:6, 2:8, 2:6], label[7:11, 3:9, 2:6] = 1, 2
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    for case in ("c01", "c02"):
        write_nifti(tmp_path / "imagesTr" / f"{case}_0000.nii.gz", label * 100.0, affine)
        write_nifti(tmp_path / "labelsTr" / f"{case}.nii.gz", label, affine)
    manifest = {"channel_names": {"0": "t1"}, "labels": {"background": 0, "head": 1, "tail": 2},
                "numTraining": 2, "file_ending": ".nii.gz"}  # fmt: skip
    (tmp_path / "dataset.json").write_text(json.dumps(manifest))
    source = Source(root=str(tmp_path), layout="nnunet", whole_volumes=True,
                    split=SplitRule(groups={"train": ["c02"], "test": ["c01"]}))  # fmt: skip
    samples = find_samples(source, 0)["test"]
    shifted = label.copy()
    shifted[label == 2] = 0
    shifted[np.roll(label == 2, 1, axis=2)] = 2  # one voxel, 2 mm, along z

    class Oracle:
        spec, batch_size = ReadSpec(normalize="volume_zscore"), 1

        def predict_many(self, items):
            for _, _, (sample, truth) in items:
                job = SimpleNamespace(item=(sample, truth), outputs=None, fit_mask=lambda t: t)
                yield np.eye(3)[shifted], job

    summary, _ = evaluate_samples(Oracle(), samples, ["background", "head", "tail"], None)
    case = summary["per_volume"]["c01"]
    assert case["hd95_mm_head"] == 0.0 and case["dice_head"] == 1.0
    expected = hd95(label == 2, shifted == 2, (1.0, 1.0, 2.0))
    assert case["hd95_mm_tail"] == pytest.approx(expected) and expected > 0
    tail = summary["per_class"]["tail"]
    assert tail["hd95_volume_mean_mm"] == pytest.approx(expected)
    assert tail["dice_volume_mean"] == pytest.approx(case["dice_tail"]) and tail["dice"] < 1
