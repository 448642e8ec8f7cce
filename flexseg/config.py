"""Configuration: the schema of every config group, composition, validation, building.

This is the only flexseg module that imports Hydra or OmegaConf. The rest of the package
takes plain dictionaries (see `to_container`), so a notebook can call `train(cfg)` with a
dict it wrote by hand. The dataclasses below are the schema: Hydra merges each YAML option
into them, so a misspelled key or a value of the wrong type is an error that names the key
instead of a silent default.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from flexseg import backend
from flexseg.errors import ConfigError, DataError, PreemptedError, TrainingError

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


@dataclass
class SplitConfig:
    # Group ids per split, e.g. {train: [p07, p19], test: [p26]}; or `fractions` instead.
    # Empty means not given; to switch a dataset from one to the other on the command line:
    # dataset.split.groups=null ++dataset.split.fractions={train:0.8,test:0.2}
    groups: dict[str, list[str]] | None = field(default_factory=dict)
    # Share of the groups per split, e.g. {train: 0.7, valid: 0.1, test: 0.2}, seeded.
    fractions: dict[str, float] | None = field(default_factory=dict)
    # Share of each training group's slices held out (as one contiguous block) for validation.
    holdout_fraction: float = 0.0
    seed: int | None = None  # defaults to the run's seed


@dataclass
class DatasetConfig:
    name: str = MISSING
    root: str = MISSING
    layout: str = "flat"  # flat: root/{images,masks} + split; splits: root/{train,valid,test}/...
    images_dir: str = "images"
    masks_dir: str = "masks"
    mask_suffix: str = ""
    group_regex: str | None = None  # first capture group = the patient id of a file name
    split: SplitConfig = field(default_factory=SplitConfig)
    num_classes: int = 2
    class_names: list[str] | None = None
    rgb_map: Any = None  # [{name, color: [r, g, b], id}] or {"(r, g, b)": id}; None: id masks
    color_tolerance: float = 10.0
    channels: int = 1
    image_size: list[int] | None = None  # [height, width] of the model input
    size_policy: str = "pad"  # pad | resize
    normalize: str = "scale01"  # scale01 | zscore | group_zscore | none
    clip_percentiles: list[float] | None = None
    ignore_zero: bool = True
    cache: bool = False


@dataclass
class ModelConfig:
    _target_: str = "flexseg.models.FlexUNet"
    input_shape: list[Any] = MISSING
    num_classes: int = MISSING
    base_filters: int = 16
    base_kernels: Any = 3
    num_layers: int = 6
    dropout_rate: float = 0.0
    dilation: int = 1
    normalization: str = "none"
    activation: str = "relu"
    input_rescale: float | None = None
    output: str = "softmax"


@dataclass
class AugmentConfig:
    name: str = "none"
    # albumentations transforms in order: [{name: HorizontalFlip, p: 0.5}, ...]
    transforms: list[Any] = field(default_factory=list)


@dataclass
class LossConfig:
    name: str = "ce_dice"  # ce | dice | ce_dice | focal | tversky
    class_weights: list[float] | None = None
    include_background: bool = False
    dice_weight: float = 1.0
    gamma: float = 2.0  # focal
    alpha: float = 0.3  # tversky: weight of false positives
    beta: float = 0.7  # tversky: weight of false negatives
    smooth: float = 1.0


@dataclass
class ReduceLRConfig:
    enabled: bool = True
    factor: float = 0.5
    patience: int = 5
    min_lr: float = 1e-6


@dataclass
class EarlyStoppingConfig:
    enabled: bool = True
    patience: int = 15
    restore_best: bool = True


@dataclass
class TrainerConfig:
    epochs: int = 50
    batch_size: int = 8
    learning_rate: float = 1e-3
    optimizer: str = "adam"  # adam | adamw
    weight_decay: float = 1e-4  # adamw only
    clipnorm: float | None = None
    schedule: str = "constant"  # constant | cosine | step
    warmup_epochs: int = 0
    step_epochs: int = 30  # step schedule: multiply by step_gamma every step_epochs
    step_gamma: float = 0.1
    reduce_lr: ReduceLRConfig = field(default_factory=ReduceLRConfig)
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    monitor: str = "val_fg_dice"
    steps_per_epoch: int | None = None
    drop_remainder: bool = True  # training: leave out an epoch's last, smaller batch
    foreground_fraction: float | None = None  # training: oversample slices with foreground
    select_checkpoint: str = "best"  # what evaluate / infer use by default: best | last
    preview_images: int = 6  # fixed validation images predicted after every epoch
    tensorboard: bool = False
    workers: int = 1
    use_multiprocessing: bool = False
    jit_compile: Any = "auto"
    # JAX's compiled programs kept for the next run: auto (~/.cache/flexseg/jax) | none | a folder
    compile_cache: str = "auto"
    # none | data_parallel | auto (data parallel where JAX or TensorFlow sees several devices)
    distribution: str = "auto"
    # float32 | mixed_float16 | mixed_bfloat16 | auto (measured per device: backend.auto_precision)
    precision: str = "float32"
    verbose: int = 1
    max_minutes: float | None = None  # stop after the epoch that passes this wall time
    resume: str = "never"  # never | auto: continue the run folder from its last finished epoch


@dataclass
class TrainConfig:
    model: ModelConfig = MISSING
    dataset: DatasetConfig = MISSING
    trainer: TrainerConfig = MISSING
    augment: AugmentConfig = MISSING
    loss: LossConfig = MISSING
    seed: int = 0
    run_dir: str | None = None  # evaluate / infer: the training run to use
    input: str | None = None  # infer: an image, a folder or a list file
    output: str | None = None  # infer: folder for predictions
    overwrite: bool = False
    tta: str = "none"  # none | flip
    save_probabilities: bool = False
    split: str = "test"  # evaluate: which split
    checkpoint: str | None = None  # evaluate / infer: best | last; None: trainer's choice
    preview_samples: int = 16  # flexseg-preview-augment: how many augmented samples


def _register() -> None:
    store = ConfigStore.instance()
    store.store(name="train_schema", node=TrainConfig)
    for group, node in [
        ("dataset", DatasetConfig),
        ("model", ModelConfig),
        ("augment", AugmentConfig),
        ("loss", LossConfig),
        ("trainer", TrainerConfig),
    ]:
        store.store(group=group, name=f"{group}_schema", node=node)


_register()
# ${sample_data:ms-lesjak-flair}: a data set shipped inside the package, wherever it is.
OmegaConf.register_new_resolver(
    "sample_data", lambda name: str(Path(__file__).resolve().parent / "sample_data" / name)
)


def _job_dir(run_dir, dataset: str, stamp: str, job: str) -> str:
    """A new run folder for training; a log folder inside the run for evaluate and infer, and
    beside the runs for a check."""
    if run_dir:
        return str(Path(run_dir) / "logs" / f"{job}_{stamp}")
    if job == "check":
        return str(Path("outputs") / dataset / "checks" / stamp)
    return str(Path("outputs") / dataset / stamp)


OmegaConf.register_new_resolver("job_dir", _job_dir)


def load_config(overrides: list[str] | None = None, config_name: str = "train") -> dict:
    """Composes `conf/<config_name>.yaml` with command-line style overrides, as a dict.

    Example:
    >>> cfg = load_config(["dataset=ms_lesjak", "trainer.epochs=2"])
    """
    try:
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name, overrides=list(overrides or []))
    except OmegaConfBaseException as error:
        raise ConfigError(_explain(error)) from error
    except Exception as error:  # Hydra's own errors: unknown group option, bad override
        if type(error).__module__.startswith("hydra"):
            raise ConfigError(_explain(error)) from error
        raise
    return _checked(cfg)


def _checked(cfg: DictConfig) -> dict:
    """The composed config as a resolved plain dict, with every key checked."""
    plain = to_container(cfg)
    check_keys(plain)
    return plain


def check_keys(cfg: dict, schema: type = TrainConfig, prefix: str = "") -> None:
    """Refuses keys that the schema does not have, also those added with `+key=value`."""
    fields = {f.name: f for f in dataclasses.fields(schema)}
    for key, value in cfg.items():
        if prefix == "" and key in ("hydra", "_run_dir_"):
            continue
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=1)
            hint = f"; did you mean `{prefix}{close[0]}`?" if close else ""
            raise ConfigError(
                f"config key `{prefix}{key}` is not a setting of {schema.__name__}{hint}"
            )
        kind = fields[key].type
        # Field types are strings (postponed annotations): a nested schema is a class here.
        nested = globals().get(kind) if isinstance(kind, str) else kind
        if dataclasses.is_dataclass(nested) and isinstance(value, dict):
            check_keys(value, nested, f"{prefix}{key}.")


def to_container(cfg) -> dict:
    """A resolved plain-dict copy of a config (OmegaConf or dict)."""
    if isinstance(cfg, DictConfig):
        try:
            return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
        except OmegaConfBaseException as error:
            raise ConfigError(_explain(error)) from error
    return dict(cfg)


def save_config(cfg: dict, path: str | Path) -> None:
    """Writes a config as YAML."""
    Path(path).write_text(OmegaConf.to_yaml(OmegaConf.create(cfg)))


def read_config(path: str | Path) -> dict:
    """Reads a YAML config written by `save_config` back into a dict."""
    try:
        return OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    except (OSError, OmegaConfBaseException) as error:
        raise ConfigError(f"cannot read config {path}: {error}") from error


def instantiate(spec: dict, **overrides):
    """Builds the object named by `spec["_target_"]` with the other keys as arguments.

    Values stay plain Python containers, so the object's own config (e.g. a Keras model's
    `get_config()`) stays JSON-serializable.
    """
    spec = {**spec, **overrides}
    target = spec.pop("_target_", None)
    if not isinstance(target, str) or "." not in target:
        raise ConfigError(
            f"`_target_` must be a dotted path such as flexseg.models.FlexUNet: {target!r}"
        )
    module_name, _, attr = target.rpartition(".")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as error:
        raise ConfigError(f"`_target_` {target!r} cannot be imported: {error}") from error
    return factory(**spec)


EXIT_INTERRUPTED = 3


def hydra_app(config_name: str = "train") -> Callable:
    """Decorator: makes `main(cfg: dict)` a Hydra command-line app over `conf/`.

    The wrapped function gets the resolved config as a plain dict, with the run directory
    under the key `_run_dir_`. A ConfigError, DataError or TrainingError ends the program with
    its message on stderr and exit code 2, not a traceback; a training stopped by a signal
    exits with code 3 (`EXIT_INTERRUPTED`) after saying how to resume.
    """
    import hydra

    def decorate(main: Callable[[dict], Any]) -> Callable[[], Any]:
        @hydra.main(config_path=str(CONF_DIR), config_name=config_name, version_base="1.3")
        def app(cfg: DictConfig):
            try:
                plain = _checked(cfg)
                plain["_run_dir_"] = HydraConfig.get().runtime.output_dir
                backend.use_compile_cache(plain["trainer"]["compile_cache"])
                return main(plain)
            except (ConfigError, DataError, TrainingError) as error:
                print(f"error: {error}", file=sys.stderr)
                sys.exit(2)
            except PreemptedError as error:  # a clean stop that can resume
                print(f"interrupted: {error}", file=sys.stderr)
                sys.exit(EXIT_INTERRUPTED)

        @functools.wraps(main)
        def run():
            # Name the job after the command, so Hydra's log file is <command>.log.
            if not any(arg.startswith("hydra.job.name=") for arg in sys.argv[1:]):
                sys.argv.append(f"hydra.job.name={main.__name__}")
            return app()

        return run

    return decorate


class SweepSummary(Callback):
    """Hydra callback: after a sweep, `sweep_summary.csv` and `.md` in the sweep folder."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from flexseg.sweeps import write_sweep_summary

        paths = write_sweep_summary(config.hydra.sweep.dir)
        print(f"sweep summary: {paths[1]}")


def _explain(error: Exception) -> str:
    """One readable message: Hydra's own first line, then the reason OmegaConf gave."""
    if isinstance(error, OmegaConfBaseException):
        key = getattr(error, "full_key", None)
        message = str(error).splitlines()[0]
        return f"config key `{key}`: {message}" if key else message
    lines = [line for line in str(error).splitlines() if line and not line.startswith("To append")]
    message = "\n".join(lines).rstrip(".") or type(error).__name__
    cause = error.__cause__ or error.__context__
    if isinstance(cause, OmegaConfBaseException):
        reason = str(cause).splitlines()[0]
        key = getattr(cause, "full_key", None)
        message += f": {reason}" + (f" (key `{key}`)" if key and key not in reason else "")
    key = getattr(error, "full_key", None)
    if key and key not in message:
        message = f"config key `{key}`: {message}"
    return message
