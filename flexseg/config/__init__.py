"""Configuration: the typed schema of every command, checked parsing, YAML files.

The library takes these typed configs (`TrainConfig`, `EvaluateConfig`, ...): build one in
Python (`TrainConfig(dataset=DatasetConfig(...))`, or `parse(TrainConfig, a_dict)`), or
compose one from `conf/` with `flexseg.commands.load_config`. Hydra and OmegaConf are imported by
the commands only; importing `flexseg.config` imports neither.
"""

from flexseg.config.files import read_config, save_config
from flexseg.config.parse import MISSING, Section, as_dict, parse
from flexseg.config.schema import (
    AugmentConfig,
    ClusterConfig,
    DatasetConfig,
    EarlyStoppingConfig,
    EvaluateConfig,
    InferConfig,
    LossSection,
    ModelSection,
    PreviewAugmentConfig,
    ReduceLRConfig,
    SplitConfig,
    StatsConfig,
    TrainConfig,
    TrainerConfig,
    command_schemas,
    loss_schema,
    model_schema,
)
from flexseg.config.targets import import_target, instantiate

__all__ = [
    "MISSING",
    "AugmentConfig",
    "ClusterConfig",
    "DatasetConfig",
    "EarlyStoppingConfig",
    "EvaluateConfig",
    "InferConfig",
    "LossSection",
    "ModelSection",
    "PreviewAugmentConfig",
    "ReduceLRConfig",
    "Section",
    "SplitConfig",
    "StatsConfig",
    "TrainConfig",
    "TrainerConfig",
    "as_dict",
    "command_schemas",
    "import_target",
    "instantiate",
    "loss_schema",
    "model_schema",
    "parse",
    "read_config",
    "save_config",
]
