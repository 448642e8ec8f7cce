"""The schema of every command's config.

A default is written once: here, or in the class a section configures. The `model` and `loss`
keys are a class's constructor arguments; the data layer's settings (`Source`, `SplitRule`,
`ReadSpec`) hold the defaults of the `dataset` keys of their names, which are read from them.

Each section is a dataclass that checks its own values when it is made (types, choices,
ranges: `flexseg.config.parse`), so a config written in Python and one composed by Hydra
from `conf/` pass the same checks. The `model` and `loss` sections are not written here:
their keys and defaults are the constructor arguments of the model class (`_target_`) and of
the loss class (`name`), read from the signature (`model_schema`, `loss_schema`).

Values that follow from others are derived here once: `model.input_shape` and
`model.num_classes` follow the dataset unless set, `model.from_logits` and
`model.size_multiple` come from the model's settings, `dataset.names` from the classes.

Example:
>>> cfg = TrainConfig(dataset=DatasetConfig(name="scans", root="data", group_regex=r"^(p\\d+)_"))
>>> cfg.model.input_shape, cfg.loss.name, cfg.trainer.epochs
([None, None, 1], 'ce_dice', 50)
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from flexseg.config.parse import MISSING, Section, parse, section_schema
from flexseg.config.targets import import_target
from flexseg.data.cache import CACHE_KINDS
from flexseg.data.files import MAX_PIXELS
from flexseg.data.reading import NORMALIZATIONS, SIZE_POLICIES, ReadSpec
from flexseg.data.sources import LAYOUTS, Source, SplitRule
from flexseg.data.splits import SPLITS
from flexseg.data.volumes import MAX_VOXELS, SLICE_AXES
from flexseg.errors import ConfigError
from flexseg.models import INFERENCE_PRECISIONS, MODELS

# The option lists of what only runs above the config (training, prediction, export); those of
# data and models are imported from the modules that own them.
OPTIMIZERS = ("adam", "adamw")
SCHEDULES = ("constant", "cosine", "step")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16", "auto")
DISTRIBUTIONS = ("none", "data_parallel", "auto")
CHECKPOINTS = ("best", "last")
RESUMES = ("never", "auto")
# test-time augmentation: the mean of the predictions of the image and its mirrors
# (flexseg.predict.predictor.TTA_VIEWS)
TTA_MODES = ("none", "flip", "flip_hv", "mirror")
EXPORT_FORMATS = ("onnx", "tf_saved_model", "litert", "torch")

DEFAULT_MODEL = MODELS["flex_unet"]
DEFAULT_LOSS = "ce_dice"


def choice(default, options: tuple) -> Any:
    """A field whose value must be one of `options`."""
    return field(default=default, metadata={"choices": options})


def rule(default, test: Callable[[Any], bool], wanted: str) -> Any:
    """A field whose value must pass `test`; `wanted` says what it must be."""
    return field(default=default, metadata={"rule": (test, wanted)})


def _fraction(low_open: bool, high_open: bool) -> Callable[[Any], bool]:
    def test(value) -> bool:
        if value is None:
            return True
        above = value > 0 if low_open else value >= 0
        below = value < 1 if high_open else value <= 1
        return above and below

    return test


def _optional_pair(test: Callable[[list], bool]) -> Callable[[Any], bool]:
    return lambda value: value is None or (len(value) == 2 and test(value))


def _intensity_rows(value) -> bool:
    """null, or one [low, high, mean, std] of numbers per channel, low < high, std > 0."""
    if value is None:
        return True
    try:
        rows = [[float(v) for v in row] for row in value]
    except (TypeError, ValueError):
        return False
    return bool(rows) and all(len(r) == 4 and r[0] < r[1] and r[3] > 0 for r in rows)


SEED_MAX = 2**32 - 1  # NumPy's seeds


def _seed(default: int | None) -> Any:
    return rule(
        default, lambda n: n is None or 0 <= n <= SEED_MAX, f"an integer from 0 to {SEED_MAX}"
    )


def _group_regex(value) -> bool:
    """null, or a regular expression with a capture group (the patient id)."""
    if value is None:
        return True
    try:
        return re.compile(value).groups >= 1
    except (re.error, TypeError):
        return False


REGEX_WANTED = "a regular expression with a capture group for the patient id, e.g. '^(p\\d+)_'"


def _paths(value, optional: bool = False, several: bool = False) -> bool:
    """A path (or, where `several`, a non-empty list of them; null where `optional`), never an
    empty value, as an unset shell variable gives (`input=$SCANS`)."""
    if value is None:
        return optional
    if several and isinstance(value, (list, tuple)):
        return bool(value) and all(_paths(v) for v in value)
    return isinstance(value, str) and bool(value.strip())


def _path(default: Any, optional: bool = False, several: bool = False) -> Any:
    wanted = (
        "a path" + (" or a list of paths" if several else "") + (" or null" if optional else "")
    )
    test = functools.partial(_paths, optional=optional, several=several)
    return rule(default, test, f"{wanted}, not empty")


def _positive_or_null(value) -> bool:
    return value is None or value > 0


def _compile_cache() -> Any:
    return rule("auto", lambda v: bool(v.strip()), "auto, none or a folder")


@dataclass
class SplitConfig(Section):
    KEY: ClassVar[str] = "dataset.split"
    # Group ids per split, e.g. {train: [p07, p19], test: [p26]}; or `fractions` instead.
    # Empty means not given; to switch a dataset from one to the other on the command line:
    # dataset.split.groups=null ++dataset.split.fractions={train:0.8,test:0.2}
    groups: dict[str, list[str]] | None = field(default_factory=dict)
    # Share of the groups per split, e.g. {train: 0.7, valid: 0.1, test: 0.2}, seeded.
    fractions: dict[str, float] | None = field(default_factory=dict)
    # Share of each training group's slices held out (as one contiguous block) for validation.
    holdout_fraction: float = rule(SplitRule.holdout_fraction, _fraction(False, True), "in [0, 1)")
    seed: int | None = _seed(None)  # defaults to the run's seed
    # Cross-validation by patient: the groups outside test are dealt into `folds` seeded folds
    # and fold `fold` validates; flexseg-train -m dataset.split.fold=0,1,2,3,4 runs them all.
    folds: int | None = rule(None, lambda n: n is None or n >= 2, ">= 2 or null")
    fold: int = rule(SplitRule.fold, lambda n: n >= 0, ">= 0")  # the fold that validates


@dataclass
class DatasetConfig(Section):
    KEY: ClassVar[str] = "dataset"
    name: str = MISSING  # names the output folder: outputs/<name>/<time>
    root: str = _path(MISSING)  # the data set's folder
    # how the folder is laid out: flat (images/ + masks/ and a split rule), splits
    # (train/valid/test folders), nnunet or msd (volumes); auto tells them apart
    layout: str = choice(Source.layout, LAYOUTS)
    images_dir: str = Source.images_dir  # the images' folder under root (or a split folder)
    masks_dir: str = Source.masks_dir  # the masks' folder, beside images_dir
    mask_suffix: str = Source.mask_suffix  # a mask's name is <image stem><suffix>.<any ext>
    # first capture group = the patient id of a file name
    group_regex: str | None = rule(None, _group_regex, REGEX_WANTED)
    split: SplitConfig = field(default_factory=SplitConfig)
    # classes of the masks, background (id 0) included
    num_classes: int = rule(2, lambda n: n >= 2, ">= 2 (the background is a class)")
    class_names: list[str] | None = None  # one per class, in id order; None: class_<id>
    rgb_map: Any = None  # [{name, color: [r, g, b], id}] or {"(r, g, b)": id}; None: id masks
    color_tolerance: float = rule(
        10.0, lambda v: v >= 0, ">= 0"
    )  # farthest an RGB mask colour may lie from a map colour
    # 2D files: 1 reads gray, 3 RGB; volumes: the channels of a case (nnU-Net's channel
    # files, a Decathlon image's fourth axis)
    channels: int = rule(ReadSpec.channels, lambda n: n >= 1, ">= 1")
    # Volumes: the axis of RAS order they are cut along into 2D slices, 0 | 1 | 2 or sagittal
    # | coronal | axial; auto: the coarsest spacing (axial of an isotropic scan)
    slice_axis: str = choice(Source.slice_axis, SLICE_AXES)
    # Volumes: neighbouring slices on each side read as further channels (2.5D)
    context_slices: int = rule(ReadSpec.context_slices, lambda n: n >= 0, ">= 0")
    # 3D models (model.spatial_dims=3): [x, y, z] voxels of the training patches, in the
    # volumes' RAS order; each case is one sample, whole; null: 2D samples (images, slices)
    patch_size: list[int] | None = rule(
        None,
        lambda v: v is None or (len(v) == 3 and min(v) >= 1),
        "null or [x, y, z] of positive integers",
    )
    # [height, width] of the model input; None pads each image to the model's size multiple.
    image_size: list[int] | None = rule(
        None, _optional_pair(lambda size: min(size) >= 1), "[height, width] of positive integers"
    )
    # how an image meets image_size: pad (centred; cut off again in predictions) or resize
    size_policy: str = choice(ReadSpec.size_policy, SIZE_POLICIES)
    # intensities: scale01 | zscore (per image) | group_zscore (per patient) | volume_zscore
    # (per volume and channel) | dataset_zscore (CT, intensity_stats) | none
    normalize: str = choice(ReadSpec.normalize, NORMALIZATIONS)
    # intensities clipped at these percentiles of the image (group, volume) before normalize
    clip_percentiles: list[float] | None = rule(
        None,
        _optional_pair(lambda p: 0 <= p[0] < p[1] <= 100),
        "[low, high], 0 <= low < high <= 100",
    )
    ignore_zero: bool = ReadSpec.ignore_zero  # z-score statistics over non-zero pixels only
    # dataset_zscore (CT): [low, high, mean, std] per channel, clipped at low and high, then
    # standardised; null: the training computes them from its cases' foreground voxels (0.5th
    # and 99.5th percentiles, mean and std) and records them in the run's config.yaml
    intensity_stats: Any = rule(None, _intensity_rows, "null or [[low, high, mean, std], ...]")
    # Missing sequences: in training, each image has, with probability stand_in_p, all its
    # channels replaced by channel stand_in_channel, as a scan whose missing sequences were
    # filled with the one it has (lgg: FLAIR, channel 1); flexseg-evaluate stand_in_channel=1
    # scores the test split that way.
    stand_in_channel: int | None = rule(None, lambda n: n is None or n >= 0, ">= 0 or null")
    stand_in_p: float = rule(0.0, lambda p: 0 <= p <= 1, "in [0, 1]")  # see stand_in_channel
    # decode and size every sample once: none | memory (shared by the loader processes, for
    # one run) | disk (a folder under cache_dir, reused while the files and settings stay)
    cache: str = choice("none", CACHE_KINDS)
    cache_dir: str | None = _path(
        None, True
    )  # the disk cache's folder; None: ~/.cache/flexseg/data
    # Files whose header declares more pixels are refused before decoding (2**28: 16k x 16k).
    max_pixels: int = rule(MAX_PIXELS, lambda n: n >= 1, ">= 1")
    # Volumes whose header declares more voxels (all channels) are refused (2**30: 1024^3).
    max_voxels: int = rule(MAX_VOXELS, lambda n: n >= 1, ">= 1")

    @property
    def names(self) -> list[str]:
        """The class names: `class_names`, or class_0, class_1, ..."""
        return list(self.class_names or [f"class_{i}" for i in range(self.num_classes)])


@dataclass
class AugmentConfig(Section):
    KEY: ClassVar[str] = "augment"
    name: str = "none"  # the option's name (augment=light), recorded with the run
    # albumentations transforms in order: [{name: HorizontalFlip, p: 0.5}, ...]
    transforms: list[Any] = field(default_factory=list)


@dataclass
class ReduceLRConfig(Section):
    KEY: ClassVar[str] = "trainer.reduce_lr"
    enabled: bool = True  # lower the learning rate when the monitored value stops improving
    factor: float = rule(0.5, lambda v: 0 < v < 1, "between 0 and 1")  # the rate times this
    patience: int = rule(5, lambda n: n >= 0, ">= 0")  # epochs without improvement first
    min_lr: float = rule(1e-6, lambda v: v >= 0, ">= 0")  # never below this


@dataclass
class EarlyStoppingConfig(Section):
    KEY: ClassVar[str] = "trainer.early_stopping"
    enabled: bool = True  # stop when the monitored value stops improving
    patience: int = rule(15, lambda n: n >= 0, ">= 0")  # epochs without improvement first
    restore_best: bool = True  # end with the best epoch's weights


@dataclass
class ClusterConfig(Section):
    """The processes of a training started by hand (flexseg.cluster.find_processes); under
    torchrun, flexseg-launch or a SLURM step of several tasks they are found by themselves."""

    KEY: ClassVar[str] = "trainer.cluster"
    coordinator: str | None = None  # host:port where process 0 listens
    # the processes of the training, in all
    num_processes: int | None = rule(None, lambda n: n is None or n >= 1, ">= 1 or null")
    # this process's number, 0 to num_processes - 1
    process_id: int | None = rule(None, lambda n: n is None or n >= 0, ">= 0 or null")
    # a collective that waits longer than this fails (a process hangs); a lost process is
    # noticed within lost_after_s either way
    timeout_s: float = rule(1800.0, lambda n: n > 0, "> 0")
    # a process with no sign of life for this long is taken as lost, and the others stop
    lost_after_s: float = rule(60.0, lambda n: n >= 5, ">= 5")


@dataclass
class TrainerConfig(Section):
    KEY: ClassVar[str] = "trainer"
    epochs: int = rule(50, lambda n: n >= 1, ">= 1")  # passes over the training samples
    # samples a step, over all devices and processes together
    batch_size: int = rule(8, lambda n: n >= 1, ">= 1")
    learning_rate: float = rule(1e-3, lambda v: v > 0, "> 0")  # the schedule's start
    optimizer: str = choice("adam", OPTIMIZERS)  # adamw adds decoupled weight decay
    weight_decay: float = rule(1e-4, lambda v: v >= 0, ">= 0")  # adamw only
    # each gradient's norm clipped to this; None: not clipped
    clipnorm: float | None = rule(None, _positive_or_null, "> 0 or null")
    # the learning rate over the epochs: constant (the plateau reducer may lower it), cosine
    # (decays to reduce_lr.min_lr by the last epoch, or by max_minutes) or step
    schedule: str = choice("constant", SCHEDULES)
    # epochs whose learning rate rises linearly to learning_rate
    warmup_epochs: int = rule(0, lambda n: n >= 0, ">= 0")
    # step schedule: multiply by step_gamma every step_epochs
    step_epochs: int = rule(30, lambda n: n >= 1, ">= 1")
    step_gamma: float = rule(0.1, lambda v: v > 0, "> 0")  # step schedule: the factor
    reduce_lr: ReduceLRConfig = field(default_factory=ReduceLRConfig)
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    # the logged value that picks the best checkpoint and drives reduce_lr and early_stopping
    monitor: str = "val_fg_dice"
    # batches an epoch; None: the whole training set
    steps_per_epoch: int | None = rule(None, _positive_or_null, ">= 1 or null")
    drop_remainder: bool = True  # training: leave out an epoch's last, smaller batch
    # training: oversample slices with foreground to this share of an epoch
    foreground_fraction: float | None = rule(None, _fraction(True, False), "in (0, 1] or null")
    # 3D training: the share of each batch's patches centred on a foreground voxel (nnU-Net:
    # a third)
    foreground_patches: float = rule(0.33, lambda p: 0 <= p <= 1, "in [0, 1]")
    # 3D training: the patches an epoch serves; null: one per training case
    patches_per_epoch: int | None = rule(None, lambda n: n is None or n >= 1, ">= 1 or null")
    # training: slices whose foreground covers fewer pixels than this (at the model's input
    # size) are served small_lesion_repeats times an epoch
    small_lesion_pixels: int | None = rule(None, lambda n: n is None or n >= 1, ">= 1 or null")
    small_lesion_repeats: int = rule(3, lambda n: n >= 1, ">= 1")  # see small_lesion_pixels
    select_checkpoint: str = choice("best", CHECKPOINTS)  # what evaluate / infer use
    # fixed validation images predicted after every epoch
    preview_images: int = rule(6, lambda n: n >= 0, ">= 0")
    # loader worker processes: auto (the cores this process may use, minus one) or a count;
    # 0 loads in the training process
    workers: Any = rule(
        "auto", lambda v: v == "auto" or (type(v) is int and v >= 0), "auto or an integer >= 0"
    )
    prefetch: int = rule(2, lambda n: n >= 1, ">= 1")  # batches each worker keeps ready
    # compile the step with XLA: auto (on JAX, and on TensorFlow with a GPU), true or false
    jit_compile: Any = rule(
        "auto", lambda v: isinstance(v, bool) or v == "auto", "true, false or auto"
    )
    # JAX's compiled programs kept for the next run: auto (~/.cache/flexseg/jax) | none | a folder
    compile_cache: str = _compile_cache()
    # data parallel over several processes (torch, JAX), or over the devices JAX or
    # TensorFlow sees (auto), or not (none)
    distribution: str = choice("auto", DISTRIBUTIONS)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    # auto: measured per device (backend.auto_precision)
    precision: str = choice("float32", PRECISIONS)
    # 0: silent; 1: a progress bar on a terminal, one plain line an epoch elsewhere (a log
    # file, a SLURM job); 2: the plain line on a terminal too
    verbose: int = rule(1, lambda n: n in (0, 1, 2), "0, 1 or 2")
    # stop after the epoch that passes this wall time
    max_minutes: float | None = rule(None, _positive_or_null, "> 0 or null")
    resume: str = choice("never", RESUMES)  # auto: continue the run folder after its last epoch


class ModelSection(Section):
    """Base of the `model` sections, whose fields are the model class's arguments."""

    KEY: ClassVar[str] = "model"

    def arguments(self) -> dict:
        """The model class's constructor arguments."""
        return {k: v for k, v in vars(self).items() if k != "_target_"}

    @property
    def from_logits(self) -> bool:
        """Whether the model outputs logits rather than probabilities."""
        return self.output == "logits"

    @property
    def size_multiple(self) -> int:
        """Height and width of an input must be multiples of this number."""
        return import_target(self._target_).size_multiple_for(self.arguments())


