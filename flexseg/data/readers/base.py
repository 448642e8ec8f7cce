"""The interface every file format's reader implements, and the one 2D pictures share.

A reader knows its files by their first bytes (`magic`) and their name (`suffixes`), reads the
size and integrity of a file from its header before any pixel is decoded (`header`), and then
decodes it as an image or as a mask. Decoders guess: OpenCV and Pillow decode a PNG cut short
into a partial image with only a warning on stderr, and OpenCV's own pixel limit raises deep
inside a decoder; so `header` refuses a file that is truncated (a missing end marker, a chunk
or strip beyond the end of the file) or corrupt (a PNG chunk whose CRC does not match), and
`flexseg.data.files.read_checked` one whose header declares more pixels than allowed.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import cv2
import numpy as np
from PIL import Image

from flexseg.errors import DataError


@dataclass(frozen=True)
class Header:
    """A file's format (its reader's `name`), its size as the header declares it, and pixel
    data the header points to beyond the end of the file (checked after the size, which says
    more). A volume's header also gives its whole `shape` in the file's axis order (x, y, z,
    then any further axes), `dtype`, the type its voxels are stored as, and `needed_bytes`,
    the size the file must have at least (where the header alone tells it)."""

    format: str
    width: int
    height: int
    missing: str | None = None
    shape: tuple[int, ...] = ()
    dtype: str = ""
    needed_bytes: int | None = None

    @property
    def voxels(self) -> int:
        """The values the header declares: voxels of every channel of a volume, pixels of a
        picture."""
        return math.prod(self.shape) if self.shape else self.width * self.height


class Reader:
    """One file format: how its files are known, checked whole and decoded.

    `volume` formats (NIfTI, NRRD, MetaImage) are read whole by `VolumeReader.read` and cut
    into slices by `flexseg.data.volumes`; 2D formats by `image` and `mask`.

    A format is one module that defines a subclass and one line of
    `flexseg.data.readers.READERS` that lists an instance.
    """

    name: ClassVar[str] = ""  # the format, e.g. "png": `Header.format` of its files
    suffixes: ClassVar[tuple[str, ...]] = ()  # file names it reads, lower case: (".png",)
    magic: ClassVar[tuple[bytes, ...]] = ()  # the first bytes of its files
    volume: ClassVar[bool] = False  # a 3D format, read by `VolumeReader.read`

    def recognises(self, data: bytes) -> bool:
        """Whether `data` (a file's bytes) is of this format."""
        return data.startswith(self.magic)

    def header(self, data: bytes) -> Header:
        """The size a file's header declares, once the file is known to be whole.

        Raises:
            DataError: saying what is wrong ("it is truncated: ..."), for the caller to name
                the file.
        """
        raise NotImplementedError

    def image(self, data: bytes, header: Header, path: Path) -> np.ndarray:
        """The pixels of a checked file as (H, W, C) in their own type."""
        raise NotImplementedError

    def mask(self, data: bytes, header: Header, path: Path) -> tuple[np.ndarray, bool]:
        """The raw values of a checked mask file, and whether they are palette indices."""
        raise NotImplementedError


class PictureReader(Reader):
    """A 2D picture format: images decoded by OpenCV, masks by Pillow (which keeps a palette's
    indices)."""

    def image(self, data: bytes, header: Header, path: Path) -> np.ndarray:
        try:
            image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        except cv2.error as error:  # e.g. OpenCV's own pixel limit, above a raised max_pixels
            raise DataError(f"cannot decode image {path}: {error.err}") from None
        if image is None or image.shape[:2] != (header.height, header.width):
            found = "nothing" if image is None else f"{image.shape[1]}x{image.shape[0]}"
            raise DataError(
                f"cannot read image {path}: its header says {header.width}x{header.height} but "
                f"it decodes to {found}; replace or remove the file."
            )
        if image.ndim == 3 and image.shape[2] in (2, 4):
            image = image[..., : image.shape[2] - 1]  # alpha carries no intensity
        if image.ndim == 3 and image.shape[2] == 3:
            image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        elif image.ndim == 2:
            image = image[..., None]
        return image

    def mask(self, data: bytes, header: Header, path: Path) -> tuple[np.ndarray, bool]:
        """(H, W) for gray and palette masks, (H, W, 3) RGB for colour masks; and `True` when
        the values are palette indices."""
        try:
            with Image.open(io.BytesIO(data)) as image:
                image.load()
                if image.size != (header.width, header.height):
                    raise DataError(
                        f"cannot read mask {path}: its header says {header.width}x"
                        f"{header.height} but it decodes to {image.size[0]}x{image.size[1]}; "
                        "replace or remove it."
                    )
                if image.mode == "P":
                    return np.asarray(image), True
                if image.mode in ("RGB", "RGBA", "CMYK", "YCbCr"):
                    return np.asarray(image.convert("RGB")), False
                if image.mode in ("L", "1", "LA", "PA"):
                    return np.asarray(image.convert("L")), False
                return np.asarray(image), False  # 16-bit and 32-bit gray
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
            if isinstance(error, DataError):
                raise
            raise DataError(
                f"cannot read mask {path}: {error}; replace or remove the file."
            ) from error


class VolumeReader(Reader):
    """A volume format: a file (and the files it names) read whole into its voxels and the
    affine that places them in millimetres, by `flexseg.data.volumes`."""

    volume = True

    def header(self, data: bytes) -> Header:
        """The shape and type a file's header declares, from its first bytes (at least the
        first 64 KiB of the file, or all of it)."""
        raise NotImplementedError

    def affine(self, path: Path, data: bytes) -> np.ndarray:
        """The 4 x 4 affine from voxel indices to RAS millimetres, from the header (`data`:
        the file's first bytes, as `header` takes them).

        Raises:
            DataError: a header that does not place the voxels, for the caller to name the
                file.
        """
        raise NotImplementedError

    def read(self, path: Path) -> tuple[np.ndarray, np.ndarray]:
        """The voxels in the file's own axis order (x, y, z, then channels) and type (scaled
        as its header says), and the 4 x 4 affine from voxel indices to RAS millimetres.

        Raises:
            DataError: the file is cut short, corrupt or names a data file that is missing,
                for the caller to name it.
        """
        raise NotImplementedError

    def image(self, data: bytes, header: Header, path: Path) -> np.ndarray:
        raise DataError(f"{path} is a volume: read it with flexseg.data.volumes")

    mask = image
