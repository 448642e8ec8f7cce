"""Run directories: where a training run keeps its config, checkpoints and results."""

from __future__ import annotations

import time
from pathlib import Path

import keras

import flexseg.losses
import flexseg.metrics
import flexseg.models  # noqa: F401  (registers the classes a checkpoint names)
from flexseg.config import read_config
from flexseg.errors import ConfigError, DataError

CONFIG_FILE = "config.yaml"
CHECKPOINTS = "checkpoints"


def new_run_dir(cfg: dict) -> Path:
    """A fresh `outputs/<dataset>/<time>` folder for a run started outside Hydra."""
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    base = Path("outputs") / cfg["dataset"]["name"] / stamp
    path, n = base, 1
    while path.exists():
        path, n = base.with_name(f"{stamp}_{n}"), n + 1
    return path


def check_fresh(run_dir: Path) -> None:
    """Refuses to start a new run in a folder that already holds one."""
    if (run_dir / CHECKPOINTS).exists() or (run_dir / "history.csv").exists():
        raise DataError(
            f"{run_dir} already holds a training run; choose a new run directory (the default "
            "is a new timestamped folder) so that nothing of it is overwritten."
        )


def load_run(run_dir: str | Path, checkpoint: str = "best") -> tuple[dict, keras.Model]:
    """The config and the model of a finished training run.

    Args:
        run_dir: the run's folder (it holds `config.yaml` and `checkpoints/`).
        checkpoint: `"best"` or `"last"`.
    """
    run_dir = Path(run_dir)
    if checkpoint not in ("best", "last"):
        raise ConfigError(f"checkpoint must be best or last. Received: checkpoint={checkpoint!r}")
    if not (run_dir / CONFIG_FILE).is_file():
        raise ConfigError(
            f"run_dir={run_dir} holds no {CONFIG_FILE}; give the folder of a training run."
        )
    cfg = read_config(run_dir / CONFIG_FILE)
    path = run_dir / CHECKPOINTS / f"{checkpoint}.keras"
    if not path.is_file():
        raise DataError(f"checkpoint {path} does not exist; was the run trained to an epoch end?")
    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as error:  # a corrupt zip, a foreign model: say which file
        raise DataError(
            f"cannot load checkpoint {path}: {type(error).__name__}: {error}"
        ) from error
    return cfg, model
