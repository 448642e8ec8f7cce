"""A lock file per folder that one flexseg process writes into (a prediction folder, a
training run's folder): a second process is refused with the first one's pid, and a lock
left by a process that died is taken over.

Example:
>>> with FolderLock("outputs/lgg/my_run", "training"):
...     ...
"""

from __future__ import annotations

import os
from pathlib import Path

from flexseg.errors import DataError

LOCK = ".flexseg-lock"


class FolderLock:
    """`<folder>/.flexseg-lock` holding this process's pid, while the context runs.

    Args:
        folder: the folder; it must exist.
        what: what the process does there, for the message (`training`, `predicting`).
    """

    def __init__(self, folder: str | Path, what: str):
        self.path = Path(folder) / LOCK
        self.what = what
        self.held = False

    def __enter__(self) -> FolderLock:
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                refuse_if_held(self.path.parent, self.what)
                self.path.unlink(missing_ok=True)  # left by a process that is gone
                continue
            with os.fdopen(fd, "w") as handle:
                handle.write(f"{os.getpid()}\n")
            self.held = True
            return self
        raise DataError(f"cannot take the lock {self.path}; remove it if no flexseg process runs.")

    def __exit__(self, *exc) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False


def refuse_if_held(folder: str | Path, what: str) -> None:
    """Raises when another live process holds `folder`'s lock; a stale lock is left as is.

    Raises:
        DataError: naming the process and its lock.
    """
    path = Path(folder) / LOCK
    pid = holder(path) if path.is_file() else None
    if pid is not None and pid != os.getpid() and alive(pid):
        raise DataError(
            f"{path.parent} is in use: process {pid} is writing there (its lock {path}); wait "
            f"for it to end, or choose another folder for this {what}."
        )


def holder(lock: Path) -> int | None:
    """The pid a lock file names, if it names one."""
    try:
        return int(lock.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True
