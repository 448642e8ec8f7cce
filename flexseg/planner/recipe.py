"""The rules that turn a fingerprint, a machine and a time budget into a training recipe.

Every choice is made here, from numbers: the fingerprint's (`flexseg.planner.fingerprint`),
the machine's (device, memory) and the step times measured on it (`timer`, which runs one
training step of a candidate model: `flexseg.planner.measure`). The same fingerprint,
machine and step times give the same recipe. Each setting carries its reason, which the
written experiment file keeps as a comment.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

# What the rules stand on. The 2D numbers come from experiment=lgg on a 2-core CPU: at its
# own 256 x 256 only 17 epochs fit in 29 minutes and it scored 0.710 mean Dice, at 128 x 128
# 50 epochs and 0.831 (docs/recipe-notes.md).
MIN_EPOCHS_2D = 40  # fewer: halve the resolution, while the objects stay large enough
MIN_EPOCHS_3D = 15  # fewer: shrink the patch along its longest axis (in mm)
MAX_EPOCHS = 1000  # nnU-Net's count; the budget ends most schedules long before
MIN_OBJECT_PIXELS = 64  # a downscaled image keeps the median object at least this big
MIN_SIDE = 32  # nor is an image side or patch axis made smaller than this
BOTTLENECK = 4  # an axis is pooled while it stays at least this long (nnU-Net's rule)
ANISOTROPY_2D = 3.0  # volumes whose coarsest spacing is this many times the finest: 2D
MIN_STEPS_PER_EPOCH = 25  # a 3D epoch serves at least this many batches
# Post-processing is chosen on validation only where this many groups judge it: lgg's 5 folds
# of 8 validation patients each chose foreground thresholds from 0.1 to 0.7
MIN_VALID_GROUPS = 10
CT_LOW = -200.0  # volumes whose foreground reaches below this (in their units) are CT
SAFETY = 1.1  # measured steps scaled by this for the loader, metrics and callbacks
EPOCH_OVERHEAD_S = 2.0  # checkpoints and the preview, per epoch
POSTPROCESS_S = 20.0  # choosing the post-processing after training, beside its predictions
MEMORY_SHARE = 0.5  # of the memory the device has free, the most a training step may use
ACTIVATION_TENSORS = 12  # feature maps kept per level and filter for the backward pass
CACHE_SHARE = 0.25  # of the host memory, the most the decoded data set may take


@dataclass(frozen=True)
class Machine:
    """Where the plan trains: the device kind and name, its free memory, the backend."""

    device: str  # "cpu" or "gpu"
    name: str
    memory_bytes: int  # free memory of the device (the host's for a CPU)
    host_memory_bytes: int
    backend: str
    cores: int = 1

    @property
    def gpu(self) -> bool:
        return self.device == "gpu"


@dataclass(frozen=True)
class Timing:
    """One candidate's measured steps: seconds a training step and an evaluation step, the
    first step's extra (compilation), and the memory the step used."""

    train_step_s: float
    test_step_s: float
    compile_s: float
    peak_bytes: int


@dataclass
class Recipe:
    """A planned experiment: the settings, each one's reason, and the estimates."""

    settings: dict = field(default_factory=dict)  # nested, as the experiment file has them
    groups: dict = field(default_factory=dict)  # config groups: augment, loss
    reasons: dict = field(default_factory=dict)  # "trainer.epochs" -> why
    estimate: dict = field(default_factory=dict)
    tried: list = field(default_factory=list)  # candidates measured, with their epochs

    def set(self, key: str, value, reason: str | None = None) -> None:
        node = self.settings
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
        if reason:
            self.reasons[key] = reason

    def get(self, key: str, default=None):
        node = self.settings
        for part in key.split("."):
            if not isinstance(node, Mapping) or part not in node:
                return default
            node = node[part]
        return node


Timer = Callable[[dict, int], Timing]


