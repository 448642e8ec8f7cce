"""What the commands print of a result, and the post-processing choice two of them make."""

from __future__ import annotations

import math
from pathlib import Path


def postprocess_run(run_dir: str | Path, tta: str = "none") -> None:
    """Chooses the run's post-processing on its valid split, predicted with test-time
    augmentation `tta`, and says what it chose."""
    from flexseg.predict.evaluation import choose_postprocessing
    from flexseg.predict.postprocess import describe

    chosen = choose_postprocessing(run_dir, tta=tta)
    scores = chosen["fg_dice_volume_mean"]
    rule = describe(chosen["rule"])
    print(
        f"post-processing chosen on valid: {rule} (mean volume Dice {scores[rule]:.4f}, "
        f"none {scores['none']:.4f}; all {len(scores)} candidates in "
        f"{Path(run_dir) / 'postprocessing.json'})"
    )


def evaluation_line(summary: dict) -> str:
    """The evaluation in one line, the last a command prints (for a batch job's log)."""
    return (
        f"fg_dice_volume={summary['fg_dice_volume_mean']:.4f} split={summary['split']} "
        f"images={summary['images']} written_to={summary['written_to']}"
    )


def format_evaluation(summary: dict) -> str:
    """The headline numbers of an evaluation, one per line."""
    from flexseg.predict.evaluation import HEADLINE, MM_MEANS

    lines = [f"{summary['split']}: {summary['images']} images, {summary['volumes']} volumes"]
    # a 3D run's loss is not computed (its windows' outputs are not kept): left out
    shown = [k for k in HEADLINE if not (k == "loss" and math.isnan(summary[k]))]
    lines += [f"  {k:<22} {summary[k]:.4f}" for k in shown]
    lines += [f"  {k:<22} {summary[k]:.4f}" for k in MM_MEANS.values() if k in summary]
    classes = list(summary["per_class"].items())[1:]
    if len(classes) > 1:  # each foreground class: Dice of all voxels, means over volumes
        for name, scores in classes:
            means = ", ".join(
                f"{key} {scores[key]:.4f}"
                for key in ("dice_volume_mean", "hd95_volume_mean_mm")
                if key in scores
            )
            lines.append(
                f"  {'dice_' + name:<22} {scores['dice']:.4f}" + (f" ({means})" if means else "")
            )
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
