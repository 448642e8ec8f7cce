"""The summary of a sweep (`flexseg-train -m ...`): one row per run, as CSV and Markdown; and,
for the runs of a cross-validation (`dataset.split.folds`), each fold's validation Dice and
their mean and standard deviation."""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from flexseg.config.files import read_config

COLUMNS = [
    "job",
    "overrides",
    "backend",
    "epochs_run",
    "best_epoch",
    "best_val_fg_dice",
    "test_fg_dice_volume_mean",
    "test_fg_dice",
    "train_minutes",
    "run_dir",
]


def sweep_rows(sweep_dir: str | Path, overrides: Mapping[str, Sequence[str]]) -> list[dict]:
    """One row per finished run of a sweep folder (its numbered sub-folders), in job order,
    with the overrides that set it apart from the other runs.

    Args:
        overrides: the command-line overrides of each job, by its sub-folder's name.
    """
    rows = []
    jobs = [p for p in Path(sweep_dir).iterdir() if p.is_dir() and p.name.isdigit()]
    for job in sorted(jobs, key=lambda p: int(p.name)):
        summary_path = job / "train_summary.json"
        if not summary_path.is_file():
            continue  # a run that failed or is still going
        summary = json.loads(summary_path.read_text())
        evaluation = job / "evaluation" / "test" / "evaluation.json"
        tested = json.loads(evaluation.read_text()) if evaluation.is_file() else {}
        rows.append(
            {
                "job": int(job.name),
                "overrides": list(overrides.get(job.name, ())),
                "backend": summary["backend"],
                "epochs_run": summary["epochs_run"],
                "best_epoch": summary["best_epoch"],
                "best_val_fg_dice": summary["best_value"],
                "test_fg_dice_volume_mean": tested.get("fg_dice_volume_mean"),
                "test_fg_dice": tested.get("fg_dice"),
                "train_minutes": round(summary["train_seconds"] / 60, 2),
                "run_dir": str(job),
            }
        )
    # Show what the runs vary; the overrides every run shares are the sweep's fixed settings.
    shared = set.intersection(*(set(r["overrides"]) for r in rows)) if len(rows) > 1 else set()
    for row in rows:
        row["overrides"] = " ".join(o for o in row["overrides"] if o not in shared)
    return rows


def write_sweep_summary(
    sweep_dir: str | Path, overrides: Mapping[str, Sequence[str]]
) -> list[Path]:
    """Writes `sweep_summary.csv` and `sweep_summary.md` into the sweep folder; `overrides`
    as in `sweep_rows`."""
    sweep_dir = Path(sweep_dir)
    rows = sweep_rows(sweep_dir, overrides)
    csv_path = sweep_dir / "sweep_summary.csv"
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)

    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell(row[c]) for c in COLUMNS) + " |" for row in rows]
    md_path = sweep_dir / "sweep_summary.md"
    md_path.write_text("\n".join(lines) + "\n")
    return [csv_path, md_path, *write_cv_summary(sweep_dir, rows)]


def cell(value) -> str:
    """A table cell: floats to four places, nothing for None."""
    return f"{value:.4f}" if isinstance(value, float) else "" if value is None else str(value)


CV_COLUMNS = ["setting", "folds", "fold", "job", "best_val_fg_dice", "test_fg_dice_volume_mean"]


def write_cv_summary(sweep_dir: Path, rows: Sequence[dict]) -> list[Path]:
    """`cv_summary.csv` and `.md` beside the sweep summary when its runs are folds of a
    cross-validation: per setting (the overrides besides the fold), each fold's best
    validation Dice, and mean +- sd (sample standard deviation) over the folds."""
    settings: dict[str, list[dict]] = {}
    for row in rows:
        split = read_config(Path(row["run_dir"]) / "config.yaml")["dataset"]["split"]
        if not split.get("folds"):
            continue
        setting = " ".join(
            o for o in row["overrides"].split() if not o.startswith("dataset.split.fold=")
        )
        settings.setdefault(setting, []).append(
            {"setting": setting, "folds": split["folds"], "fold": split["fold"], **row}
        )
    if not settings:
        return []
    csv_path, md_path = sweep_dir / "cv_summary.csv", sweep_dir / "cv_summary.md"
    lines = ["# Cross-validation", ""]
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for setting, folds in settings.items():
            folds.sort(key=lambda r: r["fold"])
            writer.writerows(folds)
            dice = np.array([r["best_val_fg_dice"] for r in folds], float)  # None: nan
            spread = float(dice.std(ddof=1)) if len(dice) > 1 else 0.0
            count = folds[0]["folds"]
            lines += [
                f"## {setting or 'the sweep'}: {len(folds)} of {count} folds",
                "",
                "| fold | job | best val_fg_dice |",
                "|---|---|---|",
                *(f"| {r['fold']} | {r['job']} | {cell(r['best_val_fg_dice'])} |" for r in folds),
                "",
                f"val_fg_dice over the folds: {dice.mean():.4f} +- {spread:.4f}",
                "",
            ]
    md_path.write_text("\n".join(lines))
    return [csv_path, md_path]