class LossSection(Section):
    """Base of the `loss` sections, whose fields are the loss class's arguments."""

    KEY: ClassVar[str] = "loss"

    def arguments(self) -> dict:
        return {k: v for k, v in vars(self).items() if k != "name"}


# Arguments a config never sets: they follow from other settings or name the Keras object.
_DERIVED = ("name", "from_logits", "reduction", "dtype")


@functools.cache
def model_schema(target: str) -> type[ModelSection]:
    """The `model` section of the model class `target` (a dotted path): one field per
    constructor argument, with its default; `input_shape` and `num_classes` default to None,
    which means "follow the dataset"."""
    factory = import_target(target)
    return section_schema(
        f"{factory.__name__}Config",
        factory,
        ModelSection,
        first={"_target_": (str, target)},
        overrides={"input_shape": (Any, None), "num_classes": (int | None, None)},
        skip=_DERIVED,
    )


@functools.cache
def loss_schema(name: str) -> type[LossSection]:
    """The `loss` section of the loss registered as `name` (flexseg.losses.LOSSES)."""
    from flexseg.losses import LOSSES, loss_class

    factory = loss_class(name)
    return section_schema(
        f"{factory.__name__}Config",
        factory,
        LossSection,
        first={"name": (str, name)},
        skip=_DERIVED,
        choices={"name": tuple(LOSSES)},
    )


