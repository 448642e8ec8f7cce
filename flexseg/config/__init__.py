"""Configuration: the typed schema of every command, checked parsing, YAML files.

The library takes these typed configs (`TrainConfig`, `EvaluateConfig`, ...): build one in
Python (`TrainConfig(dataset=DatasetConfig(...))`, or `parse(TrainConfig, a_dict)`), or
compose one from `flexseg/conf/` with `flexseg.config.compose.load_config`. Only the `compose` and
`app` modules of this package import Hydra and OmegaConf; importing `flexseg.config` does not.
"""

from flexseg.config.files import read_config, save_config
from flexseg.config.parse import MISSING, Section, as_dict, parse
from flexseg.config.schema import (
    COMMANDS,
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
    loss_schema,
    model_schema,
)
from flexseg.config.targets import import_target, instantiate

__all__ = [
    "COMMANDS",
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
    "import_target",
    "instantiate",
    "loss_schema",
    "model_schema",
    "parse",
    "read_config",
    "save_config",
]
