"""The commands: one short function each around a library call.

Each command has its own config (`flexseg/conf/<command>.yaml`, schema in flexseg/config/schema.py)
and takes Hydra overrides (`dataset=lgg dataset.root=/data/lgg trainer.epochs=5`); a key it
does not take is refused with its name. `flexseg.config.app.command` turns a flexseg error
into one line on stderr and exit code 2. Run them as `flexseg-<command>` or
`python -m flexseg <command>`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from flexseg.config.app import command
from flexseg.config.schema import (
    EvaluateConfig,
    ExportConfig,
    InferConfig,
    PreviewAugmentConfig,
    StatsConfig,
    TrainConfig,
)

DEMO_TTA = "flip"  # the demo's evaluation: the mean of the image's and its mirror's prediction


@command("train")
def train(cfg: TrainConfig, run_dir: Path) -> float | None:
    """`flexseg-train`: train a model; the run directory gets everything it makes.

    Returns the best value of `trainer.monitor`: the objective of a hyperparameter search.
    """
    from flexseg import backend, training
    from flexseg.cluster import find_processes

    backend.use_compile_cache(cfg.trainer.compile_cache)
    summary = training.train(cfg, run_dir)
    print(
        f"best {summary['monitor']}={summary['best_value']} at epoch {summary['best_epoch']} "
        f"of {summary['epochs_run']}; run_dir={summary['run_dir']}"
    )
    cluster = cfg.trainer.cluster
    main = find_processes(cluster.coordinator, cluster.num_processes, cluster.process_id).main
    if cfg.postprocess == "auto" and main:
        postprocess_run(summary["run_dir"])
    return summary["best_value"]


def postprocess_run(run_dir: str | Path, tta: str = "none") -> None:
    """Chooses the run's post-processing on its valid split, predicted with test-time
    augmentation `tta`, and says what it chose."""
    from flexseg.evaluation import choose_postprocessing
    from flexseg.postprocess import describe

    chosen = choose_postprocessing(run_dir, tta=tta)
    scores = chosen["fg_dice_volume_mean"]
    rule = describe(chosen["rule"])
    print(
        f"post-processing chosen on valid: {rule} (mean volume Dice {scores[rule]:.4f}, "
        f"none {scores['none']:.4f}; all {len(scores)} candidates in "
        f"{Path(run_dir) / 'postprocessing.json'})"
    )


@command("check")
def check(cfg: TrainConfig, run_dir: Path) -> None:
    """`flexseg-check`: the pre-flight check of a training config and its data, and the plan."""
    from flexseg import backend, training

    backend.use_compile_cache(cfg.trainer.compile_cache)
    print(training.make_plan(cfg).describe())
    print("check passed: no problems found")


@command("evaluate")
def evaluate(cfg: EvaluateConfig, run_dir: Path) -> None:
    """`flexseg-evaluate run_dir=...`: score a run's selected checkpoint on its test split."""
    from flexseg import backend, evaluation

    backend.use_compile_cache(cfg.compile_cache)
    print(format_evaluation(evaluation.evaluate(cfg)))


@command("infer")
def infer(cfg: InferConfig, run_dir: Path) -> None:
    """`flexseg-infer run_dir=... input=... [output=...]`: masks and overlays for images."""
    from flexseg import backend, inference

    backend.use_compile_cache(cfg.compile_cache)
    written = inference.infer(cfg)
    folders = sorted({str(p.parent) for paths in written for p in paths.values()})
    print(f"predicted {len(written)} image(s) into {', '.join(folders)}")


@command("export")
def export(cfg: ExportConfig, run_dir: Path) -> None:
    """`flexseg-export run_dir=... format=onnx|tf_saved_model|litert|torch`: the run's model
    for deployment, checked by its own runtime, with preprocessing.json and model_card.md."""
    from flexseg import backend
    from flexseg.export import export as export_run

    backend.use_compile_cache(cfg.compile_cache)
    result = export_run(cfg)
    print(
        f"exported {result['format']} to {result['folder']} (checked on {result['checked_on']}: "
        f"probabilities within {result['max_difference']:.2g} of the Keras model's)"
    )