def _derived_section(value, base: type, schema_of: Callable, kind: str, default: str):
    """A `model` or `loss` section from what a config gives: the section itself, nothing
    (the default class's defaults), or a dict whose `kind` key names the class."""
    if isinstance(value, base):
        return value
    if isinstance(value, str) and value == MISSING:
        return schema_of(default)()
    if not isinstance(value, Mapping):
        return parse(base, value)  # refuses it with the key's name
    return parse(schema_of(value.get(kind, default)), value)


@dataclass
class LoggerConfig(Section):
    """Experiment logs beside the run's own files: TensorBoard (on by default) and MLflow."""

    KEY: ClassVar[str] = "logger"
    name: str = "tensorboard"  # the option's name (logger=mlflow), recorded with the run
    tensorboard: bool = True  # <run_dir>/tensorboard/: every epoch's values and preview
    mlflow: bool = False  # an MLflow run: the config, every epoch's values, the run's files
    # MLflow's store; None: sqlite:///mlruns/mlflow.db in the working folder (files only)
    tracking_uri: str | None = None
    experiment: str | None = None  # MLflow's experiment; None: the dataset's name


@dataclass
class TrainConfig(Section):
    """`flexseg-train` and `flexseg-check`: a model, a dataset and how to train it.

    `model` and `loss` take their classes' defaults (FlexUNet, ce_dice) when not given;
    `augment` defaults to none (the command line picks `augment=light`).
    """

    dataset: DatasetConfig = MISSING
    model: Any = MISSING  # the model class's arguments (model_schema)
    loss: Any = MISSING  # the loss class's arguments (loss_schema)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    seed: int = _seed(0)  # seeds shuffling, augmentation and weight initialisation
    # auto: after training, choose the post-processing (small components removed, or the
    # largest kept) on the valid split; kept only if it raises validation Dice
    postprocess: str = choice("none", ("none", "auto"))

    def __post_init__(self) -> None:
        self.model = _derived_section(
            self.model, ModelSection, model_schema, "_target_", DEFAULT_MODEL
        )
        self.loss = _derived_section(self.loss, LossSection, loss_schema, "name", DEFAULT_LOSS)
        super().__post_init__()
        dataset = self.dataset
        dims = getattr(self.model, "spatial_dims", 2)
        if (dims == 3) != (dataset.patch_size is not None):
            raise ConfigError(
                f"model.spatial_dims={dims} and dataset.patch_size={dataset.patch_size}: a 3D "
                "model trains on patches of whole volumes and a 2D model on slices; set both "
                "(e.g. model.spatial_dims=3 dataset.patch_size=[64,64,64]) or neither."
            )
        if dims == 3 and dataset.split.holdout_fraction:
            raise ConfigError(
                f"dataset.split.holdout_fraction={dataset.split.holdout_fraction} holds out a "
                "block of each case's slices; a 3D model's samples are whole cases: validate on "
                "cases of their own (dataset.split.groups.valid or fractions) and set "
                "dataset.split.holdout_fraction=0."
            )
        if dims == 3 and dataset.context_slices:
            raise ConfigError(
                f"dataset.context_slices={dataset.context_slices} adds neighbouring slices to a "
                "2D model's input; a 3D model sees them itself: set dataset.context_slices=0."
            )
        if self.model.input_shape is None:
            if dims == 3:
                self.model.input_shape = [*dataset.patch_size, dataset.channels]
            else:
                channels = dataset.channels * (2 * dataset.context_slices + 1)
                self.model.input_shape = [*(dataset.image_size or [None, None]), channels]
        if self.model.num_classes is None:
            self.model.num_classes = dataset.num_classes


