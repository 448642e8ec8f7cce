"""Volumes (NIfTI, NRRD, MetaImage): checked from their header, read whole into one axis
order, normalised per channel, cut into the slices 2D models see, and label volumes written
back on the grid they came from.

Every volume is brought to the RAS+ axis order on reading (array axis 0 runs from left to
right, 1 from posterior to anterior, 2 from inferior to superior, whatever order and signs
the file stores), with its spacing in that order; predictions are turned
back to the file's order and written with its affine. Decoded volumes are kept in a small
per-process store (`MEMO_BYTES`), as a volume's slices are read one by one.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from flexseg.data import readers
from flexseg.data.files import file_kind
from flexseg.data.readers import Header
from flexseg.errors import DataError

# The most voxels (all channels) a volume header may declare, unless dataset.max_voxels says.
MAX_VOXELS = 2**30
# Slice axes of the RAS order by name; "auto" is the axis of coarsest spacing.
AXIS_NAMES = {"sagittal": 0, "coronal": 1, "axial": 2}
SLICE_AXES = ("auto", "0", "1", "2", *AXIS_NAMES)
MEMO_BYTES = 2**30  # decoded volumes kept per process
_PEEK = 65536  # bytes read before the header is checked
_TOLERANCE = 1e-3  # mm: channels and label must lie on one grid to within this


@dataclass(frozen=True)
class Geometry:
    """Where a volume's voxels lie.

    Args:
        affine: 4 x 4, from the file's voxel indices to RAS millimetres.
        file_shape: the spatial shape in the file's own axis order.
    """

    affine: np.ndarray
    file_shape: tuple[int, int, int]

    @property
    def _ornt(self) -> np.ndarray:
        from nibabel import orientations

        return orientations.io_orientation(self.affine)

    @property
    def orientation(self) -> str:
        """The file's axis codes, e.g. "LAS" (axis 0 runs to the left)."""
        from nibabel import orientations

        return "".join(orientations.ornt2axcodes(self._ornt))

    @property
    def shape(self) -> tuple[int, int, int]:
        """The spatial shape in RAS order."""
        out = [0, 0, 0]
        for size, (axis, _) in zip(self.file_shape, self._ornt, strict=True):
            out[int(axis)] = size
        return tuple(out)

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in millimetres along each RAS axis."""
        sizes = np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0))
        out = [0.0, 0.0, 0.0]
        for size, (axis, _) in zip(sizes, self._ornt, strict=True):
            out[int(axis)] = float(size)
        return tuple(out)

    def to_canonical(self, array: np.ndarray) -> np.ndarray:
        """(file axes..., rest) -> (R, A, S, rest)."""
        from nibabel import orientations

        return orientations.apply_orientation(array, self._ornt)

    def to_file(self, array: np.ndarray) -> np.ndarray:
        """(R, A, S, rest) -> (file axes..., rest): `to_canonical` undone."""
        from nibabel import orientations

        back = orientations.ornt_transform(orientations.axcodes2ornt("RAS"), self._ornt)
        return orientations.apply_orientation(array, back)

    def same_grid(self, other: Geometry) -> str | None:
        """Why `other` does not lie on this grid (shape, or affine beyond `_TOLERANCE` mm),
        or None."""
        if self.file_shape != other.file_shape:
            return f"shape {list(other.file_shape)} where {list(self.file_shape)} is expected"
        corners = np.array([[0, 0, 0, 1], [*(n - 1 for n in self.file_shape), 1]], float).T
        apart = np.abs(self.affine @ corners - other.affine @ corners).max()
        if apart > _TOLERANCE:
            return f"an affine that places its voxels up to {apart:.3g} mm off those"
        return None


@dataclass(frozen=True)
class Volume:
    """Voxels in RAS order, (X, Y, Z, C) float32 for an image, (X, Y, Z) integers for a label
    volume, and where they lie."""

    voxels: np.ndarray
    geometry: Geometry


def peek(path: str | Path, what: str = "image", max_voxels: int = MAX_VOXELS) -> Header:
    """A volume file's header, checked before any voxel is read.

    Raises:
        DataError: naming the file: missing or no regular file, empty, of no volume format,
            a header that does not parse, or more voxels than `max_voxels` (the
            `dataset.max_voxels` setting).
    """
    return _peek(Path(path), what, max_voxels)[0]


def _peek(path: Path, what: str, max_voxels: int) -> tuple[Header, bytes]:
    """`peek`'s header, and the first bytes of the file it was read from."""
    kind = file_kind(path)
    if kind != "file":
        raise DataError(f"cannot read {what} {path}: it is {kind}; put the {what} file there.")
    with open(path, "rb") as f:
        start = f.read(_PEEK)
    if not start:
        raise DataError(f"cannot read {what} {path}: it is empty; replace or remove the file.")
    try:
        reader = readers.reader_for(start)
        if not reader.volume:
            raise DataError(f"it is a {reader.name.upper()} picture, not a volume")
        header = reader.header(start)
        size = path.stat().st_size
        if header.needed_bytes and size < header.needed_bytes:
            raise DataError(
                f"it is truncated: its voxels need {header.needed_bytes:,} bytes but the file "
                f"has {size:,}"
            )
    except DataError as error:
        raise DataError(
            f"cannot read {what} {path}: {error}; replace or remove the file."
        ) from None
    if header.voxels > max_voxels:
        raise DataError(
            f"{what} {path} is {' x '.join(map(str, header.shape))} voxels "
            f"({header.voxels:,}), more than dataset.max_voxels={max_voxels:,}; crop or "
            "resample the file, or raise dataset.max_voxels if a volume that large is meant "
            "to be read."
        )
    if header.missing:
        raise DataError(
            f"cannot read {what} {path}: it is truncated: {header.missing}; replace or remove "
            "the file."
        )
    if what != "image" and math.prod(header.shape[3:]) > 1:  # (X, Y, Z, 1) is read as 3D
        raise DataError(
            f"label volume {path} has {len(header.shape)} axes {list(header.shape)}; a label "
            "volume has three (one class id per voxel)."
        )
    if len(header.shape) < 2:
        raise DataError(
            f"{what} {path} has 1 axis {list(header.shape)}; a volume has three, and an image "
            "volume may have a fourth for its channels."
        )
    if len(header.shape) > 4:
        raise DataError(
            f"{what} {path} has {len(header.shape)} axes {list(header.shape)}; flexseg reads "
            "volumes of three axes and a fourth for channels."
        )
    return header, start


