"""The schema: one place per default, checked values, and values derived once."""

from __future__ import annotations

import inspect
import sys

import pytest
import yaml

from flexseg.commands._compose import CONF_DIR, load_config
from flexseg.config import (
    DatasetConfig,
    EvaluateConfig,
    InferConfig,
    TrainConfig,
    TrainerConfig,
    as_dict,
    loss_schema,
    model_schema,
    parse,
)
from flexseg.config.schema import DEFAULT_MODEL, ExportConfig
from flexseg.errors import ConfigError
from flexseg.losses import LOSSES, CrossEntropyDice
from flexseg.models import MODELS, FlexUNet
from flexseg.runs import read_run_config

DATASET = {"name": "scans", "root": "data", "group_regex": r"^(p\d+)_"}


def test_a_config_written_in_python_equals_the_composed_one():
    """conf/ sets only what differs from the schema: the default options add nothing."""
    composed = load_config()
    written = TrainConfig(dataset=composed.dataset, augment=composed.augment)
    assert as_dict(written) == as_dict(composed)


def group_defaults() -> list[tuple[str, str]]:
    return [
        (group, path.stem)
        for group in ("model", "trainer", "loss")
        for path in sorted((CONF_DIR / group).glob("*.yaml"))
    ]


@pytest.mark.parametrize(("group", "option"), group_defaults())
def test_every_value_a_default_option_writes_equals_the_schema(group, option):
    values = yaml.safe_load((CONF_DIR / group / f"{option}.yaml").read_text()) or {}
    values.pop("defaults", None)
    schema = {
        "model": lambda: model_schema(MODELS[option])(),
        "trainer": TrainerConfig,
        "loss": lambda: loss_schema(option)(),
    }[group]()
    defaults = as_dict(schema)
    for key, value in values.items():
        assert value == defaults[key], f"conf/{group}/{option}.yaml sets {key}={value!r}"


def test_model_defaults_are_the_model_class_defaults():
    section = model_schema(DEFAULT_MODEL)()
    for name, parameter in inspect.signature(FlexUNet.__init__).parameters.items():
        if name in ("self", "kwargs", "input_shape", "num_classes"):
            continue
        assert getattr(section, name) == parameter.default, name
    assert section.input_shape is None and section.num_classes is None  # follow the dataset


def test_a_loss_section_holds_exactly_its_class_arguments():
    assert set(as_dict(loss_schema("ce_dice")())) == {
        "name", "class_weights", "dice_weight", "include_background", "smooth"
    }  # fmt: skip
    assert set(as_dict(loss_schema("focal")())) == {"name", "gamma"}
    defaults = inspect.signature(CrossEntropyDice.__init__).parameters
    assert loss_schema("ce_dice")().dice_weight == defaults["dice_weight"].default
    with pytest.raises(ConfigError, match="loss.name must be one of .*'tversky'"):
        loss_schema("dcie")
    assert set(LOSSES) == {p.stem for p in (CONF_DIR / "loss").glob("*.yaml")}


def test_model_and_loss_follow_the_dataset_unless_set():
    cfg = TrainConfig(dataset={**DATASET, "image_size": [96, 64], "channels": 3})
    assert cfg.model.input_shape == [96, 64, 3] and cfg.model.num_classes == 2
    assert cfg.loss.name == "ce_dice" and cfg.augment.transforms == []
    padded = TrainConfig(dataset=DATASET, model={"num_layers": 3, "input_shape": [32, 32, 1]})
    assert padded.model.input_shape == [32, 32, 1] and padded.model.size_multiple == 4
    assert TrainConfig(dataset=DATASET).model.input_shape == [None, None, 1]
    logits = TrainConfig(dataset=DATASET, model={"output": "logits"}, loss={"name": "focal"})
    assert logits.model.from_logits and logits.loss.gamma == 2.0