@dataclass
class PreviewAugmentConfig(TrainConfig):
    """`flexseg-preview-augment`: the training config and how many samples to draw."""

    preview_samples: int = rule(16, lambda n: n >= 1, ">= 1")  # samples drawn into it


@dataclass
class StatsConfig(Section):
    """`flexseg-stats`: a dataset's statistics."""

    dataset: DatasetConfig = MISSING
    seed: int = _seed(0)  # seeds the split by fractions


PLAN_DEVICES = ("auto", "cpu", "gpu")


@dataclass
class PlanningConfig(Section):
    """How `flexseg-plan` plans: the time budget and the device it is planned for."""

    KEY: ClassVar[str] = "plan"
    # planning and training together, in minutes: the planned epochs end inside them
    minutes: float = rule(30.0, lambda m: m > 0, "> 0")
    # the device the plan is measured on and for: auto (a GPU where the backend sees one) | cpu
    # | gpu (an error where there is none)
    device: str = choice("auto", PLAN_DEVICES)
    # processes reading the files for the fingerprint: auto (every core) or a count; 0 reads
    # in the planning process
    workers: Any = rule(
        "auto", lambda v: v == "auto" or (type(v) is int and v >= 0), "auto or an integer >= 0"
    )
    refresh: bool = False  # compute the fingerprint again, even when a cached one matches
    # where fingerprints are kept, by a key of the files and settings; None:
    # ~/.cache/flexseg/fingerprints
    cache_dir: str | None = _path(None, True)
    # the experiment file's name (<run folder>/experiment/<name>.yaml); None: <dataset.name>_plan
    name: str | None = rule(
        None, lambda v: v is None or re.fullmatch(r"[A-Za-z0-9_.-]+", v), "letters, digits, _ . -"
    )


