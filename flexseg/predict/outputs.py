"""The folder predictions are written into, kept safe: nothing of the user's is replaced,
every file appears whole or not at all, and an interrupted run can be finished.

- **Its own files only.** The folder's manifest (`.flexseg-outputs`) records each file
  flexseg wrote there, with its size, and the run and settings that made it. `overwrite=true`
  replaces recorded files only; any other file in the way (the user's, a link, one of another
  tool) is refused, whatever `overwrite` says. A folder that is, or lies inside, a folder of
  the inputs or of the run's data set (its images and masks) is refused.
- **Whole or not at all.** Each file is written under a temporary name beside its final one,
  checked, and renamed: a kill or a full disk never leaves a cut file under a final name. The
  rename replaces a link in the way rather than writing through it, and a subfolder that
  links out of the folder is refused. A full disk is one error that says how much was written.
- **Finished, not redone.** A rerun of the same run and settings skips what the manifest
  records as complete and predicts the rest; other settings are refused unless `overwrite`.
- **One writer at a time.** A lock file names the process that writes; a second one is
  refused with its pid, a lock left by a process that died is taken over.
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

from flexseg.errors import DataError
from flexseg.locks import FolderLock

MANIFEST = ".flexseg-outputs"
PARTIAL = ".flexseg-partial-"
FULL_DISK = (errno.ENOSPC, errno.EDQUOT)


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _ending(name: str) -> str:
    return ".nii.gz" if name.endswith(".nii.gz") else Path(name).suffix


class OutputFolder:
    """A prediction folder, locked while it is written (a context manager).

    Args:
        folder: where the files go.
        identity: what made the predictions (runs, checkpoints, settings), recorded in the
            manifest; a rerun with the same identity finishes, one with another is refused
            unless `overwrite`.
        protected: folders the output folder may not be or lie in (the data set's images
            and masks).
        inputs: folders of the inputs, which no file may be written into.
        overwrite: replace files this folder's manifest records.
    """

    def __init__(
        self,
        folder: str | Path,
        identity: Mapping,
        protected: Iterable[Path] = (),
        inputs: Iterable[Path] = (),
        overwrite: bool = False,
    ):
        self.folder = Path(folder)
        self.identity = json.loads(json.dumps(identity, default=str))
        self.protected = sorted({Path(p).resolve() for p in protected})
        self.inputs = {Path(p).resolve() for p in inputs}
        self.same_settings = False
        self.skipped = 0
        self.overwrite = overwrite
        self.recorded: dict[str, int] = {}
        self.current: set[str] = set()
        self.written = 0
        self._log = None
        self._held: FolderLock | None = None

    # -- the folder ----------------------------------------------------------------------
    def __enter__(self) -> OutputFolder:
        """Checks the folder; nothing is made or locked before `plan` has checked the files."""
        root = self.folder.resolve()
        for folder in self.protected:
            if _inside(root, folder):
                raise DataError(
                    f"output={self.folder} is {'' if root == folder else 'inside '}{folder}, a "
                    "folder of the run's data set: predictions there could replace its images "
                    "or masks. Choose an output folder of its own."
                )
        if self.folder.exists() and not self.folder.is_dir():
            raise DataError(f"output={self.folder} is a file, not a folder; give a folder.")
        if self.folder.is_dir() and not os.access(self.folder, os.W_OK | os.X_OK):
            raise DataError(
                f"cannot write into the output folder {self.folder} (permission denied); choose "
                "a folder you may write to."
            )
        self._read_manifest()
        return self

    def __exit__(self, *exc) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None
        self._unlock()

    def _lock(self) -> None:
        self._held = FolderLock(self.folder, "prediction").__enter__()

    def _unlock(self) -> None:
        if self._held is not None:
            self._held.__exit__(None, None, None)
            self._held = None

    def _read_manifest(self) -> None:
        """The files the manifest records (name -> size), and those of them written under
        this identity (`current`): the ones a rerun of the same settings keeps."""
        path = self.folder / MANIFEST
        lines = path.read_text(errors="replace").splitlines() if path.is_file() else []
        try:
            header = json.loads(lines[0]) if lines else None
        except ValueError:
            header = None
        same = isinstance(header, dict) and header.get("identity") == self.identity
        self.recorded, self.current = {}, set()
        for line in lines[1:]:
            try:
                entry = json.loads(line)
                name, size = str(entry["file"]), int(entry["size"])
            except (ValueError, KeyError, TypeError):
                continue  # the last line of a killed run, cut short
            self.recorded[name] = size
            if same and not entry.get("stale"):
                self.current.add(name)
            else:
                self.current.discard(name)
        self.same_settings = same

    # -- planning ------------------------------------------------------------------------
    def plan(self, planned: Mapping[object, Mapping[str, Path]]) -> list:
        """The keys of `planned` (each with its files) still to predict; makes the folders.

        Raises:
            DataError: a file in the way that this folder's manifest does not record (the
                user's, a link, one of another program), a subfolder that links out, a file
                inside a protected folder, or files of other settings without `overwrite`.
        """
        root = self.folder.resolve()
        foreign, older, done = [], [], set()
        for key, paths in planned.items():
            complete = True
            for path in paths.values():
                parent = path.parent
                if parent.exists() and not _inside(parent.resolve(), root):
                    raise DataError(
                        f"{parent} leads out of the output folder {self.folder} (a link); "
                        "nothing was predicted: choose another output folder."
                    )
                where = parent.resolve()
                if where in self.inputs or any(_inside(where, f) for f in self.protected):
                    raise DataError(
                        f"{path} would be written into a folder of the inputs or of the run's "
                        "data set; nothing was predicted: choose an output folder of its own."
                    )
                name = self._name(path)
                present = path.exists() or path.is_symlink()
                if present and (path.is_symlink() or name not in self.recorded):
                    foreign.append(name)
                elif present and name not in self.current:
                    older.append(name)
                if not (
                    name in self.current
                    and path.is_file()
                    and path.stat().st_size == self.recorded[name]
                ):
                    complete = False
            if complete:
                done.add(key)
        if foreign:
            raise DataError(
                f"{len(foreign)} file(s) in {self.folder} were not written there by flexseg, "
                f"e.g. {foreign[0]}; they are left alone (overwrite=true replaces only flexseg's "
                "own predictions): choose another output folder, or move them away."
            )
        if older and not self.overwrite:
            raise DataError(
                f"{self.folder} holds {len(older)} prediction file(s) of another run or other "
                "settings; set overwrite=true to replace them, or choose another output folder."
            )
        todo = list(planned) if self.overwrite else [k for k in planned if k not in done]
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise DataError(
                f"cannot make the output folder {self.folder}: {error.strerror}; choose a folder "
                "you may write to."
            ) from error
        self._lock()
        if self.same_settings and not self.overwrite:
            self._open_manifest()
        else:
            self._start_manifest()
        self.skipped = len(planned) - len(todo)
        for folder in {p.parent for key in todo for p in planned[key].values()}:
            folder.mkdir(parents=True, exist_ok=True)
            for stale in folder.glob(f".*{PARTIAL}*"):
                stale.unlink(missing_ok=True)  # temporary files of a run that was killed
        return todo

    def _name(self, path: Path) -> str:
        return path.relative_to(self.folder).as_posix()

    def _start_manifest(self) -> None:
        """A manifest of this identity; the files of earlier ones that are still there stay
        recorded as flexseg's (stale: replaced, never kept for a rerun)."""
        path = self.folder / MANIFEST
        tmp = path.with_name(f"{MANIFEST}{PARTIAL}{os.getpid()}")
        kept = {n: size for n, size in self.recorded.items() if (self.folder / n).is_file()}
        lines = [json.dumps({"identity": self.identity})]
        lines += [json.dumps({"file": n, "size": size, "stale": True}) for n, size in kept.items()]
        tmp.write_text("\n".join(lines) + "\n")
        os.replace(tmp, path)
        self.recorded, self.current = kept, set()
        self._open_manifest()

    def _open_manifest(self) -> None:
        self._log = open(self.folder / MANIFEST, "a")  # noqa: SIM115 (closed in __exit__)

    # -- writing -------------------------------------------------------------------------
    def write(self, path: Path, write: Callable[[Path], None]) -> None:
        """Writes one file: `write(temporary path)`, then the rename and its manifest line.

        Raises:
            DataError: the disk is full (saying how much was written), or the writer failed.
        """
        ending = _ending(path.name)
        tmp = path.with_name(f".{path.name[: -len(ending) or None]}{PARTIAL}{os.getpid()}{ending}")
        try:
            write(tmp)
            os.replace(tmp, path)
        except OSError as error:
            tmp.unlink(missing_ok=True)
            if error.errno in FULL_DISK:
                raise DataError(
                    f"the disk of {self.folder} is full: {self.written} file(s) were written "
                    "there, each complete; free some space and run the same command again to "
                    "finish."
                ) from error
            raise DataError(f"cannot write {path}: {error.strerror or error}") from error
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        size = path.stat().st_size
        self.recorded[self._name(path)] = size
        self.current.add(self._name(path))
        self._log.write(json.dumps({"file": self._name(path), "size": size}) + "\n")
        self._log.flush()
        self.written += 1


def write_bytes(path: Path, data: bytes) -> None:
    """`data` into `path` (any name Python can spell, which OpenCV's own writer cannot)."""
    with open(path, "wb") as handle:
        handle.write(data)


def identity_of(runs: Sequence, **settings) -> dict:
    """What makes a set of predictions: the runs, their checkpoints (path, size, time) and
    the settings given."""
    checkpoints = []
    for run in runs:
        path = Path(run.run_dir) / "checkpoints" / f"{run.checkpoint}.keras"
        stat = path.stat() if path.is_file() else None
        checkpoints.append(
            [
                str(path.resolve()),
                stat.st_size if stat else None,
                stat.st_mtime_ns if stat else None,
            ]
        )
    return {"checkpoints": checkpoints, **settings}