@command("stats")
def stats(cfg: StatsConfig, run_dir: Path) -> None:
    """`flexseg-stats`: dataset statistics and the mask report, as JSON and a bar chart."""
    from flexseg.data.sources import find_samples
    from flexseg.data.stats import dataset_statistics, write_statistics

    splits = find_samples(cfg.dataset, cfg.seed)
    result, report = dataset_statistics(cfg.dataset, splits)
    paths = write_statistics(run_dir, result, report)
    for split, s in result.items():
        classes = ", ".join(f"{k} {v:.4f}" for k, v in s["class_pixel_fraction"].items())
        print(
            f"{split}: {s['images']} images from {s['groups']} groups, "
            f"sizes {s['image_sizes_wxh']}, {s['fraction_with_foreground']:.0%} with foreground, "
            f"class pixel fractions {classes}"
        )
        if s["groups_with_copied_channels"]:
            print(
                f"{split}: {len(s['groups_with_copied_channels'])} group(s) whose image channels "
                "are copies of each other (one sequence standing in for missing ones): "
                + ", ".join(s["groups_with_copied_channels"])
            )
    print(report.summary())
    print("wrote " + ", ".join(str(p) for p in paths))
    if report.unknown:
        print("error: masks hold colours that are in no rgb_map entry (see above)", file=sys.stderr)
        sys.exit(1)


@command("preview_augment")
def preview_augment(cfg: PreviewAugmentConfig, run_dir: Path) -> None:
    """`flexseg-preview-augment`: a grid of augmented training images with their masks."""
    from dataclasses import replace

    from flexseg.data.build import build_datasets
    from flexseg.data.preview import save_augmentation_grid

    # A few samples are shown: no cache of the whole split is built for them.
    uncached = replace(cfg, dataset=replace(cfg.dataset, cache="none"))
    train_data = build_datasets(uncached, only="train")["train"]
    path = save_augmentation_grid(train_data, run_dir / "augmentation.png", cfg.preview_samples)
    print(f"augment={cfg.augment.name}: wrote {path}")


@command("demo")
def demo(cfg: TrainConfig, run_dir: Path) -> None:
    """`make demo`: train on the built-in sample, evaluate on the unseen patient, predict a
    few of its slices, and say where everything is."""
    import numpy as np

    from flexseg import backend, evaluation, inference, training
    from flexseg.data.sources import find_samples

    backend.use_compile_cache(cfg.trainer.compile_cache)
    summary = training.train(cfg, run_dir)
    if cfg.postprocess == "auto":
        postprocess_run(run_dir, DEMO_TTA)
    scores = evaluation.evaluate(EvaluateConfig(run_dir=str(run_dir), tta=DEMO_TTA))
    test = find_samples(cfg.dataset, cfg.seed)["test"]
    picks = [str(test[int(i)].image) for i in np.linspace(0, len(test) - 1, 6)]
    written = inference.infer(InferConfig(run_dir=str(run_dir), input=picks))
    previews = sorted((run_dir / "previews").glob("epoch_*.png"))
    print(format_evaluation(scores))
    print(f"training curves:   {run_dir / 'plots'}")
    if previews:
        print(f"epoch previews:    {previews[-1]} (and {len(previews) - 1} earlier)")
    print(
        f"test predictions:  {written[0]['overlay'].parent} (overlays), "
        f"{written[0]['mask'].parent} (palette masks)"
    )
    print(f"fg_dice_volume={scores['fg_dice_volume_mean']:.4f} run_dir={summary['run_dir']}")


def format_evaluation(summary: dict) -> str:
    """The headline numbers of an evaluation, one per line."""
    from flexseg.evaluation import HEADLINE

    lines = [f"{summary['split']}: {summary['images']} images, {summary['volumes']} volumes"]
    lines += [f"  {k:<22} {summary[k]:.4f}" for k in HEADLINE]
    missed = summary["volumes_missed"]
    lines.append(
        f"  {'volumes_missed':<22} {len(missed)} of {summary['volumes_with_foreground']} with "
        "foreground got no prediction" + (f": {', '.join(missed)}" if missed else "")
    )
    lines.append(
        f"  {'lesions':<22} {summary['lesions_detected']} detected, "
        f"{summary['lesions_missed']} missed, {summary['lesions_false']} false"
    )
    found = ", ".join(
        f"{size} {n['detected']}/{n['lesions']}"
        for size, n in summary["lesions_by_size"].items()
        if n["lesions"]
    )
    lines.append(f"  {'lesions found by size':<22} {found or 'no lesion'}")
    worst = ", ".join(f"{g} {d:.3f}" for g, d in summary["worst_volumes"].items())
    lines.append(f"  {'lowest volume Dice':<22} {worst}")
    lines.append(f"  written to {summary['written_to']}")
    return "\n".join(lines)


COMMANDS = {
    "train": train,
    "evaluate": evaluate,
    "infer": infer,
    "export": export,
    "check": check,
    "stats": stats,
    "preview-augment": preview_augment,
    "demo": demo,
}
