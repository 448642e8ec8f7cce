"""`flexseg-check`: the pre-flight check of a training config and its data, and the plan."""

from __future__ import annotations

from pathlib import Path

from flexseg.commands._app import command
from flexseg.config.schema import TrainConfig


@command
def main(cfg: TrainConfig, run_dir: Path) -> None:
    """Every problem of the config and its files, or the plan of the training."""
    from flexseg import backend, training

    backend.use_compile_cache(cfg.trainer.compile_cache)
    print(training.make_plan(cfg).describe())
    print("check passed: no problems found")
