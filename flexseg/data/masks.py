"""Masks: colour maps, anti-aliased edges, index and palette masks.

A mask file becomes an index mask (H, W) of class ids. With an `rgb_map`, each pixel goes to
the nearest map colour; pixels that are no exact map colour but near one (JPEG noise) or on a
blend of two map colours (anti-aliased edges) are mapped and counted, and pixels far from every
colour and every blend are reported as unknown. Anti-aliasing only ever lies on the boundary
between the two colours it blends: a blend pixel with no pixel of either colour within
`BLEND_REACH` pixels lies inside a region, and is reported as misplaced (a mask written with
other class colours, such as 0/100/200 for three classes), as is a mask whose foreground is
mostly blends. Without an `rgb_map`, masks must hold class ids (0, 1, ...) or, for two
classes, 0 and 255.
"""

from __future__ import annotations

import ast
import itertools
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
from PIL import Image

from flexseg.data import readers, volumes
from flexseg.data.files import MAX_PIXELS, read_checked
from flexseg.data.reading import in_place
from flexseg.errors import ConfigError, DataError

if TYPE_CHECKING:
    from flexseg.data.sources import Sample

# A blend pixel must have a pixel of each colour it blends within this many pixels (a 7 x 7
# window): anti-aliased edges one to three pixels wide pass, the inside of a region does not.
BLEND_REACH = 3
# A mask whose foreground is more than this share blends, with at least BLEND_MIN of them, is
# not anti-aliased but drawn in other colours.
BLEND_SHARE, BLEND_MIN = 0.5, 64

# Colours of predicted classes when no rgb_map says otherwise: black background, white for a
# single foreground class, then well-separated hues.
DEFAULT_COLORS = [
    (0, 0, 0),
    (255, 255, 255),
    (230, 25, 75),
    (60, 180, 75),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
]


@dataclass(frozen=True)
class ClassColor:
    """One class of a colour map; `name` is what the map calls it, if it names it."""

    name: str | None
    color: tuple[int, int, int]
    id: int


@dataclass
class MaskReport:
    """What decoding masks found: pixels taken from blends, colours on no map, and blends
    that are no anti-aliasing (inside regions, or most of the foreground)."""

    pixels: int = 0
    blended_pixels: int = 0
    unknown: Counter = field(default_factory=Counter)  # (r, g, b) -> pixel count
    unknown_files: dict = field(default_factory=dict)  # file -> {(r, g, b): count}
    misplaced_files: dict = field(default_factory=dict)  # file -> what is wrong, in words

    def update(self, other: MaskReport) -> None:
        self.pixels += other.pixels
        self.blended_pixels += other.blended_pixels
        self.unknown.update(other.unknown)
        self.unknown_files.update(other.unknown_files)
        self.misplaced_files.update(other.misplaced_files)

    def summary(self) -> str:
        lines = [
            f"{self.blended_pixels} of {self.pixels} mask pixels were mapped from blends of "
            "map colours (anti-aliased edges)"
        ]
        for file, colors in list(self.unknown_files.items())[:10]:
            for color, count in colors.items():
                lines.append(f"unknown colour {list(color)} in {file}: {count} pixels")
        if len(self.unknown_files) > 10:
            lines.append(f"... and {len(self.unknown_files) - 10} more files with unknown colours")
        lines += [f"{file}: {text}" for file, text in list(self.misplaced_files.items())[:10]]
        return "\n".join(lines)


