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
    more)."""

    format: str
    width: int
    height: int
    missing: str | None = None


class Reader:
    """One file format: how its files are known, checked whole and decoded.

    A format is one module that defines a subclass and one line of
    `flexseg.data.readers.READERS` that lists an instance.
    """

    name: ClassVar[str] = ""  # the format, e.g. "png": `Header.format` of its files
    suffixes: ClassVar[tuple[str, ...]] = ()  # file names it reads, lower case: (".png",)
    magic: ClassVar[tuple[bytes, ...]] = ()  # the first bytes of its files

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
