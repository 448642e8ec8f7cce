"""`flexseg-plan`'s work: the fingerprint, the recipe, the experiment file and its table."""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from flexseg.config.files import read_config
from flexseg.config.schema import DatasetConfig, PlanConfig
from flexseg.data.workers import resolve_workers
from flexseg.from_config import find_samples
from flexseg.planner.fingerprint import PLANNED_SPLITS, Reading, fingerprint
from flexseg.planner.recipe import Machine, Recipe, Timer, plan_recipe

STARTUP_S = 15.0  # a command's imports before its first step, the plan's and the training's
SECTIONS = ("dataset", "model", "trainer", "postprocess")
FINGERPRINTS = Path("~/.cache/flexseg/fingerprints")


def planned_fingerprint(cfg: PlanConfig, workers: int) -> tuple[dict, dict[str, int]]:
    """The dataset's fingerprint (cached), and the samples per split as the plan counts
    them: cases of volumes, or 2D images."""
    dataset = cfg.dataset
    whole = dataclasses.replace(  # volumes as whole cases; its own split, the dataset's kept
        dataset,
        patch_size=[1, 1, 1],
        split=dataclasses.replace(dataset.split, holdout_fraction=0.0),
    )
    splits = find_samples(whole, cfg.seed)
    if not any(s.whole for samples in splits.values() for s in samples[:1]):
        splits = find_samples(dataset, cfg.seed)  # 2D images: as the dataset splits them
    reading = Reading(
        dataset.rgb_map, dataset.color_tolerance, dataset.max_pixels, dataset.max_voxels
    )
    root = (
        Path(cfg.plan.cache_dir).expanduser() if cfg.plan.cache_dir else FINGERPRINTS.expanduser()
    )
    describe = {"name": dataset.name, "root": str(dataset.root), "layout": dataset.layout}
    fp = fingerprint(splits, reading, workers, root, describe, cfg.plan.refresh)
    counts = {split: len(samples) for split, samples in splits.items()}
    counts["valid_groups"] = len({s.group for s in splits.get("valid", [])})
    return fp, counts


def make_recipe(
    cfg: PlanConfig,
    fp: dict,
    counts: dict[str, int],
    machine: Machine,
    timer: Timer,
    started: float,
    clock: Callable[[], float] = time.monotonic,
    workers: int = 1,
) -> Recipe:
    """The recipe, with the training's seconds: the budget less what planning took, the
    commands' start-up and the training's own reading of every sample before it starts."""
    # The training reads each sample again (its check) in one process, as the fingerprint
    # read them in `workers`.
    reading_s = (
        fp.get("seconds", 0.0)
        * max(1, workers)
        * (1 + counts.get("test", 0) / max(1, sum(counts.get(s, 0) for s in PLANNED_SPLITS)))
    )

    def train_seconds() -> float:
        spent = clock() - started
        return 60.0 * cfg.plan.minutes - spent - 2 * STARTUP_S - reading_s

    planned = _planned_counts(fp, counts)
    classes = max(cfg.dataset.num_classes, max(fp["labels_found"], default=0) + 1)
    recipe = plan_recipe(
        fp, machine, timer, train_seconds, planned, classes, counts.get("valid_groups")
    )
    _dataset_facts(recipe, cfg.dataset, fp, classes)
    return recipe


def _planned_counts(fp: dict, counts: dict[str, int]) -> dict[str, int]:
    """Samples per split as the model will see them: 2D images, whole cases of volumes
    planned in 3D, or their slices (counted from the median slices per case) in 2D."""
    counts = {k: v for k, v in counts.items() if k != "valid_groups"}
    if fp["kind"] != "volumes":
        return dict(counts)
    from flexseg.planner.recipe import ANISOTROPY_2D

    if fp["anisotropy"] <= ANISOTROPY_2D:
        return dict(counts)
    spacing = fp["spacing_mm"]["median"]
    axis = max(range(3), key=lambda a: (spacing[a], a))
    per_case = fp["sizes"]["median"][axis]
    return {split: int(n * per_case) for split, n in counts.items()}


def _dataset_facts(recipe: Recipe, dataset: DatasetConfig, fp: dict, classes: int) -> None:
    if classes != dataset.num_classes:
        recipe.set(
            "dataset.num_classes",
            classes,
            f"the masks hold labels {fp['labels_found']}",
        )
        if dataset.class_names and len(dataset.class_names) != classes:
            recipe.set("dataset.class_names", None)
    if fp["kind"] == "images":
        copies = fp["copied_channels"]["share_of_groups"]
        channels = 3 if fp["channels"] >= 3 and copies < 1 else 1
        if channels != dataset.channels:
            recipe.set(
                "dataset.channels",
                channels,
                "colour images" if channels == 3 else "gray images (or copies in every channel)",
            )


def given_dataset(run_dir: Path | None, cfg: PlanConfig) -> tuple[str, dict]:
    """The dataset option the plan was made with (`dataset=<name>`) and each `dataset.*` key
    the command line set, with its value, as the experiment file must repeat them."""
    overrides = []
    if run_dir is not None and (run_dir / ".hydra" / "overrides.yaml").is_file():
        overrides = read_config(run_dir / ".hydra" / "overrides.yaml", list)
    option = "folder"
    keys: dict[str, object] = {"root": str(Path(cfg.dataset.root).expanduser().resolve())}
    for item in overrides:
        key, _, _ = str(item).lstrip("+~").partition("=")
        if key == "dataset":
            option = str(item).partition("=")[2]
        elif key.startswith("dataset.") and key != "dataset.root":
            value = cfg.dataset
            for part in key.split(".")[1:]:
                value = (
                    getattr(value, part, None) if not isinstance(value, dict) else value.get(part)
                )
            keys[key.removeprefix("dataset.")] = value
    return option, keys