@dataclass
class PlanConfig(Section):
    """`flexseg-plan`: a dataset's fingerprint and a recipe planned from it for this machine
    and a time budget, written as an experiment file for flexseg-train."""

    dataset: DatasetConfig = MISSING
    plan: PlanningConfig = field(default_factory=PlanningConfig)
    seed: int = _seed(0)  # seeds the split by fractions (as the planned training's seed)


@dataclass
class LabelledDataConfig(Section):
    """New labelled images to score a run on, read with the run's preprocessing."""

    KEY: ClassVar[str] = "data"
    # a folder of images_dir/ + masks_dir/; None: the run's own split
    root: str | None = _path(None, True)
    name: str | None = None  # results go to <run_dir>/evaluation/<name>/; default: root's name
    images_dir: str = "images"  # the images' folder under root
    masks_dir: str = "masks"  # the masks' folder under root
    mask_suffix: str = ""  # a mask's name is <image stem><suffix>.<any ext>
    # first capture group = the patient id; default: the run's dataset.group_regex
    group_regex: str | None = rule(None, _group_regex, REGEX_WANTED)


@dataclass
class EvaluateConfig(Section):
    """`flexseg-evaluate`: a training run scored on one of its splits, or on new labelled
    data (`data.root`)."""

    # a training run's folder; or several ([a,b,c], or a sweep's folder): their ensemble
    run_dir: Any = _path(MISSING, several=True)
    split: str = choice("test", SPLITS)  # the run's split to score
    data: LabelledDataConfig = field(default_factory=LabelledDataConfig)
    checkpoint: str | None = choice(None, (None, *CHECKPOINTS))  # None: the run's choice
    # test-time augmentation: the mean of the image's and its mirrors' predictions
    tta: str = choice("none", TTA_MODES)
    batch_size: int = rule(16, lambda n: n >= 1, ">= 1")  # model inputs per pass, flips included
    # every image's channels replaced by this one (robustness to missing sequences): results
    # in evaluation/<split>_channel<k>_only/
    stand_in_channel: int | None = rule(None, lambda n: n is None or n >= 0, ">= 0 or null")
    # auto: 16 bits where the training's precision=auto would train in them, else float32
    precision: str = choice("auto", INFERENCE_PRECISIONS)
    # JAX's compiled programs kept for the next run: auto (~/.cache/flexseg/jax) | none | a folder
    compile_cache: str = _compile_cache()
    # a folder of masks predicted elsewhere (one per sample of the split, named as
    # flexseg-infer names them: <image stem>.png, <case>.nii.gz), scored instead of the run's
    # model: results in evaluation/<split>_given_<folder name>/
    predictions: str | None = rule(None, lambda v: v is None or bool(v.strip()), "a folder")


