"""The console commands, run as a user runs them: in a subprocess, with Hydra overrides.

Config errors, data reports and Hydra's launchers (sweeps, Optuna, submitit) work the same on
every backend: those tests are marked `once` and run on one backend (scripts/run_tests.py)."""

from __future__ import annotations

import csv
import gzip
import re

import nibabel as nib
import numpy as np
import pytest
import yaml

from tests.helpers import (
    TRAIN_VALID_SPLIT,
    huge_header,
    make_flat_dataset,
    make_volume_dataset,
    run_cli,
    write_nifti,
    write_png,
)

SWEEP_RUN = [
    "dataset.image_size=[16,16]",
    *TRAIN_VALID_SPLIT,
    "model.num_layers=2",
    "trainer.epochs=1",
    "trainer.batch_size=2",
    "trainer.preview_images=0",
    "trainer.verbose=0",
    "augment=none",
]


def multirun(tmp_path, *overrides: str):
    """`flexseg-train -m` on a three-patient dataset; returns the sweep folder."""
    make_flat_dataset(tmp_path / "data", slices=2, size=(16, 16))
    sweep = tmp_path / "sweep"
    result = run_cli(
        "train", "-m", *overrides, f"dataset.root={tmp_path / 'data'}", *SWEEP_RUN,
        f"hydra.sweep.dir={sweep}", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    return sweep


@pytest.mark.once
def test_stats_reports_unknown_colours_and_fails(tmp_path):
    make_flat_dataset(tmp_path / "data", slices=2, size=(16, 16))
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[:2, :2] = [0, 180, 0]
    write_png(tmp_path / "data" / "masks" / "p02_z001.png", rgb)
    result = run_cli(
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


@pytest.mark.once
def test_a_misspelled_key_stops_the_command_with_its_name(tmp_path):
    result = run_cli("train", "trainer.reduer_patience=3", cwd=tmp_path)
    assert result.returncode == 2
    assert "reduer_patience" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "outputs").exists()  # nothing was started


@pytest.mark.once
def test_a_key_of_another_command_is_refused_with_its_name(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    result = run_cli("infer", f"run_dir={run_dir}", "input=scans", "trainer.epochs=3", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and "'trainer'" in result.stderr
    assert "infer takes run_dir, input, output" in result.stderr
    assert list(run_dir.iterdir()) == []  # refused before Hydra made its log folder


@pytest.mark.once
def test_an_unknown_command_says_which_there_are(tmp_path):
    result = run_cli("trian", "trainer.epochs=3", cwd=tmp_path)
    assert result.returncode == 2
    assert (
        "unknown command 'trian'" in result.stderr
        and "{check,demo,evaluate,export,infer,launch," in result.stderr
    )


def test_check_prints_the_plan_of_the_builtin_sample_and_exits_0(tmp_path):
    result = run_cli("check", "experiment=demo", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "check passed: no problems found" in result.stdout
    for line in ("backend ", "train       ", "test        ", "GFLOP per image", "output "):
        assert line in result.stdout
    assert not list((tmp_path / "outputs").glob("ms_lesjak/2*"))  # no run folder was made


@pytest.mark.once
def test_check_names_every_hostile_file_in_one_report_and_exits_2(tmp_path):
    """Valid pairs, plus: an empty image, a mask of another size, a header declaring 40000 x
    40000 pixels, a mask cut before its end, a 0/100/200 mask read with a 0/255 map, a folder
    named like a mask, and an image without a mask."""
    data = tmp_path / "data"
    make_flat_dataset(data, slices=3, size=(16, 16))
    (data / "images" / "p01_z000.png").write_bytes(b"")
    write_png(data / "masks" / "p03_z001.png", np.zeros((8, 8), np.uint8))
    huge = data / "images" / "p02_z000.png"
    huge.write_bytes(huge_header("png", 40_000, 40_000))
    cut = data / "masks" / "p02_z001.png"
    cut.write_bytes(cut.read_bytes()[:-12])
    three = np.zeros((16, 16), np.uint8)
    three[2:8, 2:8], three[9:15, 9:15] = 100, 200
    write_png(data / "masks" / "p03_z000.png", three)
    (data / "masks" / "p01_z001.png").unlink()
    (data / "masks" / "p01_z001.png").mkdir()
    (data / "masks" / "p02_z002.png").unlink()
    result = run_cli(
        "check",
        f"dataset.root={data}",
        "dataset.image_size=[16,16]",
        "dataset.split.groups={train:[p01,p02],test:[p03]}",
        cwd=tmp_path,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "found 7 problem(s):" in result.stderr, result.stderr
    for name in ("images/p01_z000.png", "masks/p03_z001.png", "images/p02_z000.png",
                 "masks/p02_z001.png", "masks/p03_z000.png", "masks/p01_z001.png",
                 "p02_z002.png"):  # fmt: skip
        assert name in result.stderr, name
    assert "40000x40000" in result.stderr and "lie inside regions" in result.stderr


@pytest.mark.once
def test_check_names_every_bad_volume_in_one_report_and_exits_2(tmp_path):
    """An nnU-Net folder of valid cases and one case per bad-volume class: each bad file is
    named in one report, the valid ones are not."""
    data = tmp_path / "data"
    names = [f"p{k:02d}" for k in range(1, 15)]
    make_volume_dataset(data, names, shape=(12, 10, 6))
    images, labels = data / "imagesTr", data / "labelsTr"
    shape, box = (12, 10, 6), np.zeros((12, 10, 6), np.uint8)
    box[2:6, 2:6, 1:4] = 1
    nan = np.full(shape, 300, np.float32)
    nan[3, 3, 3] = np.nan
    write_nifti(images / "p03_0000.nii.gz", nan)
    write_nifti(labels / "p04.nii.gz", box * np.float32(0.5))
    write_nifti(labels / "p05.nii.gz", np.stack([box, box], -1))
    write_nifti(labels / "p06.nii.gz", np.ones((12, 10, 7), np.uint8))
    write_nifti(labels / "p07.nii.gz", box, np.diag([1.0, 1.0, 3.0, 1.0]))
    write_nifti(labels / "p08.nii.gz", np.zeros(shape, np.uint8))
    write_nifti(labels / "p09.nii.gz", box * 4)
    header = nib.Nifti1Header()
    header.set_data_shape((2048, 2048, 2048))
    (images / "p10_0000.nii.gz").write_bytes(gzip.compress(header.binaryblock + bytes(4)))
    cut = images / "p11_0001.nii.gz"
    cut.write_bytes(cut.read_bytes()[:300])
    corrupt = labels / "p12.nii.gz"
    corrupt.write_bytes(corrupt.read_bytes()[:-8] + bytes(8))
    write_nifti(images / "p13_0001.nii.gz", np.ones((*shape, 2), np.float32))
    write_nifti(images / "p14_0001.nii.gz", np.ones((12, 11, 6), np.float32))
    result = run_cli(
        "check",
        "experiment=demo_volumes",
        f"dataset.root={data}",
        "dataset.split.groups=null",
        "++dataset.split.fractions={train:1.0}",
        "dataset.max_voxels=1000000",
        cwd=tmp_path,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    expected = {
        "imagesTr/p03_0000.nii.gz": "NaN or infinite",
        "labelsTr/p04.nii.gz": "not whole numbers",
        "labelsTr/p05.nii.gz": "has 4 axes",
        "labelsTr/p06.nii.gz": "shape [12, 10, 7]",
        "labelsTr/p07.nii.gz": "an affine that places its voxels",
        "labelsTr/p08.nii.gz": "is empty",
        "labelsTr/p09.nii.gz": "class id 4",
        "imagesTr/p10_0000.nii.gz": "2048 x 2048 x 2048 voxels",
        "imagesTr/p11_0001.nii.gz": "truncated",
        "labelsTr/p12.nii.gz": "corrupt",
        "imagesTr/p13_0001.nii.gz": "one channel per file",
        "imagesTr/p14_0001.nii.gz": "shape [12, 11, 6]",
    }
    lines = result.stderr.splitlines()
    for name, what in expected.items():
        assert any(name in line and what in line for line in lines), (name, result.stderr)
    assert "p01" not in result.stderr and "p02" not in result.stderr


@pytest.mark.once
def test_a_sweep_runs_every_combination_and_writes_a_summary(tmp_path):
    sweep = multirun(tmp_path, "trainer.learning_rate=0.001,0.0003", "model.base_filters=2,4")
    with (sweep / "sweep_summary.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["job"]) for r in rows] == [0, 1, 2, 3]
    assert {r["overrides"] for r in rows} == {
        f"trainer.learning_rate={lr} model.base_filters={bf}"
        for lr in ("0.001", "0.0003")
        for bf in (2, 4)
    }
    for r in rows:
        assert 0.0 <= float(r["best_val_fg_dice"]) <= 1.0 and r["backend"]
        assert (sweep / r["job"] / "checkpoints" / "best.keras").is_file()
    table = (sweep / "sweep_summary.md").read_text()
    assert table.count("\n") == 6 and "model.base_filters=4" in table


@pytest.mark.once
def test_a_cross_validation_sweep_validates_each_patient_once_and_summarises(tmp_path):
    sweep = multirun(tmp_path, "dataset.split.folds=3", "dataset.split.fold=0,1,2")
    valid = [yaml.safe_load((sweep / job / "config.yaml").read_text()) for job in "012"]
    assert [c["dataset"]["split"]["fold"] for c in valid] == [0, 1, 2]
    with (sweep / "cv_summary.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["fold"], r["job"]) for r in rows] == [("0", "0"), ("1", "1"), ("2", "2")]
    dice = np.array([float(r["best_val_fg_dice"]) for r in rows])
    table = (sweep / "cv_summary.md").read_text()
    assert "3 of 3 folds" in table
    assert f"{dice.mean():.4f} +- {dice.std(ddof=1):.4f}" in table


@pytest.mark.once
def test_an_optuna_search_runs_its_trials_and_reports_the_best(tmp_path):
    sweep = multirun(tmp_path, "hparams_search=optuna", "hydra.sweeper.n_trials=2")
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["name"] == "optuna"
    assert set(best["best_params"]) == {
        "trainer.learning_rate", "model.base_filters", "model.dropout_rate", "loss"
    }  # fmt: skip
    with (sweep / "sweep_summary.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2
    assert best["best_value"] == pytest.approx(max(float(r["best_val_fg_dice"]) for r in rows))


@pytest.mark.once
def test_a_submitit_local_job_trains(tmp_path):
    sweep = multirun(tmp_path, "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10")
    assert (sweep / "0" / "checkpoints" / "best.keras").is_file()
    assert list((sweep / ".submitit").glob("*/*_result.pkl"))  # submitit ran it


def test_evaluate_and_infer_into_a_log_file_print_no_bar_and_end_with_one_line(trained, tmp_path):
    """stdout is a pipe here, as a log file is: no carriage return or escape code, and the
    last line sums the command up."""
    root, run_dir, _ = trained
    evaluated = run_cli("evaluate", f"run_dir={run_dir}", cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    inferred = run_cli(
        "infer", f"run_dir={run_dir}", f"input={root / 'images'}", f"output={tmp_path / 'p'}",
        cwd=tmp_path,
    )  # fmt: skip
    assert inferred.returncode == 0, inferred.stderr[-2000:]
    for result in (evaluated, inferred):
        assert "\r" not in result.stdout and "\x1b" not in result.stdout
    last = evaluated.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"fg_dice_volume=\d\.\d{4} split=test images=\d+ written_to=\S+", last)
    assert inferred.stdout.strip().splitlines()[-1].startswith("predicted 18 image(s) into ")


@pytest.mark.once
@pytest.mark.parametrize(
    ("run_dir", "message"),
    [("notarun", "holds no config.yaml: it is not a training run's folder"),
     ("missing", "run_dir=missing does not exist"),
     ("afile", "run_dir=afile is a file"),
     ("", "run_dir must be a path or a list of paths, not empty")],
)  # fmt: skip
def test_a_run_dir_that_is_no_run_is_one_line_and_nothing_is_made_in_it(tmp_path, run_dir, message):
    (tmp_path / "notarun").mkdir()
    (tmp_path / "notarun" / "notes.txt").write_text("mine")
    (tmp_path / "afile").write_text("x")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    result = run_cli("infer", f"run_dir={run_dir}", "input=scans", cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


@pytest.mark.once
def test_a_training_into_a_used_run_folder_leaves_it_as_it_was(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / ".hydra").mkdir()
    (run / ".hydra" / "config.yaml").write_text("the earlier run's config\n")
    (run / "history.csv").write_text("epoch,loss\n0,1.0\n")
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    result = run_cli("train", f"hydra.run.dir={run}", "trainer.epochs=1", cwd=tmp_path)
    assert result.returncode == 2 and "already holds a training run" in result.stderr
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
