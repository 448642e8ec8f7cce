"""Every command's config composes from conf/, and every option of every group builds."""

from __future__ import annotations

import importlib
import typing

import pytest

from flexseg import commands
from flexseg.commands._compose import CONF_DIR, load_config
from flexseg.config import instantiate
from flexseg.data.transforms import build_augmentation
from flexseg.errors import ConfigError
from flexseg.from_config import colormap_of, read_spec
from flexseg.losses import build_loss
from flexseg.training.setup import build_optimizer
from tests.helpers import shapes_only

GROUPS = ("model", "dataset", "augment", "loss", "trainer")
# options without a built-in dataset
NEEDS_ROOT = {
    "lgg",
    "lgg_cv",
    "reference_t2",
    "hippocampus",
    "hippocampus_2d",
    "hippocampus_3d",
    "folder",
}
# augmentations of 3D patches, composed with a 3D run
PATCHES = {"volumes_3d": ["dataset=ms_lesjak_volumes", "dataset.patch_size=[16,16,16]",
           "model.spatial_dims=3", "dataset.split.holdout_fraction=0"]}  # fmt: skip


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


@pytest.mark.parametrize(
    ("group", "option"),
    [(g, o) for g in GROUPS for o in options(g)]
    + [("experiment", o) for o in options("experiment")],
)
def test_every_option_composes_and_builds(group, option, tmp_path):
    overrides = [f"{group}={option}"]
    if option in NEEDS_ROOT:
        overrides.append(f"dataset.root={tmp_path}")
    cfg = load_config([*overrides, *PATCHES.get(option, [])])
    if group == "model":
        # Shapes only, a small input; every other value is the option's own.
        model = shapes_only(instantiate, cfg.model, input_shape=[64, 64, cfg.dataset.channels])
        assert model.count_params() > 0
    read_spec(cfg.dataset, cfg.model.size_multiple)
    cmap = colormap_of(cfg.dataset)
    assert cmap is None or cmap.num_classes == cfg.dataset.num_classes
    build_augmentation(cfg.augment.transforms, cfg.dataset.patch_size or cfg.dataset.image_size)
    build_loss(cfg.loss, cfg.dataset.num_classes)
    build_optimizer(cfg.trainer)


HYDRA_COMMANDS = [name for name in commands.names() if name != "launch"]  # launch: argparse


@pytest.mark.parametrize("command", HYDRA_COMMANDS)
def test_every_command_has_its_own_config_of_the_schema_its_main_takes(command):
    required = {
        "evaluate": ["run_dir=r"],
        "infer": ["run_dir=r", "input=i"],
        "export": ["run_dir=r"],
        "plan": ["dataset.root=d"],
    }
    module = command.replace("-", "_")
    cfg = load_config(required.get(command, []), module)
    main = importlib.import_module(f"flexseg.commands.{module}").main.__wrapped__
    assert type(cfg) is typing.get_type_hints(main)["cfg"]
    assert (CONF_DIR / f"{module}.yaml").is_file()


def test_the_commands_are_the_modules_of_the_command_package():
    assert set(HYDRA_COMMANDS) == {
        "train", "check", "demo", "evaluate", "infer", "export", "stats", "preview-augment",
        "plan",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("command", "overrides", "key"),
    [
        ("train", ["trainer.reduer_patience=3"], "reduer_patience"),  # the reference's silent typo
        ("train", ["+trainer.reduce_lr.patiense=3"], "trainer.reduce_lr.patiense"),
        ("train", ["+seeds=1"], "seeds"),
        ("train", ["trainer.epochs=many"], "trainer.epochs"),
        ("train", ["model.base_filter=8"], "base_filter"),
        ("train", ["dataset=nope"], "dataset/nope"),
        ("train", ["loss=focal", "loss.alpha=0.5"], "alpha"),
        ("train", ["run_dir=r"], "run_dir"),
        ("infer", ["run_dir=r", "input=i", "trainer.epochs=3"], "trainer"),
        ("evaluate", ["run_dir=r", "dataset.root=d"], "dataset"),
        ("stats", ["model.base_filters=8"], "model"),
        ("stats", ["experiment=lgg"], "experiment"),
    ],
)
def test_unknown_keys_and_wrong_types_are_errors_that_name_the_key(command, overrides, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(overrides, command)


@pytest.mark.parametrize(
    ("command", "overrides", "key"),
    [("train", ["dataset=lgg"], "dataset.root"), ("evaluate", [], "run_dir"),
     ("infer", ["run_dir=r"], "input")],
)  # fmt: skip
def test_required_values_are_named(command, overrides, key):
    with pytest.raises(ConfigError, match=f"{key} is required"):
        load_config(overrides, command)


def test_the_model_follows_the_dataset():
    cfg = load_config(
        ["dataset.num_classes=3", "dataset.image_size=[96,64]", "dataset.rgb_map=null"]
    )
    assert cfg.model.num_classes == 3
    assert cfg.model.input_shape == [96, 64, 1]


def test_the_slurm_launcher_takes_its_settings_from_the_environment(monkeypatch):
    from hydra import compose, initialize_config_dir

    from flexseg.commands._compose import register

    register()
    monkeypatch.setenv("SBATCH_PARTITION", "gpu")
    monkeypatch.setenv("FLEXSEG_GPUS_PER_NODE", "4")
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "train", ["hydra/launcher=slurm", "hydra.launcher.mem_gb=64"], return_hydra_config=True
        )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.partition, launcher.account) == ("gpu", None)
    assert (launcher.gpus_per_node, launcher.mem_gb, launcher.timeout_min) == (4, 64, 240)
    assert launcher.max_num_timeout > 0  # requeued at the time limit


def test_the_cross_validation_recipe_sweeps_every_fold_and_keeps_the_rest_of_lgg(tmp_path):
    """`flexseg-train -m experiment=lgg_cv` runs each fold once; a fold's run is the lgg recipe
    but for the settings the recipe names."""
    from hydra import compose, initialize_config_dir

    from flexseg.commands._compose import register

    register()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", ["experiment=lgg_cv", f"dataset.root={tmp_path}"],
                      return_hydra_config=True)  # fmt: skip
    swept = cfg.hydra.sweeper.params["dataset.split.fold"].split(",")
    assert sorted(int(k) for k in swept) == list(range(cfg.dataset.split.folds))
    lgg = load_config(["experiment=lgg", f"dataset.root={tmp_path}"])
    cv = load_config(["experiment=lgg_cv", f"dataset.root={tmp_path}"])
    assert cv.dataset.split.fractions == lgg.dataset.split.fractions  # the same test patients
    changed = {"split", "epochs", "max_minutes", "foreground_prior"}
    for group in ("dataset", "model", "trainer", "augment", "loss"):
        a, b = getattr(lgg, group), getattr(cv, group)
        differ = {k for k in vars(a) if getattr(a, k) != getattr(b, k)}
        assert differ <= changed, (group, differ)


@pytest.mark.parametrize("value", ["/data/scans (copy)", "/data/Müller", "/data/a,b"])
def test_a_path_hydra_cannot_read_is_one_line_saying_how_to_quote_it(value):
    with pytest.raises(ConfigError) as info:
        load_config([f"dataset.root={value}"])
    message = str(info.value)
    assert "\n" not in message and "quote the value" in message
    quoted = message.rpartition("in the shell as ")[2].strip('"')
    assert load_config([quoted]).dataset.root == value  # what it says to type works
