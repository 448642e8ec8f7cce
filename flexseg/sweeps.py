"""The summary of a sweep (`flexseg-train -m ...`): one row per run, as CSV and Markdown."""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

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

    def cell(value) -> str:
        return f"{value:.4f}" if isinstance(value, float) else "" if value is None else str(value)

    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell(row[c]) for c in COLUMNS) + " |" for row in rows]
    md_path = sweep_dir / "sweep_summary.md"
    md_path.write_text("\n".join(lines) + "\n")
    return [csv_path, md_path]
