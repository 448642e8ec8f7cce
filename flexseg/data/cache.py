"""The decoded-sample cache: images and masks read, converted and sized once, then mapped.

`dataset.cache=memory` keeps them in shared memory for one run; `dataset.cache=disk` in a
folder that the next run with the same files and read settings maps again. Either way the
arrays sit in one memory-mapped file, so loader worker processes share one copy of them
(the operating system's pages) instead of holding one each. Augmentation and intensity
normalisation still run on every use: they differ per epoch or per group.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import mmap
import os
import shutil
import tempfile
import time
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from flexseg.data.masks import ColorMap
from flexseg.data.reading import ReadSpec
from flexseg.data.sources import Sample
from flexseg.errors import ConfigError

# none | memory (shared by the loader processes, for one run) | disk (a folder reused while
# the files and read settings stay)
CACHE_KINDS = ("none", "memory", "disk")
_VERSION = 1  # of the file layout; part of every key
_ALIGN = 64  # each array starts on a cache line
_INDEX, _DATA = "index.json", "data.bin"


def default_cache_dir() -> Path:
    """Where `dataset.cache=disk` keeps its folders unless `dataset.cache_dir` says."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "flexseg" / "data"


def scratch_dir(prefix: str, nbytes: int) -> Path:
    """A new folder for `nbytes` of this process's shared arrays: in `/dev/shm` (memory) when
    it has room, else in the temporary folder (its pages cached in memory all the same).

    Its name carries the process id: folders of processes that no longer run (killed before
    they could remove them) are removed here.

    Raises:
        ConfigError: neither has room for `nbytes`.
    """
    roots = [Path("/dev/shm"), Path(tempfile.gettempdir())]
    free = {}
    for root in roots:
        if not (root.is_dir() and os.access(root, os.W_OK)):
            continue
        for old in root.glob("flexseg-*-*"):
            pid = old.name.split("-")[1]
            if pid.isdigit() and not _alive(int(pid)):
                shutil.rmtree(old, ignore_errors=True)
        stat = os.statvfs(root)
        free[root] = stat.f_bavail * stat.f_frsize
        if free[root] > nbytes * 1.05:
            return Path(tempfile.mkdtemp(prefix=f"flexseg-{os.getpid()}-{prefix}-", dir=root))
    room = ", ".join(f"{root} {size / 2**20:.1f} MiB" for root, size in free.items())
    raise ConfigError(
        f"the loader needs {nbytes / 2**20:.1f} MiB of shared memory for its {prefix} but has "
        f"{room or 'no writable folder'} free; give the job more (e.g. docker --shm-size), or "
        "lower trainer.prefetch, trainer.workers or trainer.batch_size, or use "
        "dataset.cache=disk."
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def cache_key(
    samples: Sequence[Sample], num_classes: int, spec: ReadSpec, colormap: ColorMap | None
) -> str:
    """A hash of the files (paths, sizes, modification times) and of how they are read."""
    files = []
    for sample in samples:
        for path in (*sample.images, sample.mask):
            stat = os.stat(path)
            files.append([str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns])
        if sample.index is not None:  # a slice of a volume: the same key as before otherwise
            files.append(sample.index)
        if sample.axis is not None:
            files.append(sample.axis)
    colors = None
    if colormap is not None:
        colors = [[c.id, list(c.color)] for c in colormap.classes] + [colormap.tolerance]
    described = {
        "version": _VERSION,
        "spec": dataclasses.asdict(spec),
        "num_classes": num_classes,
        "colors": colors,
        "files": files,
    }
    return hashlib.sha256(json.dumps(described, default=str).encode()).hexdigest()[:24]


class SampleCache:
    """Decoded, sized images and masks of a list of samples, in one memory-mapped file.

    Made by `build_cache`; `get(i)` gives sample `i` as read-only arrays. Pickling it (to a
    loader worker process) sends the folder's name, not the arrays.
    """

    def __init__(self, folder: Path, kind: str, reused: bool = False, seconds: float = 0.0):
        self.folder = Path(folder)
        self.kind = kind
        self.reused = reused
        self.seconds = seconds
        index = json.loads((self.folder / _INDEX).read_text())
        self._images = [(at, tuple(shape), np.dtype(dtype)) for at, shape, dtype in index["images"]]
        self._masks = [(offset, tuple(shape)) for offset, shape in index["masks"]]
        self.nbytes = (self.folder / _DATA).stat().st_size
        self._map = None

    def __len__(self) -> int:
        return len(self._images)

    def get(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Sample `i`: (image (H, W, C) in its file's type, mask (H, W) uint8), read-only."""
        if self._map is None:
            with open(self.folder / _DATA, "rb") as f:
                self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        offset, shape, dtype = self._images[i]
        image = np.ndarray(shape, dtype, buffer=self._map, offset=offset)
        offset, shape = self._masks[i]
        return image, np.ndarray(shape, np.uint8, buffer=self._map, offset=offset)

    def describe(self) -> str:
        how = "reused" if self.reused else f"built in {self.seconds:.1f} s"
        return f"{self.kind}, {self.nbytes / 2**20:.0f} MiB in {self.folder} ({how})"

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_map": None}


def build_cache(
    samples: Sequence[Sample],
    read: Callable[[int], tuple[np.ndarray, np.ndarray]],
    kind: str,
    key: str,
    cache_dir: str | Path | None = None,
    threads: int = 1,
) -> SampleCache | None:
    """The cache of `kind` for these samples, read with `read(i)` where it does not exist yet.

    Args:
        read: sample index -> (sized image, class-id mask), e.g. `Batches.read`.
        kind: `"none"` (returns None), `"memory"` or `"disk"`.
        key: `cache_key(...)` of the samples and read settings: a disk cache of another key
            is another folder, so a changed file or setting rebuilds it.
        cache_dir: the disk cache's parent folder; `default_cache_dir()` when None.
        threads: reading threads (decoding and resizing release the interpreter lock).
    """
    if kind not in CACHE_KINDS:
        raise ConfigError(f"dataset.cache must be one of {CACHE_KINDS}. Received: {kind!r}")
    if kind == "none":
        return None
    if kind == "memory":
        folder = scratch_dir("cache", _estimate(samples, read))
        cache = _write(folder, len(samples), read, threads, kind)
        weakref.finalize(cache, shutil.rmtree, folder, ignore_errors=True)
        return cache
    parent = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    folder = parent / key
    if (folder / _INDEX).is_file():
        return SampleCache(folder, kind, reused=True)
    try:
        parent.mkdir(parents=True, exist_ok=True)
        part = Path(tempfile.mkdtemp(prefix=f"{key}.part-", dir=parent))
    except OSError as error:
        raise ConfigError(
            f"dataset.cache_dir {parent} cannot hold the cache ({error.strerror}); set "
            "dataset.cache_dir to a writable folder or dataset.cache=memory."
        ) from None
    try:
        cache = _write(part, len(samples), read, threads, kind)
        if folder.is_dir():  # left by a run that stopped while it wrote (no index)
            shutil.rmtree(folder, ignore_errors=True)
        os.replace(part, folder)  # whole or not at all, for a concurrent run too
    except OSError:
        shutil.rmtree(part, ignore_errors=True)
        if not (folder / _INDEX).is_file():
            raise
    except BaseException:
        shutil.rmtree(part, ignore_errors=True)
        raise
    return SampleCache(folder, kind, seconds=cache.seconds)


def _estimate(samples: Sequence[Sample], read: Callable) -> int:
    """Bytes of the cache, from the first sample (sizes differ only without an image_size)."""
    image, mask = read(0)
    return len(samples) * (image.nbytes + mask.size + 2 * _ALIGN)


def _write(folder: Path, count: int, read: Callable, threads: int, kind: str) -> SampleCache:
    start = time.monotonic()
    images, masks, offset = [], [], 0
    with open(folder / _DATA, "wb") as f, ThreadPoolExecutor(max(1, threads)) as pool:
        for image, mask in pool.map(read, range(count)):
            for array, entries in ((image, images), (np.asarray(mask, np.uint8), masks)):
                f.write(b"\0" * (-offset % _ALIGN))
                offset += -offset % _ALIGN
                array = np.ascontiguousarray(array)
                f.write(array.tobytes())
                entries.append([offset, list(array.shape), array.dtype.str])
                offset += array.nbytes
    index = {"images": images, "masks": [entry[:2] for entry in masks]}
    (folder / _INDEX).write_text(json.dumps(index))
    return SampleCache(folder, kind, seconds=time.monotonic() - start)