class ColorMap:
    """Maps mask colours to class ids and back.

    Args:
        classes: one `ClassColor` per class; ids must be 0 .. n-1, each once.
        tolerance: how far (Euclidean, in 0-255 RGB units) a pixel may lie from every map
            colour and every blend of two map colours before it counts as unknown.

    Example:
    >>> cmap = ColorMap.from_config([{"name": "lesion", "color": [255, 255, 255], "id": 1},
    ...                              {"name": "background", "color": [0, 0, 0], "id": 0}])
    >>> cmap.decode(np.array([[0, 200, 255]], np.uint8))[0]
    array([[0, 1, 1]], dtype=uint8)
    """

    def __init__(self, classes: Sequence[ClassColor], tolerance: float = 10.0):
        ids = sorted(c.id for c in classes)
        if ids != list(range(len(ids))) or len(ids) < 1:
            raise ConfigError(
                f"dataset.rgb_map ids must be 0 .. n-1, each once. Received ids: {ids}"
            )
        colors = [c.color for c in classes]
        if len(set(colors)) != len(colors):
            raise ConfigError(f"dataset.rgb_map has a colour twice: {colors}")
        if tolerance < 0:
            raise ConfigError(f"dataset.color_tolerance must be >= 0. Received: {tolerance}")
        self.classes = sorted(classes, key=lambda c: c.id)
        self.tolerance = float(tolerance)
        self._colors = np.array([c.color for c in self.classes], dtype=np.float64)  # (K, 3)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @classmethod
    def from_config(cls, rgb_map, tolerance: float = 10.0) -> ColorMap:
        """Builds a map from a list of `{name, color: [r, g, b], id}` or `{(r, g, b): id}`."""
        if isinstance(rgb_map, Mapping):
            classes = []
            for color, class_id in rgb_map.items():
                if isinstance(color, str):  # "(0, 0, 0)" from a YAML or INI file
                    try:
                        color = ast.literal_eval(color)
                    except (ValueError, SyntaxError) as error:
                        raise ConfigError(
                            f"dataset.rgb_map key {color!r} is not an (r, g, b) colour"
                        ) from error
                classes.append(_class_color(None, color, class_id))
        elif isinstance(rgb_map, Sequence) and not isinstance(rgb_map, str):
            classes = []
            for i, entry in enumerate(rgb_map):
                if not isinstance(entry, Mapping) or set(entry) - {"name", "color", "id"}:
                    raise ConfigError(
                        f"dataset.rgb_map[{i}] must be {{name, color: [r, g, b], id}}. "
                        f"Received: {entry!r}"
                    )
                if "color" not in entry or "id" not in entry:
                    raise ConfigError(f"dataset.rgb_map[{i}] needs `color` and `id`: {entry!r}")
                classes.append(_class_color(entry.get("name"), entry["color"], entry["id"]))
        else:
            raise ConfigError(
                "dataset.rgb_map must be a list of {name, color, id} or a mapping "
                f"{{(r, g, b): id}}. Received: {rgb_map!r}"
            )
        return cls(classes, tolerance)

    @classmethod
    def default(cls, num_classes: int) -> ColorMap:
        """A map of well-separated colours, used to write predictions without an rgb_map."""
        colors = list(DEFAULT_COLORS)
        while len(colors) < num_classes:
            colors.append(
                tuple(int(v) for v in np.random.default_rng(len(colors)).integers(256, size=3))
            )
        return cls([ClassColor(None, colors[i], i) for i in range(num_classes)])

    def palette(self) -> list[int]:
        """A 768-entry PIL palette whose entry `id` is the class colour."""
        flat = [v for c in self.classes for v in c.color]
        return flat + [0] * (768 - len(flat))

    def decode(self, mask: np.ndarray, source: str = "mask") -> tuple[np.ndarray, MaskReport]:
        """Class ids of a colour mask.

        Args:
            mask: (H, W) gray (read as the colour (v, v, v)) or (H, W, 3) RGB, uint8.
            source: the file name used in the report.

        Returns:
            The index mask (H, W) uint8 (unknown pixels go to the nearest colour too) and a
            report of blended pixels and unknown colours.
        """
        if mask.ndim == 2 and mask.dtype == np.uint8:  # gray: 256 colours, counted unsorted
            every = np.bincount(mask.ravel(), minlength=256)
            unique = np.flatnonzero(every)
            counts = every[unique]
            position = np.zeros(256, np.int64)
            position[unique] = np.arange(len(unique))
            inverse = position[mask.ravel()]
            colors = np.repeat(unique[:, None], 3, axis=-1)
        else:
            if mask.ndim == 2:
                mask = np.repeat(mask[..., None], 3, axis=-1)
            flat = mask.reshape(-1, 3).astype(np.int64)
            keys = (flat[:, 0] << 16) | (flat[:, 1] << 8) | flat[:, 2]
            unique, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
            colors = np.stack([(unique >> 16) & 255, (unique >> 8) & 255, unique & 255], -1)
        distance = np.linalg.norm(colors[:, None, :] - self._colors[None], axis=-1)  # (U, K)
        ids = distance.argmin(axis=1)
        exact = distance.min(axis=1) == 0
        noise = ~exact & (distance.min(axis=1) <= self.tolerance)  # next to one map colour
        blend_distance, pairs = self._blend_distance(colors.astype(np.float64))
        blend = ~exact & ~noise & (blend_distance <= self.tolerance)
        report = MaskReport(pixels=int(mask.shape[0] * mask.shape[1]))
        report.blended_pixels = int(counts[noise | blend].sum())
        unknown = ~exact & ~noise & ~blend
        if unknown.any():
            found = {
                tuple(int(v) for v in colors[i]): int(counts[i]) for i in np.flatnonzero(unknown)
            }
            report.unknown.update(found)
            report.unknown_files[source] = found
        index = ids[inverse].reshape(mask.shape[:2])
        if blend.any():
            misplaced = self._misplaced_blends(index, inverse, exact | noise, blend, pairs, colors)
            if misplaced:
                report.misplaced_files[source] = misplaced
        return np.array([c.id for c in self.classes], np.uint8)[index], report

    def _blend_distance(self, colors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Distance of each colour (U, 3) to the nearest blend of two map colours, and the
        index (into `itertools.combinations` of the map's colours) of that pair."""
        best = np.full(len(colors), np.inf)
        pair = np.zeros(len(colors), np.int64)
        for j, (a, b) in enumerate(itertools.combinations(self._colors, 2)):
            direction = b - a
            t = np.clip((colors - a) @ direction / (direction @ direction), 0.0, 1.0)
            on_segment = a + t[:, None] * direction
            distance = np.linalg.norm(colors - on_segment, axis=-1)
            pair = np.where(distance < best, j, pair)
            best = np.minimum(best, distance)
        return best, pair

    def _misplaced_blends(self, index, inverse, solid, blend, pairs, colors) -> str | None:
        """What is wrong with a mask's blend pixels, or None when they are anti-aliasing.

        Args:
            index: (H, W) nearest map colour of each pixel; inverse: each pixel's colour
            (into `colors`); solid, blend: which colours are map colours (or within the
            tolerance of one) and which are blends; pairs: the pair of map colours each
            colour blends.
        """
        shape = index.shape
        window = np.ones((2 * BLEND_REACH + 1,) * 2, np.uint8)
        solid_px = solid[inverse].reshape(shape)
        near = [  # pixels within reach of a pixel of map colour k
            cv2.dilate((solid_px & (index == k)).astype(np.uint8), window) > 0
            for k in range(len(self.classes))
        ]
        blend_px = blend[inverse].reshape(shape)
        pair_px = pairs[inverse].reshape(shape)
        inside = np.zeros(shape, bool)
        for j, (a, b) in enumerate(itertools.combinations(range(len(self.classes)), 2)):
            inside |= blend_px & (pair_px == j) & ~(near[a] & near[b])
        blends = int(blend_px.sum())
        foreground = int((solid_px & (index != 0)).sum()) + blends
        if not inside.any() and not (blends >= BLEND_MIN and blends > BLEND_SHARE * foreground):
            return None
        where = inside if inside.any() else blend_px
        found = Counter()
        for i, n in zip(*np.unique(inverse.reshape(shape)[where], return_counts=True), strict=True):
            found[tuple(int(v) for v in colors[i])] = int(n)
        listed = ", ".join(f"{list(c)} ({n} pixels)" for c, n in found.most_common(5))
        every = sorted(
            {tuple(int(v) for v in colors[i]) for i in np.flatnonzero(solid | blend)}, key=sum
        )
        example = ", ".join(
            f"{{name: class_{i}, color: {list(c)}, id: {i}}}" for i, c in enumerate(every[:4])
        )
        how = (
            f"they lie inside regions, away from the two map colours they would blend ({listed})"
            if inside.any()
            else f"they make up {blends} of the {foreground} foreground pixels ({listed})"
        )
        return (
            f"blended colours that are not anti-aliasing: {how}. Anti-aliasing only lies on the "
            f"edge between two colours; if these are classes, map each: dataset.rgb_map=[{example}"
            f"{', ...' if len(every) > 4 else ''}] with dataset.num_classes={len(every)}, or "
            "write the masks as class ids 0..n-1 and leave out dataset.rgb_map."
        )


def _class_color(name, color, class_id) -> ClassColor:
    which = f"class {name!r}" if name is not None else f"id {class_id!r}"
    color = tuple(color) if isinstance(color, Sequence) and not isinstance(color, str) else ()
    if len(color) != 3 or not all(isinstance(v, int) and 0 <= v <= 255 for v in color):
        raise ConfigError(
            f"dataset.rgb_map colour of {which} must be [r, g, b] with values 0-255. "
            f"Received: {color!r}"
        )
    if isinstance(class_id, bool) or not isinstance(class_id, int):
        raise ConfigError(f"dataset.rgb_map id of {which} must be an integer: {class_id!r}")
    return ClassColor(None if name is None else str(name), color, class_id)


def read_mask_file(
    path: str | Path, max_pixels: int = MAX_PIXELS, index: int | None = None
) -> tuple[np.ndarray, bool]:
    """The raw mask array and whether it holds palette indices.

    The file is checked before it is decoded (`flexseg.data.files.read_checked`) by the
    reader of its format (`flexseg.data.readers`); `index` is the sample's place in it.

    Returns:
        (H, W) for gray and palette masks, (H, W, 3) RGB for colour masks; and `True` when
        the values are palette indices.
    """
    path = Path(path)
    data, header = read_checked(path, max_pixels, "mask")
    raw, is_palette = readers.by_name(header.format).mask(data, header, path)
    return in_place(raw, index, path), is_palette


def decode_mask(
    path: str | Path,
    num_classes: int,
    colormap: ColorMap | None = None,
    max_pixels: int = MAX_PIXELS,
    index: int | None = None,
) -> tuple[np.ndarray, MaskReport]:
    """Reads a mask file as class ids (H, W) uint8, with a report of what was mapped.

    With a `colormap`, colours (palette colours included) are mapped through it. Without
    one, a palette mask's indices, a gray mask's values, or for two classes 0/255 are the ids.

    Raises:
        DataError: values or colours that fit none of the above, naming the file.
    """
    raw, is_palette = read_mask_file(path, max_pixels, index)
    if colormap is not None:
        if is_palette:
            with Image.open(path) as image:
                raw = np.asarray(image.convert("RGB"))
        if raw.dtype != np.uint8:
            raise DataError(f"mask {path} is {raw.dtype}, not 8-bit; an rgb_map needs 8-bit masks.")
        return colormap.decode(raw, str(path))
    if raw.ndim == 3:
        raise DataError(
            f"mask {path} is an RGB colour mask; set dataset.rgb_map to map its colours to "
            "class ids."
        )
    values = np.unique(raw)
    if not np.array_equal(values, np.round(values)) or values.min(initial=0) < 0:
        raise DataError(
            f"mask {path} holds fractional or negative values ({values[:5].tolist()} ...); a "
            "mask holds class ids 0..n-1, or colours with dataset.rgb_map."
        )
    report = MaskReport(pixels=int(raw.size))
    if values.max() < num_classes:
        return raw.astype(np.uint8), report
    if num_classes == 2 and set(values.tolist()) <= {0, 255}:
        return (raw > 0).astype(np.uint8), report
    shown = values[:10].tolist()
    raise DataError(
        f"mask {path} has values {shown}{' ...' if len(values) > 10 else ''}, not class ids "
        f"0..{num_classes - 1}; for anti-aliased or colour masks set dataset.rgb_map, or check "
        "dataset.num_classes."
    )


def decode_sample_mask(
    sample: Sample,
    num_classes: int,
    colormap: ColorMap | None = None,
    max_pixels: int = MAX_PIXELS,
    max_voxels: int = volumes.MAX_VOXELS,
) -> tuple[np.ndarray, MaskReport]:
    """A sample's mask as class ids (H, W): a mask file by `decode_mask`, or the slice of its
    case's label volume (class ids as stored; no colour map).

    Raises:
        DataError: naming the file: what `decode_mask` or `flexseg.data.volumes.load`
            refuses, a colour map for a label volume, or a label volume off the grid of the
            case's image.
    """
    if not sample.volume:
        return decode_mask(sample.mask, num_classes, colormap, max_pixels, sample.index)
    if colormap is not None:
        raise DataError(
            f"label volume {sample.mask} holds class ids, and dataset.rgb_map maps the colours "
            "of mask pictures; set dataset.rgb_map=null."
        )
    why = volumes.geometry(sample.image, "image", max_voxels).same_grid(
        volumes.geometry(sample.mask, "label", max_voxels)
    )
    if why:
        raise DataError(
            f"label volume {sample.mask} has {why} of its image {sample.image}; a case's label "
            "must lie on its image's grid (resample it with nearest neighbour)."
        )
    labels = volumes.load(sample.mask, "label", max_voxels).voxels
    mask = volumes.cut(labels, sample.axis, sample.index)
    return mask, MaskReport(pixels=int(mask.size))


def write_palette_png(path: str | Path, index: np.ndarray, colormap: ColorMap) -> None:
    """Writes class ids (H, W) as a palette PNG whose colours are the map's."""
    image = Image.fromarray(index.astype(np.uint8))
    image.putpalette(colormap.palette())  # an 8-bit gray image becomes a palette image
    image.save(path)
