"""`flexseg-evaluate run_dir=...`: a run's selected checkpoint scored on its test split."""

from __future__ import annotations

from pathlib import Path

from flexseg.commands._app import command
from flexseg.commands._report import evaluation_line, format_evaluation
from flexseg.config.schema import EvaluateConfig


@command
def main(cfg: EvaluateConfig, run_dir: Path) -> None:
    """Scores the run (or ensemble) and prints the headline numbers."""
    from flexseg import backend
    from flexseg.predict.evaluation import evaluate

    backend.use_compile_cache(cfg.compile_cache)
    summary = evaluate(cfg)
    print(format_evaluation(summary))
    print(evaluation_line(summary))