def plan_recipe(
    fp: Mapping,
    machine: Machine,
    timer: Timer,
    train_seconds: Callable[[], float],
    splits: Mapping[str, int],
    num_classes: int,
    valid_groups: int | None = None,
) -> Recipe:
    """The recipe for data set `fp` on `machine`.

    Args:
        fp: the fingerprint.
        machine: the device the training will run on.
        timer: measures a candidate (model arguments, batch size).
        train_seconds: the seconds left for training, asked once the measurements are done
            (the budget less the planning so far and the training's own set-up).
        splits: the samples of each split (cases for volumes planned in 3D).
        num_classes: classes, background included.
        valid_groups: the groups (patients) of the validation split; None: as its samples.
    """
    recipe = Recipe()
    recipe.groups["loss"] = "ce_dice"
    recipe.reasons["loss"] = (
        "cross-entropy + soft Dice (nnU-Net's loss): Dice copes with small classes"
    )
    volumes = fp["kind"] == "volumes"
    three_d = volumes and fp["anisotropy"] <= ANISOTROPY_2D
    if volumes and not three_d:
        recipe.reasons["model.spatial_dims"] = (
            f"2D: spacing {fp['spacing_mm']['median']} mm is {fp['anisotropy']:.1f}x anisotropic "
            f"(> {ANISOTROPY_2D:g}), so slices along the coarsest axis"
        )
    budget = recipe.estimate["budget_s"] = train_seconds()  # what candidates are judged by
    _normalization(recipe, fp, volumes)
    if three_d:
        _plan_3d(recipe, fp, machine, timer, splits, num_classes, budget)
    else:
        _plan_2d(recipe, fp, machine, timer, splits, num_classes, volumes, budget)
    _schedule(recipe, train_seconds())
    valid = splits.get("valid", 0)
    judges = valid_groups if valid_groups is not None else valid
    if not valid:
        why = "no validation split to choose post-processing on"
    elif judges < MIN_VALID_GROUPS:
        why = (
            f"{judges} validation groups are too few to choose post-processing by (fewer "
            f"than {MIN_VALID_GROUPS}: a choice would follow their noise)"
        )
    else:
        why = f"chosen on the {judges} validation groups after training (kept only if it helps)"
    recipe.set("postprocess", "auto" if valid and judges >= MIN_VALID_GROUPS else "none", why)
    _folds(recipe, splits)
    return recipe


def _normalization(recipe: Recipe, fp: Mapping, volumes: bool) -> None:
    zero = max(fp["intensity"]["zero_fraction"] or [0.0])
    ignore_zero = zero >= 0.1
    unit = "voxels" if volumes else "pixels"
    zero_text = f"{zero:.0%} of the {unit} are exactly 0 (the outside)"
    if volumes:
        rows = [r for r in fp["intensity"]["foreground"] if r]
        low = min((r["percentiles"]["0.5"] for r in rows), default=0.0)
        if low < CT_LOW:
            recipe.set(
                "dataset.normalize",
                "dataset_zscore",
                f"CT-like: the foreground's 0.5th percentile is {low:.0f}; intensities mean the "
                "same in every scan, so one clip and z-score of the training foreground",
            )
            recipe.set("dataset.clip_percentiles", None)
            recipe.set("dataset.ignore_zero", False)
            return
        recipe.set(
            "dataset.normalize",
            "volume_zscore",
            f"MRI-like (foreground 0.5th percentile {low:.4g}): each case's channels "
            "standardised by their own statistics",
        )
        recipe.set(
            "dataset.clip_percentiles",
            [0.5, 99.5],
            "each case clipped at its own 0.5th and 99.5th percentiles first",
        )
    else:
        per_group = fp["images_per_group"]["median"][0]
        if per_group > 1:
            recipe.set(
                "dataset.normalize",
                "group_zscore",
                f"{per_group:g} images per group (median): standardised with their group's "
                "statistics, robust to brightness that differs between patients",
            )
        else:
            recipe.set(
                "dataset.normalize", "zscore", "one image per group: each image standardised"
            )
        recipe.set(
            "dataset.clip_percentiles", [1, 99], "clipped at the 1st and 99th percentiles first"
        )
    recipe.set(
        "dataset.ignore_zero",
        ignore_zero,
        (zero_text + ": statistics over non-zero values") if ignore_zero else f"{zero:.0%} zeros",
    )


