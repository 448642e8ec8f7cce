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


def check_same_config(run_dir: Path, cfg: dict) -> None:
    """Refuses to resume a run with settings other than those it was started with."""
    saved = read_config(run_dir / CONFIG_FILE)

    def flat(d, prefix=""):
        out = {}
        for k, v in d.items():
            out |= flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v}
        return out

    before, now = flat(saved), flat(cfg)
    changed = sorted(
        k for k in before.keys() | now.keys()
        if k != "trainer.resume" and before.get(k) != now.get(k)
    )  # fmt: skip
    if changed:
        raise ConfigError(
            f"{run_dir} was started with other settings; resuming it with changed "
            f"{', '.join(changed[:8])} would mix two runs. Use the run's own overrides "
            "(see its config.yaml) or start a new run."
        )


def load_run(run_dir: str | Path, checkpoint: str | None = None) -> tuple[dict, keras.Model, str]:
    """The config, the model and the checkpoint's name of a finished training run.

    Args:
        run_dir: the run's folder (it holds `config.yaml` and `checkpoints/`).
        checkpoint: `"best"` or `"last"`; None takes the run's `trainer.select_checkpoint`.
    """
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_FILE).is_file():
        raise ConfigError(
            f"run_dir={run_dir} holds no {CONFIG_FILE}; give the folder of a training run."
        )
    cfg = read_config(run_dir / CONFIG_FILE)
    checkpoint = checkpoint or cfg["trainer"].get("select_checkpoint", "best")
    if checkpoint not in ("best", "last"):
        raise ConfigError(f"checkpoint must be best or last. Received: checkpoint={checkpoint!r}")
    path = run_dir / CHECKPOINTS / f"{checkpoint}.keras"
    if not path.is_file():
        raise DataError(f"checkpoint {path} does not exist; was the run trained to an epoch end?")
    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as error:  # a corrupt zip, a foreign model: say which file
        raise DataError(
            f"cannot load checkpoint {path}: {type(error).__name__}: {error}"
        ) from error
    expected = (cfg["model"]["input_shape"][-1], cfg["model"]["num_classes"])
    found = (model.input_shape[-1], model.output_shape[-1])
    if found != expected:
        raise DataError(
            f"checkpoint {path} is not this run's model: it takes {found[0]} channel(s) and "
            f"predicts {found[1]} classes, the run's config {expected[0]} and {expected[1]}; "
            "put the run's own checkpoint back or use its run_dir."
        )
    return cfg, model, checkpoint
