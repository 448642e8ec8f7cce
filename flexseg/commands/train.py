"""`flexseg-train`: train a model; the run folder gets everything the run makes."""

from __future__ import annotations

from pathlib import Path

from flexseg.commands._app import command
from flexseg.commands._report import postprocess_run
from flexseg.config.schema import TrainConfig


@command(several_processes=True)
def main(cfg: TrainConfig, run_dir: Path) -> float | None:
    """Trains, then with `postprocess=auto` chooses the post-processing on the valid split.

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
    first = find_processes(cluster.coordinator, cluster.num_processes, cluster.process_id).main
    if cfg.postprocess == "auto" and first:
        postprocess_run(summary["run_dir"])
    return summary["best_value"]
