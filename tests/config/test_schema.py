"""The schema: one place per default, checked values, and values derived once."""

from __future__ import annotations

import inspect

import pytest
import yaml

from flexseg.commands._compose import CONF_DIR, load_config
from flexseg.config import (
    DatasetConfig,
    EvaluateConfig,
    TrainConfig,
    TrainerConfig,
    as_dict,
    loss_schema,
    model_schema,
    parse,
)
from flexseg.config.schema import DEFAULT_MODEL
from flexseg.errors import ConfigError
from flexseg.losses import LOSSES, CrossEntropyDice
from flexseg.models import MODELS, FlexUNet

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