def geometry(path: str | Path, what: str = "image", max_voxels: int = MAX_VOXELS) -> Geometry:
    """Where a volume's voxels lie, from its header (the voxels are not read)."""
    return _memo(("geometry", *_stat(path), what), lambda: _geometry(Path(path), what, max_voxels))


def _geometry(path: Path, what: str, max_voxels: int) -> Geometry:
    header, start = _peek(path, what, max_voxels)
    try:
        affine = readers.by_name(header.format).affine(path, start)
    except DataError as error:
        raise DataError(
            f"cannot read {what} {path}: {error}; replace or remove the file."
        ) from None
    if not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise DataError(
            f"{what} {path} has an affine that places no voxel ({affine[:3].tolist()}); fix "
            "its header (qform/sform)."
        )
    return Geometry(affine, _spatial(header.shape))


def _spatial(shape: Sequence[int]) -> tuple[int, int, int]:
    return tuple(int(n) for n in (*shape[:3], 1, 1)[:3])


def load(path: str | Path, what: str = "image", max_voxels: int = MAX_VOXELS) -> Volume:
    """A volume read whole, checked and brought to RAS order.

    `what` "image": (X, Y, Z, C) float32, whatever the stored type (a 4D file's fourth axis
    is its channels); "label": (X, Y, Z) class ids as uint8 (uint16 above 255).

    Raises:
        DataError: naming the file: anything `peek` refuses, a gzip stream cut short or
            corrupt, NaN or infinite intensities, label values that are not whole numbers or
            are negative.
    """
    key = ("volume", *_stat(path), what)
    return _memo(key, lambda: _load(Path(path), what, max_voxels))


def _load(path: Path, what: str, max_voxels: int) -> Volume:
    header = peek(path, what, max_voxels)
    place = geometry(path, what, max_voxels)
    try:
        voxels, _ = readers.by_name(header.format).read(path)
    except DataError as error:
        raise DataError(
            f"cannot read {what} {path}: {error}; replace or remove the file."
        ) from None
    if voxels.ndim == 2:
        voxels = voxels[..., None]
    if what == "image":
        voxels = np.asarray(voxels, np.float32)
        if voxels.ndim == 3:
            voxels = voxels[..., None]
        bad = ~np.isfinite(voxels)
        if bad.any():
            raise DataError(
                f"image volume {path} has {int(bad.sum()):,} NaN or infinite voxel(s); fill "
                "them (e.g. with 0) or remove the file."
            )
    else:
        voxels = label_values(np.asarray(voxels).reshape(voxels.shape[:3]), path)
    return Volume(np.ascontiguousarray(place.to_canonical(voxels)), place)


