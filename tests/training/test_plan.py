"""The training plan: every bad input gets one clear error that names the file or the key,
before compute is spent.

Each case breaks a tiny valid dataset or config in one way and checks that the message names
exactly what is wrong.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from flexseg.commands._compose import load_config
from flexseg.errors import ConfigError, DataError, PreflightError
from flexseg.training import make_plan
from tests.helpers import TINY_RUN, make_flat_dataset, write_png

BASE = [
    *TINY_RUN,
    "dataset.cache=none",
    "dataset.split.groups={train:[p01,p02],test:[p03]}",
    "dataset.split.holdout_fraction=0.0",
    "trainer.epochs=1",
    "trainer.batch_size=2",
    "trainer.preview_images=0",
    "augment=none",
]
RGB_MAP = (
    "dataset.rgb_map=[{name:background,color:[0,0,0],id:0},{name:lesion,color:[255,255,255],id:1}]"
)


def remove(relative):
    def apply(root):
        target = root / relative
        shutil.rmtree(target) if target.is_dir() else target.unlink()

    return apply


def empty_folder(relative):
    def apply(root):
        for path in (root / relative).iterdir():
            path.unlink()

    return apply


def write(relative, data):
    def apply(root):
        path = root / relative
        if isinstance(data, bytes):
            path.write_bytes(data)
        else:
            write_png(path, data)

    return apply


def truncate(relative):
    def apply(root):
        path = root / relative
        path.write_bytes(path.read_bytes()[:60])

    return apply


def larger(stem):
    def apply(root):
        for folder in ("images", "masks"):
            write_png(root / folder / f"{stem}.png", np.zeros((40, 40), np.uint8))

    return apply


GREEN = np.zeros((30, 28, 3), np.uint8)
GREEN[:4, :4] = [0, 255, 0]

# (case, change to the dataset, config overrides, text the one error must contain)
CASES = [
    ("missing image folder", remove("images"), [], ["images does not exist"]),
    ("empty mask folder", empty_folder("masks"), [], ["masks holds no images"]),
    ("image without mask", remove("masks/p01_z001.png"), [], ["p01_z001.png"]),
    ("mask without image", remove("images/p02_z000.png"), [], ["p02_z000.png"]),
    ("truncated image", truncate("images/p01_z002.png"), [], ["p01_z002.png", "truncated"]),
    ("empty image file", write("images/p02_z002.png", b""), [], ["p02_z002.png", "empty"]),
    ("truncated mask", truncate("masks/p03_z000.png"), [], ["p03_z000.png"]),
    ("non-image file", write("images/notes.txt", b"x"), [], ["notes.txt"]),
    ("unknown mask colour", write("masks/p02_z001.png", GREEN), [RGB_MAP],
     ["p02_z001.png", "[0, 255, 0]", "dataset.rgb_map"]),
    ("class id beyond num_classes", write("masks/p01_z000.png", np.full((30, 28), 7, np.uint8)),
     ["dataset.rgb_map=null"], ["p01_z000.png", "values [7]", "dataset.num_classes"]),
    ("image and mask sizes differ", write("masks/p03_z001.png", np.zeros((20, 20), np.uint8)),
     [], ["p03_z001.png", "28x30", "20x20"]),
    ("image larger than the padded size", larger("p02_z003"), [],
     ["p02_z003.png", "dataset.image_size"]),
    ("model and dataset channels differ", None, ["model.input_shape=[32,32,3]"],
     ["model.input_shape", "dataset.channels=1"]),
    ("num_classes disagrees with rgb_map", None, [RGB_MAP, "dataset.num_classes=3"],
     ["dataset.num_classes=3", "dataset.rgb_map has 2 classes"]),
    ("size not divisible, no padding to it", None, ["dataset.image_size=[30,30]"],
     ["multiple of 4", "dataset.image_size"]),
    ("a split left empty", None,
     ["dataset.split.groups=null", "++dataset.split.fractions={train:0.8,valid:0.1,test:0.1}"],
     ["dataset.split.fractions.test"]),
    ("no training images", None, ["dataset.split.groups={train:[],test:[p03]}"],
     ["no training images", "dataset.split"]),
    ("group regex matches nothing", None, ["dataset.group_regex='^(q\\d+)_'"],
     ["dataset.group_regex", "p01_z000"]),
    ("dataset root missing", remove("."), [], ["dataset.root"]),
    ("schedule and plateau reducer", None, ["trainer.schedule=cosine"],
     ["trainer.reduce_lr.enabled=false"]),
    ("unknown checkpoint choice", None, ["trainer.select_checkpoint=final"],
     ["trainer.select_checkpoint"]),
    ("foreground fraction out of range", None, ["trainer.foreground_fraction=1.5"],
     ["trainer.foreground_fraction"]),
    ("wrong loss class weights", None, ["loss.class_weights=[1.0]"], ["loss.class_weights"]),
    ("post-processing without a valid split", None, ["postprocess=auto"],
     ["postprocess=auto", "valid split"]),
    ("stand-in channel beyond the channels", None, ["dataset.stand_in_channel=1"],
     ["dataset.stand_in_channel=1 is not a channel", "dataset.channels=1"]),
    ("stand-in probability without a channel", None, ["dataset.stand_in_p=0.5"],
     ["dataset.stand_in_p=0.5 needs dataset.stand_in_channel"]),
]  # fmt: skip


@pytest.fixture
def dataset(tmp_path):
    root = tmp_path / "data"
    make_flat_dataset(root, slices=4, size=(30, 28))
    return root


@pytest.mark.parametrize(
    ("change", "overrides", "expected"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_the_check_names_what_is_wrong(dataset, change, overrides, expected):
    if change is not None:
        change(dataset)
    with pytest.raises((PreflightError, ConfigError, DataError)) as info:
        make_plan(load_config([f"dataset.root={dataset}", *BASE, *overrides]))
    for text in expected:
        assert text in str(info.value)


def test_every_bad_file_is_listed_in_one_report(dataset):
    truncate("images/p01_z002.png")(dataset)
    write("masks/p03_z001.png", np.zeros((20, 20), np.uint8))(dataset)
    with pytest.raises(PreflightError) as info:
        make_plan(load_config([f"dataset.root={dataset}", *BASE]), outcome="nothing was trained")
    assert "found 2 problem(s); nothing was trained" in str(info.value)
    assert "p01_z002.png" in str(info.value) and "p03_z001.png" in str(info.value)


def test_a_clean_config_passes_and_plans_with_what_training_uses(dataset):
    plan = make_plan(load_config([f"dataset.root={dataset}", *BASE, "loss=focal"]))
    text = plan.describe()
    assert "train       8 images of 2 groups" in text
    assert "test        4 images of 1 groups" in text
    assert f"{plan.model.count_params():,} parameters" in text
    assert plan.loss.name == "focal" and plan.model.input_shape == (None, 32, 32, 1)
    assert set(plan.datasets) == {"train", "test"} and plan.datasets["train"].augment is None
    assert "loader      in the training process (trainer.workers=0)" in text


def test_the_plan_says_where_the_cache_is_and_how_the_loader_runs(dataset, tmp_path):
    overrides = ["dataset.cache=disk", f"dataset.cache_dir={tmp_path}", "trainer.workers=2"]
    plan = make_plan(load_config([f"dataset.root={dataset}", *BASE, *overrides]))
    text = plan.describe()
    assert "2 worker processes (trainer.workers=2), up to 4 batches in flight" in text
    train, test = plan.datasets["train"], plan.datasets["test"]
    assert train.pool is test.pool  # one set of processes for every split
    assert f"cache       train: disk, 0 MiB in {train.cache.folder} (built in" in text
    assert train.cache.folder.parent == tmp_path and train.cache.folder != test.cache.folder
    again = make_plan(load_config([f"dataset.root={dataset}", *BASE, *overrides]))
    assert f"cache       test: disk, 0 MiB in {test.cache.folder} (reused)" in again.describe()


def test_without_an_image_size_each_image_is_padded_to_the_model_multiple(dataset):
    plan = make_plan(load_config([f"dataset.root={dataset}", *BASE, "dataset.image_size=null"]))
    assert plan.model.input_shape == (None, None, None, 1)
    assert plan.datasets["train"][0][0].shape == (2, 32, 28, 1)  # 30 x 28 padded to 4s
    assert "any input size" in plan.describe()


@pytest.mark.once
def test_dataset_zscore_takes_its_statistics_from_the_training_cases(tmp_path):
    """CT-like volumes: the plan computes each channel's clip bounds, mean and std over the
    training cases' foreground, records them in the config, and the slices read with them."""
    from flexseg.data.volumes import foreground_intensities
    from tests.helpers import make_volume_dataset

    make_volume_dataset(tmp_path, shape=(12, 10, 6), channels=1)
    volume_run = [
        *BASE,
        "dataset.layout=auto",
        "dataset.group_regex=null",
        "dataset.rgb_map=null",
        "dataset.channels=1",
        "dataset.normalize=dataset_zscore",
        "dataset.split.groups={train:[p01,p02],test:[p03]}",
    ]
    cfg = load_config([f"dataset.root={tmp_path}", *volume_run])
    plan = make_plan(cfg)
    stats = cfg.dataset.intensity_stats
    cases = [((tmp_path / "imagesTr" / f"{c}_0000.nii.gz",), tmp_path / "labelsTr" / f"{c}.nii.gz")
             for c in ("p01", "p02")]  # fmt: skip
    assert len(stats) == 1  # one channel
    assert stats[0] == pytest.approx(foreground_intensities(cases)[0], abs=1e-5)
    low, high, mean, std = stats[0]
    assert 800 < mean < 1000 and 0 < std < 100 and low < mean < high  # the bright boxes
    train = plan.datasets["train"]
    loaded = [train.load(i) for i in range(len(train.samples))]
    foreground = np.concatenate([image[mask > 0].ravel() for image, mask in loaded])
    assert foreground.mean() == pytest.approx(0, abs=0.5)  # the foreground near 0
    # given by hand, the statistics are kept as they are
    given = load_config(
        [f"dataset.root={tmp_path}", *volume_run, "dataset.intensity_stats=[[0,2000,900,50]]"]
    )
    make_plan(given)
    assert given.dataset.intensity_stats == [[0, 2000, 900, 50]]
