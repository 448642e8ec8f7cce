"""flexseg.evaluation: a run scored on one of its splits, with every file it writes."""

from __future__ import annotations

import csv
import json

import pytest

from flexseg.config import EvaluateConfig
from flexseg.errors import ConfigError
from flexseg.evaluation import HEADLINE, evaluate


def test_evaluation_files_and_numbers(trained):
    _, run_dir, _ = trained
    summary = evaluate({"run_dir": str(run_dir), "split": "test", "tta": "flip"})
    out = run_dir / "evaluation" / "test"
    saved = json.loads((out / "evaluation.json").read_text())
    assert saved["images"] == 6 and saved["volumes"] == 1
    assert len(HEADLINE) == 7
    for key in HEADLINE:
        assert key in saved and key in summary
    assert 0.0 <= saved["fg_dice"] <= 1.0 and 0.0 <= saved["pixel_accuracy"] <= 1.0
    assert set(saved["per_class"]) == {"background", "lesion"}
    with (out / "evaluation_images.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6 and {r["group"] for r in rows} == {"p03"}
    with (out / "evaluation.csv").open() as f:
        metrics = dict(csv.reader(f))
    assert float(metrics["fg_dice"]) == pytest.approx(saved["fg_dice"])
    assert saved["checkpoint"] == "best"  # the run's trainer.select_checkpoint


def test_evaluating_the_checkpoint_the_run_did_not_select(trained):
    _, run_dir, _ = trained
    summary = evaluate(EvaluateConfig(run_dir=str(run_dir), checkpoint="last"))
    saved = json.loads((run_dir / "evaluation" / "test_last" / "evaluation.json").read_text())
    assert saved["checkpoint"] == summary["checkpoint"] == "last"
    with pytest.raises(ConfigError, match="checkpoint must be one of"):
        evaluate({"run_dir": str(run_dir), "checkpoint": "final"})


def test_a_folder_without_a_run_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=f"run_dir={tmp_path} holds no config.yaml"):
        evaluate({"run_dir": str(tmp_path)})