def label_values(voxels: np.ndarray, path: Path) -> np.ndarray:
    """A label volume's values as integer class ids, or an error naming the file."""
    if np.issubdtype(voxels.dtype, np.floating):
        if not np.isfinite(voxels).all():
            raise DataError(
                f"label volume {path} has NaN or infinite voxels; labels are class ids."
            )
        fractional = voxels != np.round(voxels)
        if fractional.any():
            shown = np.unique(voxels[fractional])[:3].tolist()
            raise DataError(
                f"label volume {path} holds values that are not whole numbers ({shown} ...); "
                "a label volume holds class ids 0..n-1 (resampled with nearest neighbour)."
            )
    if voxels.size and voxels.min() < 0:
        raise DataError(f"label volume {path} holds negative values; labels are class ids 0..n-1.")
    top = int(voxels.max(initial=0))
    return voxels.astype(np.uint8 if top < 256 else np.uint16)


def normalized(
    path: str | Path,
    normalize: str,
    clip_percentiles: Sequence[float] | None,
    ignore_zero: bool,
    max_voxels: int = MAX_VOXELS,
    stats: Sequence[Sequence[float]] | None = None,
) -> np.ndarray:
    """An image volume (X, Y, Z, C) as the model reads it, kept for the slices after it.

    `normalize` "volume_zscore" standardises each channel with its own mean and standard
    deviation, after clipping at `clip_percentiles` of the volume; with `ignore_zero` the
    statistics are of the non-zero voxels and zero voxels stay 0 (the outside of a
    skull-stripped brain, as nnU-Net does for MRI). "dataset_zscore" clips each channel at
    its `stats` (low, high, mean, std: one row per channel, from `foreground_intensities`
    of the training cases) and standardises it with their mean and std, as nnU-Net does for
    CT. "none" keeps the raw intensities.
    """
    clip = tuple(clip_percentiles) if clip_percentiles else None
    rows = tuple(tuple(float(v) for v in row) for row in stats) if stats is not None else None
    key = ("normalized", *_stat(path), normalize, clip, ignore_zero, rows)

    def make() -> np.ndarray:
        voxels = load(path, "image", max_voxels).voxels
        if normalize == "none":
            return voxels
        if normalize == "dataset_zscore":
            if rows is None or len(rows) != voxels.shape[-1]:
                raise DataError(
                    f"dataset.normalize=dataset_zscore needs dataset.intensity_stats, one [low, "
                    f"high, mean, std] per channel of {path} ({voxels.shape[-1]}); training "
                    "computes them from its cases."
                )
            low, high, mean, std = (np.array(v, np.float32) for v in zip(*rows, strict=True))
            return (np.clip(voxels, low, high) - mean) / np.maximum(std, 1e-8)
        return np.stack(
            [zscore(voxels[..., c], clip, ignore_zero) for c in range(voxels.shape[-1])], -1
        )

    return _memo(key, make)


def case_channels(images: Sequence[Path], max_voxels: int = MAX_VOXELS) -> list[np.ndarray]:
    """Each channel (X, Y, Z) of a case's image files in channel order, as `load` reads them."""
    return [
        c for path in images for c in np.moveaxis(load(path, "image", max_voxels).voxels, -1, 0)
    ]


def foreground_intensities(
    cases: Sequence[tuple[Sequence[Path], Path]],
    percentiles: Sequence[float] = (0.5, 99.5),
    per_case: int = 10000,
    max_voxels: int = MAX_VOXELS,
) -> list[list[float]]:
    """[low, high, mean, std] of each channel's intensities over the foreground (label > 0)
    of the cases ((image files, label file) each): the `percentiles` and the mean and
    standard deviation of up to `per_case` seeded voxels of each case, as nnU-Net's
    fingerprint samples them for CT. One case is held at a time."""
    rng = np.random.default_rng(0)
    found: list[list[np.ndarray]] = []
    for images, label in cases:
        inside = load(label, "label", max_voxels).voxels > 0
        picked = np.flatnonzero(inside.ravel())
        if picked.size > per_case:
            picked = rng.choice(picked, per_case, replace=False)
        channels = case_channels(images, max_voxels)
        found += [[] for _ in range(len(channels) - len(found))]
        for c, channel in enumerate(channels):
            found[c].append(channel.ravel()[picked])
    rows = []
    for values in found:
        values = np.concatenate(values) if values else np.zeros(0, np.float32)
        if values.size == 0:
            raise DataError(
                "the training cases have no foreground voxel to compute "
                "dataset.normalize=dataset_zscore's statistics from; check the labels."
            )
        low, high = np.percentile(values, percentiles)
        clipped = np.clip(values, low, high)
        rows.append([float(low), float(high), float(clipped.mean()), float(clipped.std())])
    return rows