def _levels(sizes, cap: int) -> list[int]:
    """Pools per axis: while the axis stays at least BOTTLENECK long, at most cap - 1."""
    pools = []
    for size in sizes:
        n = 0
        while n < cap - 1 and size / 2 ** (n + 1) >= BOTTLENECK:
            n += 1
        pools.append(n)
    return pools


def _round_up(size: float, multiple: int) -> int:
    return max(multiple, int(math.ceil(size / multiple)) * multiple)


def _model_args(shape, channels, num_classes, base, pools, three_d, norm) -> dict:
    levels = max(pools) + 1
    args = {
        "input_shape": [*shape, channels],
        "num_classes": num_classes,
        "base_filters": base,
        "num_layers": levels,
        "normalization": norm,
        "spatial_dims": 3 if three_d else 2,
    }
    if len(set(pools)) > 1:
        args["pool_sizes"] = [[2 if p > i else 1 for p in pools] for i in range(levels - 1)]
    return args


def _epoch_seconds(timing: Timing, train_steps: int, valid_steps: int) -> float:
    work = train_steps * timing.train_step_s + valid_steps * timing.test_step_s
    return SAFETY * work + EPOCH_OVERHEAD_S


def _plan_2d(recipe, fp, machine, timer, splits, num_classes, volumes, budget) -> None:
    if volumes:  # slices of volumes: the in-plane axes of the coarsest one
        sizes = fp["sizes"]["median"]
        spacing = fp["spacing_mm"]["median"]
        axis = max(range(3), key=lambda a: (spacing[a], a))
        native = [sizes[a] for a in range(3) if a != axis]
    else:
        native = fp["sizes"]["median"]
    same = fp["sizes"]["min"] == fp["sizes"]["max"]
    objects = [o["median"] for o in fp["objects"].values()]
    smallest = min(objects) if objects else math.inf
    channels = fp["channels"]
    base = 32 if machine.gpu else 16
    batch = 32 if machine.gpu else 16
    cap = 6 if machine.gpu else 5
    train = splits.get("train", 0)
    with_fg = fp["samples_with_foreground"]
    balance = with_fg < 0.5
    served = min(train, round(2 * with_fg * train)) if balance else train
    scale = 1
    while True:
        wanted = [s / scale for s in native]
        pools = _levels(wanted, cap)
        multiple = 2 ** max(pools)
        shape = [_round_up(s, multiple) for s in wanted]
        args = _model_args(shape, channels, num_classes, base, pools, False, "batch")
        timing, batch = _fitting_batch(timer, args, batch, machine)
        train_steps = max(1, served // batch)
        valid_steps = math.ceil(splits.get("valid", 0) / batch)
        epoch_s = _epoch_seconds(timing, train_steps, valid_steps)
        recipe.tried.append({"input": shape, "batch": batch, "epoch_s": round(epoch_s, 1)})
        smaller = [s / 2 for s in wanted]
        object_after = smallest / (4 * scale * scale)
        can_shrink = min(smaller) >= MIN_SIDE and object_after >= MIN_OBJECT_PIXELS
        if not can_shrink or budget / epoch_s >= MIN_EPOCHS_2D:
            break
        scale *= 2
    reason = f"median image {_x(native)}"
    if scale > 1:
        reason += (
            f" downscaled {scale}x: at {_x(recipe.tried[-2]['input'])} an epoch takes "
            f"{recipe.tried[-2]['epoch_s']:.0f} s, under {MIN_EPOCHS_2D} epochs in the budget; "
            f"the median object keeps {smallest / (scale * scale):.0f} px"
        )
    if scale == 1 and not same:
        reason += (
            f", sizes vary: each image resized to {_x(shape)} (the median up to multiples of "
            f"{multiple})"
        )
    elif scale == 1 and shape != [round(s) for s in native]:
        reason += f", padded to {_x(shape)} (multiples of {multiple})"
    recipe.set("dataset.image_size", shape, reason)
    resize = scale > 1 or not same
    recipe.set(
        "dataset.size_policy",
        "resize" if resize else "pad",
        "resized (masks nearest neighbour)" if resize else "all images of this size",
    )
    recipe.set("dataset.patch_size", None)
    recipe.set(
        "model.num_layers",
        args["num_layers"],
        f"pooled while a side stays >= {BOTTLENECK} px, at most {cap} levels: bottleneck "
        f"{_x([s // 2 ** (args['num_layers'] - 1) for s in shape])}",
    )
    recipe.set("model.spatial_dims", 2, recipe.reasons.get("model.spatial_dims") or "2D images")
    _common_model(recipe, base, "batch", machine, args)
    recipe.set("trainer.batch_size", batch, _batch_reason(timing, machine, batch))
    if balance:
        recipe.set(
            "trainer.foreground_fraction",
            0.5,
            f"only {with_fg:.0%} of the images have foreground: an epoch serves them all and "
            "as many empty ones",
        )
    recipe.groups["augment"] = "light"
    recipe.reasons["augment"] = "left-right flips, small rotations and scaling, brightness"
    copied = fp["copied_channels"]
    if channels > 1 and copied.get("closest_channel") is not None:
        k = copied["closest_channel"]
        recipe.set(
            "dataset.stand_in_channel",
            k,
            f"{len(copied['groups'])} groups ({copied['share_of_groups']:.0%}) have one sequence "
            f"copied into every channel, nearest to channel {k}: training shows such copies too",
        )
        recipe.set("dataset.stand_in_p", 0.2)
    recipe.estimate.update(
        timing=timing, train_steps=train_steps, valid_steps=valid_steps, epoch_s=epoch_s
    )
    _cache(recipe, machine, fp, shape, channels)


def _plan_3d(recipe, fp, machine, timer, splits, num_classes, budget) -> None:
    median = fp["sizes"]["median"]
    spacing = fp["spacing_mm"]["median"]
    channels = fp["channels"]
    base = 32 if machine.gpu else 16
    batch = 2
    cap = 6 if machine.gpu else 5
    train = splits.get("train", 0)
    patches = max(train, MIN_STEPS_PER_EPOCH * batch)
    train_steps = max(1, patches // batch)
    valid_steps = math.ceil(splits.get("valid", 0) / batch)
    wanted = list(median)
    estimate = None  # (voxels, seconds) of the last measured candidate
    room = MEMORY_SHARE * machine.memory_bytes
    while True:
        pools = _levels(wanted, cap)
        shape = [_round_up(s, 2**p) for s, p in zip(wanted, pools, strict=True)]
        voxels = math.prod(shape)
        longest = max(range(3), key=lambda a: (wanted[a] * spacing[a], -a))
        smaller = list(wanted)
        smaller[longest] = max(MIN_SIDE, wanted[longest] - 2 ** pools[longest])
        args = _model_args(shape, channels, num_classes, base, pools, True, "instance")
        if estimated_bytes(args, batch) > room and smaller != wanted:
            wanted, estimate = smaller, None  # too big to run at all: smaller first
            continue
        guessed = estimate is not None and voxels < estimate[0]
        if guessed:  # step time scales with the voxels: a guess, measured once it fits
            epoch_s = estimate[1] * voxels / estimate[0]
        else:
            timing, batch = _fitting_batch(timer, args, batch, machine)
            epoch_s = _epoch_seconds(timing, train_steps, valid_steps)
            estimate = (voxels, epoch_s)
            recipe.tried.append({"patch": shape, "batch": batch, "epoch_s": round(epoch_s, 1)})
        fits = budget / epoch_s >= MIN_EPOCHS_3D
        if guessed and (fits or smaller == wanted):
            estimate = None  # measure this one
            continue
        if fits or smaller == wanted:
            break
        wanted = smaller
    reason = f"median case {_x(median)} voxels ({_x(spacing)} mm)"
    if shape != [_round_up(s, 2**p) for s, p in zip(median, _levels(median, cap), strict=True)]:
        reason += (
            f", shrunk along its longest axis (in mm) until a step of {batch} fits half the "
            f"free memory and {MIN_EPOCHS_3D} epochs fit the budget"
        )
    else:
        reason += ", rounded up to the pooling's multiples: most cases fit one patch"
    recipe.set("dataset.patch_size", shape, reason)
    recipe.set("dataset.split.holdout_fraction", 0.0, "3D validates on cases of their own")
    recipe.set("model.spatial_dims", 3, "isotropic enough for 3D "
               f"(anisotropy {fp['anisotropy']:.2f} <= {ANISOTROPY_2D:g})")  # fmt: skip
    recipe.set(
        "model.num_layers",
        args["num_layers"],
        f"each axis pooled while it stays >= {BOTTLENECK} voxels: pools per axis {pools}",
    )
    if "pool_sizes" in args:
        recipe.set("model.pool_sizes", args["pool_sizes"], "axes pooled unequally")
    _common_model(recipe, base, "instance", machine, args)
    recipe.set("trainer.batch_size", batch, _batch_reason(timing, machine, batch))
    if patches != train:
        recipe.set(
            "trainer.patches_per_epoch",
            patches,
            f"{train} training cases: an epoch of {MIN_STEPS_PER_EPOCH} batches",
        )
    recipe.groups["augment"] = "volumes_3d"
    recipe.reasons["augment"] = "mirrors along every axis, rotations and scaling, brightness"
    recipe.estimate.update(
        timing=timing, train_steps=train_steps, valid_steps=valid_steps, epoch_s=epoch_s
    )
    recipe.set("dataset.cache", "memory", "whole cases decoded once")


def estimated_bytes(args: dict, batch: int, params: int | None = None) -> int:
    """Memory of a training step: weights, gradients and Adam's two moments, and each
    level's feature maps kept for the backward pass (parameters counted roughly where
    `params` is not given: two 3-wide convolutions a level, encoder and decoder)."""
    spatial = list(args["input_shape"][:-1])
    pools = args.get("pool_sizes")
    levels = args["num_layers"]
    total, counted, before = 0, 0, args["input_shape"][-1]
    for level in range(levels):
        filters = args["base_filters"] * 2**level
        total += math.prod(spatial) * filters * (2 if level < levels - 1 else 1)
        counted += 2 * (before + filters) * filters * 3 ** len(spatial)
        before = filters
        if level < levels - 1:
            step = pools[level] if pools else 2
            step = step if isinstance(step, list) else [step] * len(spatial)
            spatial = [s // p for s, p in zip(spatial, step, strict=True)]
    weights = params if params is not None else counted
    return int(batch * total * ACTIVATION_TENSORS * 4 + weights * 16)


def _fitting_batch(timer: Timer, args: dict, batch: int, machine: Machine) -> tuple[Timing, int]:
    """The candidate's timing at `batch`, halved while its step would take (estimated
    first, then as measured) more than MEMORY_SHARE of the device's free memory."""
    room = MEMORY_SHARE * machine.memory_bytes
    while batch > 1 and estimated_bytes(args, batch) > room:
        batch //= 2
    while True:
        timing = timer(args, batch)
        if timing.peak_bytes <= MEMORY_SHARE * machine.memory_bytes or batch <= 1:
            return timing, batch
        batch //= 2


def _batch_reason(timing: Timing, machine: Machine, batch: int) -> str:
    used = timing.peak_bytes / 2**30
    free = machine.memory_bytes / 2**30
    return (
        f"a step measured {timing.train_step_s * 1000:.0f} ms and {used:.2f} GiB "
        f"of the {free:.1f} GiB free on the {machine.device}"
    )


def _common_model(recipe: Recipe, base: int, norm: str, machine: Machine, args: dict) -> None:
    recipe.set(
        "model.base_filters",
        base,
        f"{'32 (nnU-Net) on a GPU' if machine.gpu else '16 on a CPU, which buys epochs'}",
    )
    reason = "instance normalisation for batches of 2 patches" if norm == "instance" else None
    recipe.set("model.normalization", norm, reason or "batch normalisation")
    recipe.estimate["model_args"] = args


def _cache(recipe: Recipe, machine: Machine, fp: Mapping, shape, channels: int) -> None:
    decoded = fp["samples"] * math.prod(shape) * (channels * 4 + 1)
    if decoded <= CACHE_SHARE * machine.host_memory_bytes:
        recipe.set(
            "dataset.cache",
            "memory",
            f"decoded and sized once: {decoded / 2**30:.2f} GiB of "
            f"{machine.host_memory_bytes / 2**30:.0f} GiB",
        )
    else:
        recipe.set("dataset.cache", "none", f"{decoded / 2**30:.1f} GiB decoded: too big")


def _schedule(recipe: Recipe, train_seconds: float) -> None:
    """Epochs and the time limit from the chosen candidate's estimate (`recipe.estimate`)."""
    timer_result = recipe.estimate
    epoch_s = timer_result["epoch_s"]
    compile_s = timer_result["timing"].compile_s
    valid_steps = timer_result["valid_steps"]
    if valid_steps:  # postprocess=auto predicts the validation split once more, at the end
        post_s = POSTPROCESS_S + valid_steps * timer_result["timing"].test_step_s
        train_seconds -= post_s
        recipe.estimate["postprocess_s"] = round(post_s, 1)
    usable = max(0.0, train_seconds - compile_s)
    epochs = int(max(1, min(MAX_EPOCHS, usable // epoch_s)))
    # TimeLimit stops after the epoch that passes max_minutes: leave one epoch for it
    limit = max(epoch_s, train_seconds - epoch_s) / 60.0
    recipe.set(
        "trainer.epochs",
        epochs,
        f"{train_seconds / 60:.1f} training minutes at {epoch_s:.1f} s an epoch "
        f"({timer_result['train_steps']} training steps of "
        f"{timer_result['timing'].train_step_s * 1000:.0f} ms, "
        f"{timer_result['valid_steps']} validation steps) and {compile_s:.0f} s to compile",
    )
    recipe.set(
        "trainer.max_minutes",
        round(limit, 2),
        "the budget, less one epoch: the cosine decay is fitted to the epochs that fit",
    )
    recipe.set("trainer.learning_rate", 1.0e-3, "Adam")
    recipe.set("trainer.schedule", "cosine", "decays to zero at the last epoch")
    recipe.set("trainer.warmup_epochs", 1)
    recipe.set("trainer.select_checkpoint", "last", "the decayed end of the schedule")
    recipe.set("trainer.precision", "auto", "bfloat16 where the device has the units for it")
    recipe.set("trainer.reduce_lr.enabled", False, "the cosine schedule sets the rate")
    recipe.set("trainer.early_stopping.enabled", False, "the schedule runs to its end")
    recipe.estimate["epochs"] = epochs
    recipe.estimate["train_minutes"] = round(min(epochs * epoch_s + compile_s, 60 * limit) / 60, 2)


def _folds(recipe: Recipe, splits: Mapping[str, int]) -> None:
    minutes = recipe.estimate["train_minutes"]
    recipe.estimate["cross_validation"] = (
        f"5 folds would take 5 x {minutes:.0f} minutes: not within the budget; "
        "flexseg-train -m dataset.split.folds=5 dataset.split.fold=0,1,2,3,4 runs them"
    )


def _x(values) -> str:
    return " x ".join(f"{v:g}" for v in values)
