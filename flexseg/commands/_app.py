"""The command decorator: a Hydra app per command, errors as one line and an exit code.

With `_compose.py`, the only flexseg module that imports Hydra or OmegaConf.
"""

from __future__ import annotations

import functools
import gc
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from flexseg.cluster import Processes, check_backend, find_processes
from flexseg.commands._compose import (
    CONF_DIR,
    experiment_files,
    load_config,
    register,
    typed,
)
from flexseg.commands._sweeps import write_sweep_summary
from flexseg.config.files import read_config
from flexseg.errors import ConfigError, DataError, ExportError, PreemptedError, TrainingError

REPORTED = (ConfigError, DataError, TrainingError, ExportError, PreemptedError)


def command(main: Callable[[Any, Path], Any] | None = None, *, several_processes: bool = False):
    """Decorator: makes `main(cfg, run_dir)` of `flexseg/commands/<name>.py` the command
    `flexseg-<name>` over `conf/<name>.yaml`.

    The command prepares the process (`flexseg.runtime.prepare_process`), composes its own
    config (a key it does not take is refused, with its name, before Hydra makes a folder),
    and calls `main` with the typed config and the folder Hydra made. A flexseg error ends the
    program with one line on stderr and the error's exit code (2; 3 for a training stopped by
    a signal, which can resume), not a traceback.

    Args:
        several_processes: the command may run in several processes of one job (a training
            started by flexseg-launch, torchrun or srun); any other refuses them.
    """
    if main is None:
        return functools.partial(command, several_processes=several_processes)
    name = main.__module__.rpartition(".")[2]
    checked: list = []  # the config of a single run, typed before Hydra made its folder

    @hydra.main(config_path=str(CONF_DIR), config_name=name, version_base="1.3")
    def app(cfg: DictConfig):
        outcome = Reported()
        with outcome:
            typed_cfg = checked.pop() if checked else typed(cfg)
            return main(typed_cfg, Path(HydraConfig.get().runtime.output_dir))
        outcome.exit_if_failed()

    @functools.wraps(main)
    def run():
        from flexseg.runtime import prepare_process

        prepare_process()
        register()
        outcome = Reported()
        with outcome:  # experiment=<file>: a search path Hydra's own parsing sees too
            sys.argv[1:] = experiment_files(sys.argv[1:])
        outcome.exit_if_failed()
        overrides = sys.argv[1:]
        # A single run with plain overrides (no -m, --cfg, --help, ...) is composed and
        # checked here, so that a bad key stops it before Hydra makes a folder; a multirun's
        # jobs are checked one by one as Hydra composes them.
        if not any(arg.startswith("-") for arg in overrides):
            outcome = Reported()
            with outcome:
                checked.append(load_config(overrides, name))
                if getattr(checked[0], "run_dir", None) is not None:
                    from flexseg.runs import check_run_dirs

                    # before Hydra makes <run_dir>/logs/...: a folder that is no run stays as
                    # it was
                    check_run_dirs(checked[0].run_dir)
                processes = processes_of(name, checked[0], several_processes)
                if processes.main:  # the others meet process 0 in the folder it holds
                    refuse_a_used_run_folder(name, checked[0], overrides)
                if processes.several and not processes.main:
                    # Process 0's Hydra makes the run folder; the others train into it, and
                    # return nothing: a console script's exit status is what `run` returns.
                    main(checked.pop(), None)
                    return None
            outcome.exit_if_failed()
        return app()

    return run


def refuse_a_used_run_folder(name: str, cfg: Any, overrides: list[str]) -> None:
    """A training into a `hydra.run.dir` that holds a run already is refused before Hydra
    rewrites that run's `.hydra/` files (unless it resumes it: `trainer.resume=auto`)."""
    given = [o.partition("=")[2] for o in overrides if o.startswith("hydra.run.dir=")]
    trainer = getattr(cfg, "trainer", None)
    if name not in ("train", "demo") or not given or trainer is None:
        return
    from flexseg.locks import refuse_if_held
    from flexseg.runs import check_fresh

    folder = Path(given[-1]).expanduser()
    refuse_if_held(folder, "training")
    if trainer.resume != "auto":
        check_fresh(folder)


def processes_of(name: str, cfg: Any, several: bool = False) -> Processes:
    """The processes command `name` runs in; several only for a command that may (`several`,
    a training) on a backend that can.

    Raises:
        ConfigError: several processes for another command, or for TensorFlow.
    """
    import keras

    if not several:
        processes = find_processes()
        if processes.several:
            script = f"flexseg-{name.replace('_', '-')}"
            raise ConfigError(
                f"{script} runs as one process, but this is process {processes.rank} of "
                f"{processes.count} ({processes.source}); start it without flexseg-launch, "
                "torchrun or srun's tasks."
            )
        return processes
    cluster = cfg.trainer.cluster
    processes = find_processes(cluster.coordinator, cluster.num_processes, cluster.process_id)
    check_backend(processes, keras.backend.backend())
    return processes


class Reported:
    """Turns a flexseg error into its message on stderr and its exit code.

    The program exits after the `with` block, not inside it: by then the error's traceback,
    and what the failed call held through it (a training stopped mid-epoch holds TensorFlow's
    data iterators), is released while Python can still run finalisers; left to interpreter
    shutdown, TensorFlow's could abort the process.
    """

    code: int | None = None  # the exit code, once a flexseg error was reported

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, error, traceback) -> bool:
        if not isinstance(error, REPORTED):
            return False
        label = "interrupted" if isinstance(error, PreemptedError) else "error"
        print(f"{label}: {error}", file=sys.stderr)
        self.code = error.exit_code
        return True

    def exit_if_failed(self) -> None:
        if self.code is not None:
            gc.collect()
            sys.exit(self.code)


class SweepSummary(Callback):
    """Hydra callback: after a sweep, `sweep_summary.csv` and `.md` in the sweep folder."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep = Path(config.hydra.sweep.dir)
        overrides = {
            job.name: read_config(job / ".hydra" / "overrides.yaml", list)
            for job in sweep.iterdir()
            if (job / ".hydra" / "overrides.yaml").is_file()
        }
        paths = write_sweep_summary(sweep, overrides)
        print(f"sweep summary: {paths[1]}")
        if len(paths) > 2:
            print(f"cross-validation summary: {paths[3]}")