def experiment_text(
    recipe: Recipe, option: str, given: dict, fp: dict, machine: Machine, minutes: float, path: Path
) -> str:
    """The experiment file: every setting with its reason as a comment."""
    when = time.strftime("%Y-%m-%d %H:%M")
    size = " x ".join(f"{v:g}" for v in fp["sizes"]["median"])
    lines = [
        "# @package _global_",
        f"# Planned by flexseg-plan on {when} for {machine.device} ({machine.name}, "
        f"{machine.backend}) in {minutes:g} minutes of planning and training.",
        f"# Data: {fp['samples']} {fp['kind']} of {fp['groups']} groups (train + valid), median "
        f"{size}, {fp['channels']} channel(s); fingerprint {fp['key']}.",
        f"# Estimate: {recipe.estimate['epochs']} epochs of {recipe.estimate['epoch_s']:.1f} s, "
        f"{recipe.estimate['train_minutes']:.1f} minutes of training.",
        f"#   flexseg-train experiment={path}",
        "# Every value may be edited; the comments give each one's reason.",
        "defaults:",
        f"  - override /dataset: {option}  # the dataset config it was planned with",
        f"  - override /augment: {recipe.groups['augment']}  # {recipe.reasons['augment']}",
        f"  - override /loss: {recipe.groups['loss']}  # {recipe.reasons['loss']}",
        "",
    ]
    settings = json.loads(json.dumps(recipe.settings))
    dataset = settings.setdefault("dataset", {})
    for key, value in given.items():  # the command line's keys, under the planner's own
        node = dataset
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node.setdefault(last, value)
    for section in SECTIONS:
        if section not in settings:
            continue
        value = settings[section]
        if isinstance(value, dict):
            lines.append(f"{section}:")
            lines += _emit(value, section, recipe.reasons, 1)
        else:
            lines.append(_line(section, value, recipe.reasons.get(section), 0))
    return "\n".join(lines) + "\n"


def _emit(node: dict, prefix: str, reasons: dict, depth: int) -> list[str]:
    lines = []
    for key, value in node.items():
        full = f"{prefix}.{key}"
        if isinstance(value, dict) and not _flow(full):
            lines.append(_line(key, None, reasons.get(full), depth, header=True))
            lines += _emit(value, full, reasons, depth + 1)
        else:
            lines.append(_line(key, value, reasons.get(full), depth))
    return lines


def _flow(key: str) -> bool:
    """Keys whose mapping values are written on one line."""
    return key.endswith(("split.fractions", "split.groups", "rgb_map"))


def _line(key: str, value, reason: str | None, depth: int, header: bool = False) -> str:
    text = "  " * depth + f"{key}:" + ("" if header else f" {json.dumps(value)}")
    return text + (f"  # {reason}" if reason else "")


def table(recipe: Recipe, fp: dict, machine: Machine, width: int = 110) -> str:
    """The plan as a short table: setting, value, reason."""
    rows = [("data", f"{fp['samples']} {fp['kind']}, median {_x(fp['sizes']['median'])}", "")]
    if fp["kind"] == "volumes":
        rows.append(
            (
                "spacing",
                f"{_x(fp['spacing_mm']['median'])} mm",
                f"anisotropy {fp['anisotropy']:.2f}",
            )
        )
    rows.append(("device", f"{machine.device}: {machine.name}", machine.backend))
    shown = [
        "model.spatial_dims", "dataset.image_size", "dataset.patch_size", "model.num_layers",
        "model.base_filters", "model.normalization", "dataset.normalize", "trainer.batch_size",
        "trainer.epochs", "trainer.max_minutes", "trainer.foreground_fraction",
        "dataset.stand_in_channel", "postprocess",
    ]  # fmt: skip
    for key in shown:
        value = recipe.get(key)
        if value is None:
            continue
        reason = recipe.reasons.get(key, "")
        rows.append((key.split(".")[-1], _short(value), reason))
    rows.append(("augment", recipe.groups["augment"], recipe.reasons["augment"]))
    rows.append(("loss", recipe.groups["loss"], ""))
    rows.append(("folds", "not planned", recipe.estimate["cross_validation"]))
    key_w = max(len(r[0]) for r in rows)
    value_w = min(24, max(len(r[1]) for r in rows))
    out = []
    for key, value, reason in rows:
        room = max(20, width - key_w - value_w - 4)
        text = reason if len(reason) <= room else reason[: room - 3] + "..."
        out.append(f"{key:<{key_w}}  {value:<{value_w}}  {text}".rstrip())
    return "\n".join(out)


def _short(value) -> str:
    if isinstance(value, list):
        return " x ".join(str(v) for v in value)
    return str(value)


def _x(values: Sequence[float]) -> str:
    return " x ".join(f"{v:g}" for v in values)


def workers_of(setting) -> int:
    """Processes reading the fingerprint's files: `auto` is every core this process may
    use (the planning process only waits for them)."""
    return resolve_workers(setting) + 1 if setting == "auto" else int(setting)


def summary_json(recipe: Recipe, fp: dict, machine: Machine) -> dict:
    timing = recipe.estimate["timing"]
    return {
        "machine": dataclasses.asdict(machine),
        "settings": recipe.settings,
        "groups": recipe.groups,
        "reasons": recipe.reasons,
        "tried": recipe.tried,
        "estimate": {
            **{k: v for k, v in recipe.estimate.items() if k != "timing"},
            "timing": dataclasses.asdict(timing),
        },
        "fingerprint_key": fp["key"],
        "finite": all(math.isfinite(v) for v in dataclasses.asdict(timing).values()),
    }
