"""`python -m flexseg <command> [overrides]`: the same as `flexseg-<command> [overrides]`."""

from __future__ import annotations

import sys

from flexseg.cli import COMMANDS

USAGE = (
    f"usage: python -m flexseg {{{','.join(COMMANDS)}}} [key=value ...]\n"
    "  e.g. python -m flexseg train experiment=demo trainer.epochs=3"
)


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        given = f"unknown command {sys.argv[1]!r}\n" if len(sys.argv) > 1 else ""
        print(f"error: {given}{USAGE}", file=sys.stderr)
        sys.exit(2)
    command = sys.argv.pop(1)
    COMMANDS[command]()


if __name__ == "__main__":
    main()