def test_parse_fills_defaults_and_converts_nested_sections():
    cfg = parse(TrainConfig, {"dataset": DATASET, "trainer": {"learning_rate": 1, "reduce_lr": {}}})
    assert cfg.trainer.learning_rate == 1.0 and isinstance(cfg.trainer.learning_rate, float)
    assert cfg.trainer.reduce_lr.patience == 5 and cfg.dataset.split.holdout_fraction == 0.0
    assert parse(TrainConfig, cfg) is cfg  # a typed config passes unchanged
    assert DatasetConfig(**DATASET, num_classes=3).names == ["class_0", "class_1", "class_2"]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"trainer": {"reduer_patience": 3}}, "`trainer.reduer_patience` is not a setting"),
        ({"seeds": 1}, "`seeds` is not a setting of TrainConfig; did you mean `seed`"),
        ({"trainer": {"epochs": "many"}}, "trainer.epochs must be an integer. Received: 'many'"),
        ({"trainer": {"epochs": 0}}, "trainer.epochs must be >= 1. Received: 0"),
        ({"trainer": {"precision": "float8"}}, "trainer.precision must be one of"),
        ({"trainer": {"foreground_fraction": 1.5}}, "trainer.foreground_fraction must be in"),
        ({"trainer": {"small_lesion_pixels": 0}}, "trainer.small_lesion_pixels must be >= 1"),
        ({"trainer": {"small_lesion_repeats": 0}}, "trainer.small_lesion_repeats must be >= 1"),
        ({"trainer": {"jit_compile": "yes"}}, "trainer.jit_compile must be true, false or auto"),
        ({"trainer": {"compile_cache": " "}}, "trainer.compile_cache must be auto, none or a"),
        ({"trainer": {"resume": "yes"}}, "trainer.resume must be one of ('never', 'auto')"),
        ({"trainer": {"reduce_lr": {"patience": 2.5}}}, "trainer.reduce_lr.patience must be"),
        ({"dataset": {**DATASET, "channels": 0}}, "dataset.channels must be >= 1"),
        ({"dataset": {**DATASET, "image_size": [64]}}, "dataset.image_size must be [height"),
        ({"dataset": {**DATASET, "split": {"holdout_fraction": 1}}}, "dataset.split.holdout"),
        ({"dataset": {"name": "x"}}, "dataset.root is required"),
        ({"model": {"base_filter": 8}}, "`model.base_filter` is not a setting of FlexUNetConfig"),
        ({"model": {"_target_": "flexseg.models.Nope"}}, "`_target_` 'flexseg.models.Nope'"),
        ({"loss": {"name": "focal", "alpha": 0.5}}, "`loss.alpha` is not a setting of Focal"),
        ({"loss": "dice"}, "loss must be a mapping of settings"),
        ({"trainer": {"learning_rate": -0.001}}, "trainer.learning_rate must be > 0"),
        ({"trainer": {"learning_rate": 0}}, "trainer.learning_rate must be > 0"),
        ({"trainer": {"clipnorm": -1}}, "trainer.clipnorm must be > 0 or null"),
        ({"trainer": {"steps_per_epoch": 0}}, "trainer.steps_per_epoch must be >= 1 or null"),
        ({"trainer": {"steps_per_epoch": -3}}, "trainer.steps_per_epoch must be >= 1 or null"),
        ({"trainer": {"max_minutes": 0}}, "trainer.max_minutes must be > 0 or null"),
        ({"trainer": {"warmup_epochs": -1}}, "trainer.warmup_epochs must be >= 0"),
        ({"trainer": {"reduce_lr": {"factor": 1.5}}}, "trainer.reduce_lr.factor must be between"),
        ({"seed": -1}, "seed must be an integer from 0 to 4294967295. Received: -1"),
        ({"seed": 2**32}, "seed must be an integer from 0 to 4294967295"),
        ({"dataset": {**DATASET, "group_regex": "^(p\\d+_"}}, "dataset.group_regex must be a"),
        ({"dataset": {**DATASET, "group_regex": "^p\\d+_"}}, "with a capture group"),
        ({"dataset": {**DATASET, "split": {"seed": -2}}}, "dataset.split.seed must be an integer"),
    ],
)  # fmt: skip
def test_every_bad_value_is_refused_naming_its_key(data, message):
    data = {"dataset": DATASET, **data}
    with pytest.raises(ConfigError) as info:
        parse(TrainConfig, data)
    assert message in str(info.value)


def test_each_command_takes_only_its_own_keys():
    with pytest.raises(ConfigError, match="`trainer` is not a setting of EvaluateConfig"):
        parse(EvaluateConfig, {"run_dir": "r", "trainer": {"epochs": 3}})
    with pytest.raises(ConfigError, match="checkpoint must be one of"):
        EvaluateConfig(run_dir="r", checkpoint="final")


def test_a_target_outside_flexsegs_models_is_refused_before_any_import():
    assert "this" not in sys.modules
    with pytest.raises(ConfigError, match="is not one of flexseg's models"):
        parse(TrainConfig, {"dataset": DATASET, "model": {"_target_": "this.s"}})
    assert "this" not in sys.modules  # the module a config named never ran


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"", "is empty, not a mapping"), (b"- a\n- b\n", "is a list, not a mapping"),
     (b"7\n", "is a number"), (b"\xff\xfe\x00bad", "is not UTF-8 text")],
)  # fmt: skip
def test_a_run_config_that_is_no_mapping_is_one_error_naming_the_file(tmp_path, content, message):
    (tmp_path / "config.yaml").write_bytes(content)
    with pytest.raises(ConfigError) as info:
        read_run_config(tmp_path)
    assert message in str(info.value)
    assert str(tmp_path / "config.yaml") in str(info.value)


@pytest.mark.parametrize(
    ("schema", "data", "message"),
    [
        (InferConfig, {"run_dir": "r", "input": ""},
         "input must be a path or a list of paths, not empty. Received: ''"),
        (InferConfig, {"run_dir": "r", "input": []}, "input must be a path or a list"),
        (InferConfig, {"run_dir": "", "input": "x"}, "run_dir must be a path or a list"),
        (InferConfig, {"run_dir": "r", "input": "x", "output": " "}, "output must be a path or"),
        (ExportConfig, {"run_dir": ""}, "run_dir must be a path, not empty"),
        (EvaluateConfig, {"run_dir": ["a", ""]}, "run_dir must be a path or a list"),
        (TrainConfig, {"dataset": {"name": "x", "root": " "}}, "dataset.root must be a path, not"),
    ],
)  # fmt: skip
def test_an_empty_path_is_refused_naming_its_key(schema, data, message):
    """As an unset shell variable gives (`input=$SCANS`): never the current folder."""
    with pytest.raises(ConfigError) as info:
        parse(schema, data)
    assert message in str(info.value)
