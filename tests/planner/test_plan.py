"""flexseg-plan: fingerprints of hand-made data, the rules' decisions, the same plan from the
same numbers, and a written plan that composes and trains."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from flexseg.config.schema import DatasetConfig, PlanConfig, PlanningConfig
from flexseg.planner import planning
from flexseg.planner.planning import planned_fingerprint
from flexseg.planner.recipe import Machine, Timing, plan_recipe
from tests.helpers import make_volume_dataset, write_png

CPU = Machine("cpu", "test cpu", 16 * 2**30, 16 * 2**30, "tensorflow", 2)


def voxel_timer(seconds_per_megavoxel: float = 2.0):
    """A stand-in for the measured step: time in proportion to the voxels of a batch."""
    calls = []

    def timer(args: dict, batch: int) -> Timing:
        calls.append((json.dumps(args, sort_keys=True), batch))
        voxels = batch * float(np.prod(args["input_shape"][:-1]))
        step = seconds_per_megavoxel * voxels / 1e6
        return Timing(step, step / 3, 5.0, int(voxels * 400))

    timer.calls = calls
    return timer


def write_images(root, groups=("p01", "p02"), slices=3, size=(40, 56), copied=(), seed=0):
    """RGB images: zero outside a central block of value 100 (channel 0), 150 and 200, and a
    square of 12 x 12 foreground pixels whose channels are 10, 20 and 30 higher; the images
    of `copied` groups have channel 0 in every channel."""
    rng = np.random.default_rng(seed)
    for group in groups:
        for z in range(slices):
            image = np.zeros((*size, 3), np.uint8)
            image[4:-4, 4:-4] = [100, 150, 200]
            mask = np.zeros(size, np.uint8)
            top, left = (int(v) for v in rng.integers(5, 20, 2))
            mask[top : top + 12, left : left + 12] = 1
            image[mask > 0] += np.array([10, 20, 30], np.uint8)
            if group in copied:
                image[...] = image[..., :1]
            write_png(root / "images" / f"{group}_z{z:03d}.png", image)
            write_png(root / "masks" / f"{group}_z{z:03d}.png", mask)


def plan_config(root, **dataset) -> PlanConfig:
    settings = {"name": "test", "root": str(root), "group_regex": r"^(p\d+)_", **dataset}
    settings.setdefault("split", {"fractions": {"train": 0.5, "valid": 0.25, "test": 0.25}})
    return PlanConfig(dataset=DatasetConfig(**settings), plan=PlanningConfig(workers=0, minutes=30))


def test_fingerprint_of_images_gives_sizes_percentiles_objects_and_copied_channels(tmp_path):
    write_images(tmp_path, groups=("p01", "p02", "p03", "p04"), copied=("p02",))
    cfg = plan_config(
        tmp_path, channels=3, split={"groups": {"train": ["p01", "p02", "p03"], "valid": ["p04"]}}
    )
    fp, counts = planned_fingerprint(cfg, workers=0)
    assert (
        fp["kind"] == "images"
        and fp["samples"] == 12
        and counts == {"train": 9, "valid": 3, "test": 0, "valid_groups": 1}
    )
    assert fp["sizes"]["median"] == [40.0, 56.0] and fp["channels"] == 3
    assert fp["labels_found"] == [0, 1]
    assert fp["objects"]["1"]["median"] == 144 and fp["objects"]["1"]["per_sample"] == 1.0
    fg = fp["intensity"]["foreground"]
    # channel 0 is 110 on the foreground in every image, copied ones included
    assert fg[0]["percentiles"]["0.5"] == fg[0]["percentiles"]["99.5"] == 110.0
    assert fg[2]["percentiles"]["50"] == 230.0  # the copied group's 110 stays below the median
    zero = (40 * 56 - 32 * 48) / (40 * 56)
    assert fp["intensity"]["zero_fraction"][0] == pytest.approx(zero)
    assert fp["copied_channels"]["groups"] == ["p02"]
    assert fp["copied_channels"]["closest_channel"] == 0  # the copies are channel 0's values
    assert fp["images_per_group"]["median"] == [3.0]


def test_fingerprint_is_cached_by_files_and_leaves_out_the_test_split(tmp_path):
    write_images(tmp_path / "data", groups=("p01", "p02", "p03", "p04"))
    cfg = plan_config(tmp_path / "data")
    cfg.plan.cache_dir = str(tmp_path / "cache")
    first, counts = planned_fingerprint(cfg, workers=0)
    assert not first["cached"] and "test" not in first["splits_used"]
    assert (
        sum(first["splits_used"].values())
        == first["samples"]
        == 9
        == counts["train"] + counts["valid"]
    )
    again, _ = planned_fingerprint(cfg, workers=0)
    assert again["cached"] and again["key"] == first["key"]
    # a changed file makes a new key
    write_png(tmp_path / "data" / "masks" / "p01_z000.png", np.zeros((40, 56), np.uint8))
    changed, _ = planned_fingerprint(cfg, workers=0)
    assert not changed["cached"] and changed["key"] != first["key"]


def test_images_planned_with_a_holdout_keep_it_as_their_validation(tmp_path):
    write_images(tmp_path, groups=("p01", "p02"), slices=4)
    split = {"groups": {"train": ["p01", "p02"], "valid": []}, "holdout_fraction": 0.25}
    cfg = plan_config(tmp_path, split=split)
    _, counts = planned_fingerprint(cfg, workers=0)
    assert counts["valid"] == 2 and counts["train"] == 6  # a block of 1 slice per group
    assert cfg.dataset.split.holdout_fraction == 0.25  # the config itself untouched


def test_worker_processes_compute_the_same_fingerprint(tmp_path):
    write_images(tmp_path, groups=("p01", "p02", "p03", "p04"), slices=3)
    cfg = plan_config(tmp_path)
    alone, _ = planned_fingerprint(cfg, workers=0)
    cfg.plan.refresh = True
    pooled, _ = planned_fingerprint(cfg, workers=2)
    strip = ("cached", "seconds", "workers")
    assert {k: v for k, v in alone.items() if k not in strip} == {
        k: v for k, v in pooled.items() if k not in strip
    }


def test_volume_fingerprint_gives_spacings_anisotropy_and_the_2d_or_3d_choice(tmp_path):
    iso, aniso = tmp_path / "iso", tmp_path / "aniso"
    make_volume_dataset(iso, cases=("p01", "p02", "p03", "p04"), shape=(16, 16, 16), channels=1)
    make_volume_dataset(
        aniso, cases=("p01", "p02", "p03", "p04"), shape=(16, 16, 8), channels=1,
        affine=np.diag([0.8, 0.8, 4.0, 1.0]),
    )  # fmt: skip
    for root, spacing, dims in ((iso, [1.0, 1.0, 1.0], 3), (aniso, [0.8, 0.8, 4.0], 2)):
        cfg = plan_config(root, layout="nnunet", group_regex=None, normalize="volume_zscore")
        fp, counts = planned_fingerprint(cfg, workers=0)
        assert fp["kind"] == "volumes" and fp["spacing_mm"]["median"] == spacing
        assert fp["anisotropy"] == pytest.approx(max(spacing) / min(spacing))
        # the box is base + 600 in noise of mean 300: the foreground is near 900
        assert 800 < fp["intensity"]["foreground"][0]["percentiles"]["50"] < 1000
        recipe = planning.make_recipe(
            cfg, fp, counts, CPU, voxel_timer(), started=0.0, clock=lambda: 0.0
        )
        assert recipe.get("model.spatial_dims") == dims
        assert recipe.get("dataset.normalize") == "volume_zscore"
        if dims == 3:
            assert recipe.get("dataset.patch_size") == [16, 16, 16]
            assert recipe.groups["augment"] == "volumes_3d"
        else:
            assert recipe.get("dataset.patch_size") is None
            assert "anisotropic" in recipe.reasons["model.spatial_dims"]


def fake_fingerprint(**changes) -> dict:
    fp = {
        "kind": "images", "samples": 400, "groups": 40, "channels": 3,
        "sizes": {"median": [256.0, 256.0], "min": [256.0, 256.0], "max": [256.0, 256.0]},
        "labels_found": [0, 1], "samples_with_foreground": 0.35,
        "objects": {"1": {"median": 1500.0}},
        "intensity": {"zero_fraction": [0.4, 0.4, 0.4],
                      "foreground": [{"percentiles": {"0.5": 10.0}}] * 3},
        "copied_channels": {"groups": ["p03"], "share_of_groups": 0.1, "closest_channel": 1},
        "images_per_group": {"median": [10.0]},
    }  # fmt: skip
    fp.update(changes)
    return fp


def test_same_fingerprint_and_machine_give_the_same_plan():
    splits = {"train": 300, "valid": 50, "test": 50}
    plans = [
        plan_recipe(fake_fingerprint(), CPU, voxel_timer(), lambda: 1500.0, splits, 2)
        for _ in range(2)
    ]
    assert plans[0].settings == plans[1].settings and plans[0].reasons == plans[1].reasons
    assert plans[0].groups == plans[1].groups


def test_too_few_epochs_halve_the_resolution_unless_objects_get_too_small():
    splits = {"train": 300, "valid": 50, "test": 50}
    slow = voxel_timer(seconds_per_megavoxel=5.0)  # a 256^2 batch of 16: 5.2 s a step
    big = plan_recipe(fake_fingerprint(), CPU, slow, lambda: 1500.0, splits, 2)
    assert big.get("dataset.image_size") == [128, 128]
    assert big.get("dataset.size_policy") == "resize"
    assert "downscaled 2x" in big.reasons["dataset.image_size"]
    assert big.get("trainer.epochs") >= 40
    assert big.get("trainer.foreground_fraction") == 0.5  # 35% with foreground
    assert big.get("dataset.stand_in_channel") == 1
    assert big.get("dataset.normalize") == "group_zscore"
    assert big.get("postprocess") == "auto"  # 50 validation images, each its own group
    few = plan_recipe(fake_fingerprint(), CPU, slow, lambda: 1500.0, splits, 2, valid_groups=8)
    assert few.get("postprocess") == "none" and "too few" in few.reasons["postprocess"]
    tiny = fake_fingerprint(objects={"1": {"median": 20.0}})  # small lesions stay full size
    kept = plan_recipe(tiny, CPU, slow, lambda: 1500.0, splits, 2)
    assert kept.get("dataset.image_size") == [256, 256]
    assert kept.get("trainer.epochs") < 40
    fast = plan_recipe(fake_fingerprint(), CPU, voxel_timer(0.01), lambda: 1500.0, splits, 2)
    assert fast.get("dataset.image_size") == [256, 256]
    assert fast.get("dataset.size_policy") == "pad"  # every image 256 x 256
    varied = fake_fingerprint(
        sizes={"median": [300.0, 420.0], "min": [200.0, 250.0], "max": [600.0, 800.0]}
    )
    photos = plan_recipe(varied, CPU, voxel_timer(0.01), lambda: 1500.0, splits, 2)
    assert photos.get("dataset.size_policy") == "resize"  # sizes vary: each to the median
    assert photos.get("dataset.image_size") == [304, 432]  # up to multiples of 16
    assert "sizes vary" in photos.reasons["dataset.image_size"]


def test_epochs_fit_the_budget_and_a_3d_patch_shrinks_to_fit():
    fp = fake_fingerprint(
        kind="volumes", channels=1, samples=20,
        sizes={"median": [160.0, 192.0, 160.0], "min": [150.0] * 3, "max": [200.0] * 3},
        spacing_mm={"median": [1.0, 1.0, 1.0]}, anisotropy=1.0,
    )  # fmt: skip
    splits = {"train": 16, "valid": 4, "test": 4}
    timer = voxel_timer(0.5)
    recipe = plan_recipe(fp, CPU, timer, lambda: 1500.0, splits, 2)
    patch = recipe.get("dataset.patch_size")
    assert recipe.get("model.spatial_dims") == 3 and np.prod(patch) < 160 * 192 * 160
    assert "shrunk" in recipe.reasons["dataset.patch_size"]
    assert recipe.get("trainer.patches_per_epoch") == 50  # 25 batches of 2
    epoch_s = recipe.estimate["epoch_s"]
    epochs = recipe.get("trainer.epochs")
    assert epochs >= 15 and epochs * epoch_s <= 1500.0
    assert recipe.get("trainer.max_minutes") * 60 <= 1500.0
    # the chosen patch was measured, not only estimated
    assert json.loads(timer.calls[-1][0])["input_shape"][:3] == patch
    ct = dict(fp, intensity={"zero_fraction": [0.0],
                             "foreground": [{"percentiles": {"0.5": -900.0}}]})  # fmt: skip
    assert (
        plan_recipe(ct, CPU, timer, lambda: 1500.0, splits, 2).get("dataset.normalize")
        == "dataset_zscore"
    )


def test_a_written_plan_composes_and_trains_a_tiny_run(tmp_path):
    from flexseg import training
    from flexseg.commands._compose import load_config

    write_images(tmp_path / "data", groups=("p01", "p02", "p03", "p04"), size=(32, 32))
    cfg = plan_config(tmp_path / "data")
    fp, counts = planned_fingerprint(cfg, workers=0)
    recipe = planning.make_recipe(cfg, fp, counts, CPU, voxel_timer(), 0.0, lambda: 0.0)
    path = tmp_path / "plans" / "tiny.yaml"  # not in a folder named experiment/
    given = {"root": str(tmp_path / "data"), "name": "test", "group_regex": r"^(p\d+)_",
             "split": {"fractions": {"train": 0.5, "valid": 0.25, "test": 0.25}}}  # fmt: skip
    path.parent.mkdir()
    path.write_text(planning.experiment_text(recipe, "folder", given, fp, CPU, 30, path))
    text = path.read_text()
    assert "# the budget, less one epoch" in text and "flexseg-train experiment=" in text
    train_cfg = load_config([f"experiment={path}", "trainer.epochs=1", "trainer.max_minutes=null"])
    assert train_cfg.dataset.root == str(tmp_path / "data")
    assert train_cfg.dataset.image_size == recipe.get("dataset.image_size") == [32, 32]
    assert train_cfg.dataset.channels == 3 and train_cfg.model.normalization == "batch"
    assert train_cfg.trainer.schedule == "cosine" and train_cfg.postprocess == "none"  # 1 group
    train_cfg = dataclasses.replace(
        train_cfg, trainer=dataclasses.replace(train_cfg.trainer, batch_size=2, workers=0)
    )
    summary = training.train(train_cfg, tmp_path / "run")
    assert summary["epochs_run"] == 1 and (tmp_path / "run" / "checkpoints").is_dir()


def test_an_experiment_file_that_does_not_exist_is_named(tmp_path):
    from flexseg.commands._compose import load_config
    from flexseg.errors import ConfigError

    with pytest.raises(ConfigError, match=r"experiment=.*missing\.yaml: no such file"):
        load_config([f"experiment={tmp_path / 'missing.yaml'}"])


@pytest.mark.once
def test_flexseg_plan_writes_a_plan_that_flexseg_train_composes(tmp_path):
    from tests.helpers import run_cli

    groups = [f"p{i:02d}" for i in range(10)]  # 7 / 1 / 2 by the folder's fractions
    write_images(tmp_path / "data", groups=groups, slices=2, size=(32, 32))
    result = run_cli(
        "plan", f"dataset.root={tmp_path / 'data'}", "dataset.group_regex='^(p\\d+)_'",
        "plan.minutes=5", "plan.workers=0",
        f"plan.cache_dir={tmp_path / 'cache'}", "hydra.run.dir=plan", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    path = tmp_path / "plan" / "experiment" / "folder_plan.yaml"
    assert f"train it: flexseg-train experiment={path}" in result.stdout
    assert "image_size" in result.stdout and "epochs" in result.stdout  # the table
    plan = json.loads((tmp_path / "plan" / "plan.json").read_text())
    assert plan["settings"]["dataset"]["channels"] == 3 and plan["finite"]
    fp = json.loads((tmp_path / "plan" / "fingerprint.json").read_text())
    assert fp["samples"] == 16 and fp["sizes"]["median"] == [32.0, 32.0]
    assert "# @package _global_" in path.read_text()