def zscore(channel: np.ndarray, clip: Sequence[float] | None, ignore_zero: bool) -> np.ndarray:
    """One channel standardised by its own statistics (see `normalized`)."""
    inside = channel != 0 if ignore_zero else np.ones(channel.shape, bool)
    values = channel[inside]
    if values.size == 0:
        return np.zeros_like(channel)
    if clip is not None:
        low, high = np.percentile(values, clip)
        values = np.clip(values, low, high)
    mean, std = float(values.mean()), float(values.std())
    out = np.zeros_like(channel) if ignore_zero else np.empty_like(channel)
    out[inside] = (values - mean) / max(std, 1e-8)
    return out


def cut(voxels: np.ndarray, axis: int | None, index: int | None, context: int = 0) -> np.ndarray:
    """Slice `index` of (X, Y, Z, ...) along `axis`, with `context` neighbours on each side
    as further channels (the edge slice repeated beyond the ends): (H, W, C * (2 * context +
    1)), neighbours in order, channels within each. `axis` None: the whole volume."""
    if axis is None:
        return voxels
    if context == 0:
        return np.take(voxels, index, axis=axis)
    size = voxels.shape[axis]
    picked = [min(max(index + k, 0), size - 1) for k in range(-context, context + 1)]
    parts = [np.take(voxels, i, axis=axis) for i in picked]
    return np.stack(parts, -1) if parts[0].ndim == 2 else np.concatenate(parts, -1)


def slice_axis(choice: str, spacings: Sequence[Sequence[float]]) -> int:
    """The RAS axis a 2D model slices along: `choice` by number or name, or for "auto" the
    axis of coarsest median spacing (nnU-Net's 2D choice); of equal spacings the last
    (axial slices of an isotropic scan)."""
    if choice in AXIS_NAMES:
        return AXIS_NAMES[choice]
    if choice != "auto":
        return int(choice)
    median = np.median(np.asarray(spacings, float), axis=0) if len(spacings) else np.ones(3)
    coarsest = np.flatnonzero(median >= median.max() * (1 - 1e-6))
    return int(coarsest[-1])


def write_labels(
    path: str | Path, labels: np.ndarray, like: str | Path, probabilities: bool = False
) -> Path:
    """Writes a volume in RAS order ((X, Y, Z) class ids, or (X, Y, Z, K) probabilities) as
    NIfTI on the grid of the volume `like`: turned back to its axis order, with its affine,
    and with its header where it is NIfTI."""
    import nibabel as nib

    place = geometry(like)
    data = place.to_file(labels)
    header = None
    if peek(like).format == "nifti":
        header = nib.load(like).header.copy()
        header.set_data_dtype(np.float32 if probabilities else data.dtype)
        header.set_slope_inter(1.0, 0.0)
    image = nib.Nifti1Image(data, place.affine, header)
    image.set_qform(place.affine, code=1)
    image.set_sform(place.affine, code=1)
    path = Path(path)
    nib.save(image, path)
    return path


def _stat(path: str | Path) -> tuple:
    path = Path(path)
    try:
        stat = path.stat()
    except OSError:
        return (str(path), None, None)  # read later, which names what is wrong
    return (str(path.resolve()), stat.st_size, stat.st_mtime_ns)


_STORE: OrderedDict = OrderedDict()
_STORE_LOCK = threading.Lock()
_KEY_LOCKS: dict = {}


def _memo(key: tuple, make: Callable):
    """`make()`, kept under `key` while the store's arrays stay under `MEMO_BYTES`, and made
    once even when threads ask together."""
    if key[2] is None:  # a file that cannot be statted: nothing to keep
        return make()
    with _STORE_LOCK:
        if key in _STORE:
            _STORE.move_to_end(key)
            return _STORE[key]
        lock = _KEY_LOCKS.setdefault(key, threading.Lock())
    with lock:
        with _STORE_LOCK:
            if key in _STORE:
                return _STORE[key]
        value = make()
        with _STORE_LOCK:
            _STORE[key] = value
            _KEY_LOCKS.pop(key, None)
            while len(_STORE) > 1 and sum(map(_nbytes, _STORE.values())) > MEMO_BYTES:
                _STORE.popitem(last=False)
    return value


def _nbytes(value) -> int:
    if isinstance(value, Volume):
        return value.voxels.nbytes
    return getattr(value, "nbytes", 0)