@dataclass
class InferConfig(Section):
    """`flexseg-infer`: a training run's predictions for new images."""

    # a training run's folder; or several ([a,b,c], or a sweep's folder): their ensemble
    run_dir: Any = _path(MISSING, several=True)
    # an image, a folder, a text file listing images, or a list of images
    input: Any = _path(MISSING, several=True)
    output: str | None = _path(None, True)  # default: <run_dir>/predictions
    # replace files flexseg-infer wrote there before
    overwrite: bool = False
    # test-time augmentation: the mean of the image's and its mirrors' predictions
    tta: str = choice("none", TTA_MODES)
    batch_size: int = rule(16, lambda n: n >= 1, ">= 1")  # model inputs per pass, flips included
    save_probabilities: bool = False  # also write each class's probabilities (probabilities/)
    checkpoint: str | None = choice(None, (None, *CHECKPOINTS))  # None: the run's choice
    # auto: 16 bits where the training's precision=auto would train in them, else float32
    precision: str = choice("auto", INFERENCE_PRECISIONS)
    # JAX's compiled programs kept for the next run: auto (~/.cache/flexseg/jax) | none | a folder
    compile_cache: str = _compile_cache()


@dataclass
class ExportConfig(Section):
    """`flexseg-export`: a training run's checkpoint in a deployable format, checked."""

    run_dir: str = _path(MISSING)  # the folder of a training run
    format: str = choice("onnx", EXPORT_FORMATS)  # what to write
    output: str | None = _path(None, True)  # default: <run_dir>/export/<format>
    overwrite: bool = False  # replace an earlier export (only once the new one passed its check)
    checkpoint: str | None = choice(None, (None, *CHECKPOINTS))  # None: the run's choice
    # largest difference of a class probability, exported model vs Keras model
    tolerance: float = rule(1e-4, lambda v: 0 < v < 1, "between 0 and 1")
    # JAX's compiled programs kept for the next run: auto (~/.cache/flexseg/jax) | none | a folder
    compile_cache: str = _compile_cache()


def command_schemas() -> dict[str, type[Section]]:
    """The schema of each command's whole config, by the name its primary config gives it:
    `TrainConfig` is `train_schema` (`defaults: [train_schema, ...]` in conf/train.yaml),
    `PreviewAugmentConfig` is `preview_augment_schema`. A schema is a whole config when its
    section has no `KEY`."""
    found = {}
    for value in globals().values():
        whole = isinstance(value, type) and issubclass(value, Section) and not value.KEY
        if whole and dataclasses.is_dataclass(value):
            words = re.sub(r"(?<!^)(?=[A-Z])", "_", value.__name__.removesuffix("Config"))
            found[words.lower()] = value
    return found
