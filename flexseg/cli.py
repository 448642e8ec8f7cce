"""Command-line entry points: each is a few lines around a library call.

Every command takes Hydra overrides (`dataset=lgg dataset.root=/data/lgg trainer.epochs=5`)
and writes into its own run directory; `hydra_app` turns a ConfigError or DataError into one
line on stderr and exit code 2.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from flexseg.config import hydra_app


@hydra_app("train")
def stats(cfg: dict) -> None:
    """`flexseg-stats`: dataset statistics and the mask report, as JSON and a bar chart."""
    from flexseg.data.sources import find_samples
    from flexseg.data.stats import dataset_statistics, write_statistics

    splits = find_samples(cfg["dataset"], cfg["seed"])
    result, report = dataset_statistics(cfg["dataset"], splits)
    paths = write_statistics(cfg["_run_dir_"], result, report)
    for split, s in result.items():
        classes = ", ".join(f"{k} {v:.4f}" for k, v in s["class_pixel_fraction"].items())
        print(
            f"{split}: {s['images']} images from {s['groups']} groups, "
            f"sizes {s['image_sizes_wxh']}, {s['fraction_with_foreground']:.0%} with foreground, "
            f"class pixel fractions {classes}"
        )
    print(report.summary())
    print("wrote " + ", ".join(str(p) for p in paths))
    if report.unknown:
        print("error: masks hold colours that are in no rgb_map entry (see above)", file=sys.stderr)
        sys.exit(1)


@hydra_app("train")
def preview_augment(cfg: dict) -> None:
    """`flexseg-preview-augment`: a grid of augmented training images with their masks."""
    from flexseg.data.build import build_datasets
    from flexseg.data.preview import save_augmentation_grid

    train = build_datasets(cfg)["train"]
    path = save_augmentation_grid(
        train, Path(cfg["_run_dir_"]) / "augmentation.png", cfg["preview_samples"]
    )
    print(f"augment={cfg['augment']['name']}: wrote {path}")


@hydra_app("train")
def check(cfg: dict) -> None:
    """`flexseg-check`: the pre-flight check of a training config and its data, and the plan."""
    from flexseg.preflight import check as run_check

    plan = run_check({**cfg, "_run_dir_": None})
    print(plan.describe())
    print("check passed: no problems found")


@hydra_app("train")
def train(cfg: dict) -> float | None:
    """`flexseg-train`: train a model; the run directory gets everything it makes.

    Returns the best value of `trainer.monitor`: the objective of a hyperparameter search.
    """
    from flexseg.training import train as run_training

    summary = run_training(cfg)
    print(
        f"best {summary['monitor']}={summary['best_value']} at epoch {summary['best_epoch']} "
        f"of {summary['epochs_run']}; run_dir={summary['run_dir']}"
    )
    return summary["best_value"]


@hydra_app("train")
def evaluate(cfg: dict) -> None:
    """`flexseg-evaluate run_dir=...`: score a run's best checkpoint on its test split."""
    from flexseg.evaluation import evaluate as run_evaluation

    summary = run_evaluation(cfg)
    print(format_evaluation(summary))


def format_evaluation(summary: dict) -> str:
    """The headline numbers of an evaluation, one per line."""
    keys = [
        "fg_dice",
        "fg_dice_image_mean",
        "fg_dice_volume_mean",
        "fg_dice_volume_median",
        "hd95_volume_mean_px",
        "pixel_accuracy",
        "loss",
    ]
    lines = [f"{summary['split']}: {summary['images']} images, {summary['volumes']} volumes"]
    lines += [f"  {k:<22} {summary[k]:.4f}" for k in keys]
    lines.append(f"  written to {summary['written_to']}")
    return "\n".join(lines)


@hydra_app("train")
def infer(cfg: dict) -> None:
    """`flexseg-infer run_dir=... input=... [output=...]`: masks and overlays for images."""
    from flexseg.inference import infer as run_inference

    written = run_inference(cfg)
    folders = sorted({str(p.parent) for paths in written for p in paths.values()})
    print(f"predicted {len(written)} image(s) into {', '.join(folders)}")


@hydra_app("demo")
def demo(cfg: dict) -> None:
    """`make demo`: train on the built-in sample, evaluate on the unseen patient, predict a
    few of its slices, and say where everything is."""
    from flexseg.data.sources import find_samples
    from flexseg.evaluation import evaluate as run_evaluation
    from flexseg.inference import infer as run_inference
    from flexseg.training import train as run_training

    summary = run_training(cfg)
    run_dir = Path(summary["run_dir"])
    evaluation = run_evaluation({"run_dir": str(run_dir), "split": "test", "tta": cfg["tta"]})
    test = find_samples(cfg["dataset"], cfg["seed"])["test"]
    picks = [test[int(i)].image for i in np.linspace(0, len(test) - 1, 6)]
    written = run_inference({"run_dir": str(run_dir), "input": [str(p) for p in picks]})
    previews = sorted((run_dir / "previews").glob("epoch_*.png"))
    print(format_evaluation(evaluation))
    print(f"training curves:   {run_dir / 'plots'}")
    if previews:
        print(f"epoch previews:    {previews[-1]} (and {len(previews) - 1} earlier)")
    print(
        f"test predictions:  {written[0]['overlay'].parent} (overlays), "
        f"{written[0]['mask'].parent} (palette masks)"
    )
    print(f"fg_dice_volume={evaluation['fg_dice_volume_mean']:.4f} run_dir={run_dir}")
