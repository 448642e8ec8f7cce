"""The commands: one module each (`train.py`, `evaluate.py`, ...), with its `main()`.

A module here (its name not starting with `_`) is a command: `flexseg-<name>` runs its
`main()` (setup.py makes one console script per module), and so does
`python -m flexseg <name>`. A Hydra command's config is `conf/<name>.yaml`; the `_` modules
are what the commands share: Hydra composition (`load_config`), the command decorator and
error reporting, sweep summaries.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path

from flexseg.commands._compose import load_config

FOLDER = Path(__file__).resolve().parent


def names() -> list[str]:
    """Every command's name, as typed: `train`, `preview-augment`, ..."""
    found = [m.name for m in pkgutil.iter_modules([str(FOLDER)]) if not m.name.startswith("_")]
    return sorted(name.replace("_", "-") for name in found)


def run(name: str):
    """Runs command `name` (see `names`) with the arguments in `sys.argv[1:]`."""
    module = importlib.import_module(f"flexseg.commands.{name.replace('-', '_')}")
    return module.main()


def main() -> None:
    """`python -m flexseg <command> [key=value ...]`: the same as `flexseg-<command> ...`."""
    known = names()
    if len(sys.argv) < 2 or sys.argv[1] not in known:
        given = f"unknown command {sys.argv[1]!r}\n" if len(sys.argv) > 1 else ""
        print(
            f"error: {given}usage: python -m flexseg {{{','.join(known)}}} [key=value ...]\n"
            "  e.g. python -m flexseg train experiment=demo trainer.epochs=3",
            file=sys.stderr,
        )
        sys.exit(2)
    run(sys.argv.pop(1))


__all__ = ["load_config", "main", "names", "run"]
