"""A progress bar with count and time left, shown only on a terminal (as Keras' own)."""

from __future__ import annotations

import sys

import keras


class _Silent:
    def add(self, count: int) -> None:
        pass


def progress_bar(total: int, what: str, unit: str = "image") -> keras.utils.Progbar | _Silent:
    """A bar for `total` items of work named `what`; `.add(n)` as they finish. Off the
    terminal (a log file, a cluster job) it prints nothing."""
    if total < 1 or not sys.stdout.isatty():
        return _Silent()
    print(f"{what}: {total} {unit}s", flush=True)
    return keras.utils.Progbar(total, unit_name=unit)
