"""The command-line decorator: a Hydra app per command, errors as one line and an exit code.

With `compose.py`, the only flexseg module that imports Hydra or OmegaConf.
"""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from flexseg.config.compose import CONF_DIR, load_config, register, typed
from flexseg.config.files import read_config
from flexseg.config.schema import COMMANDS
from flexseg.errors import ConfigError, DataError, ExportError, PreemptedError, TrainingError

REPORTED = (ConfigError, DataError, TrainingError, ExportError, PreemptedError)


def command(name: str) -> Callable:
    """Decorator: makes `main(cfg, run_dir)` the command over `flexseg/conf/<name>.yaml`.

    The command prepares the process (`flexseg.runtime.prepare_process`), composes its own
    config (a key it does not take is refused, with its name, before Hydra makes a folder),
    and calls `main` with the typed config and the folder Hydra made. A flexseg error ends the
    program with one line on stderr and the error's exit code (2; 3 for a training stopped by
    a signal, which can resume), not a traceback.
    """
    schema = COMMANDS[name]
    checked: list = []  # the config of a single run, typed before Hydra made its folder

    def decorate(main: Callable[[Any, Path], Any]) -> Callable[[], Any]:
        @hydra.main(config_path=str(CONF_DIR), config_name=name, version_base="1.3")
        def app(cfg: DictConfig):
            with reported():
                typed_cfg = checked.pop() if checked else typed(cfg, schema)
                return main(typed_cfg, Path(HydraConfig.get().runtime.output_dir))

        @functools.wraps(main)
        def run():
            from flexseg.runtime import prepare_process

            prepare_process()
            register()
            overrides = sys.argv[1:]
            # A single run with plain overrides (no -m, --cfg, --help, ...) is composed and
            # checked here, so that a bad key stops it before Hydra makes a folder; a
            # multirun's jobs are checked one by one as Hydra composes them.
            if not any(arg.startswith("-") for arg in overrides):
                with reported():
                    checked.append(load_config(overrides, name))
            return app()

        return run

    return decorate


@contextlib.contextmanager
def reported() -> Iterator[None]:
    """Turns a flexseg error into its message on stderr and its exit code."""
    try:
        yield
    except REPORTED as error:
        label = "interrupted" if isinstance(error, PreemptedError) else "error"
        print(f"{label}: {error}", file=sys.stderr)
        sys.exit(error.exit_code)


class SweepSummary(Callback):
    """Hydra callback: after a sweep, `sweep_summary.csv` and `.md` in the sweep folder."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from flexseg.sweeps import write_sweep_summary

        sweep = Path(config.hydra.sweep.dir)
        overrides = {
            job.name: list(read_config(job / ".hydra" / "overrides.yaml"))
            for job in sweep.iterdir()
            if (job / ".hydra" / "overrides.yaml").is_file()
        }
        paths = write_sweep_summary(sweep, overrides)
        print(f"sweep summary: {paths[1]}")
