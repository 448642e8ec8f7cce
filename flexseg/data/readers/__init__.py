"""The file formats flexseg reads, one reader module each, known by first bytes and name.

Adding a format is a module with a `flexseg.data.readers.base.Reader` subclass and its line in
`READERS`; pairing, the pre-flight checks, the fuzz suite and reading then take it.
"""

from __future__ import annotations

from pathlib import Path

from flexseg.data.readers.base import Header, PictureReader, Reader, VolumeReader
from flexseg.data.readers.bmp import BmpReader
from flexseg.data.readers.itk import MetaImageReader, NrrdReader
from flexseg.data.readers.jpeg import JpegReader
from flexseg.data.readers.nifti import NiftiReader
from flexseg.data.readers.png import PngReader
from flexseg.data.readers.tiff import TiffReader
from flexseg.errors import DataError

READERS: tuple[Reader, ...] = (
    PngReader(),
    JpegReader(),
    TiffReader(),
    BmpReader(),
    NiftiReader(),
    NrrdReader(),
    MetaImageReader(),
)


def suffixes() -> tuple[str, ...]:
    """Every file name ending a reader reads, lower case (".png", ".jpg", ...)."""
    return tuple(suffix for reader in READERS for suffix in reader.suffixes)


def suffix_of(path: str | Path) -> str | None:
    """The reader suffix a file name ends with (the longest, for names like `a.nii.gz`), or
    None for a name no reader reads."""
    name = Path(path).name.lower()
    found = [suffix for suffix in suffixes() if name.endswith(suffix)]
    return max(found, key=len) if found else None


def stem_of(path: str | Path) -> str:
    """A file's name without its format's suffix (`p07_z026.png` -> `p07_z026`)."""
    name = Path(path).name
    suffix = suffix_of(path)
    return name[: len(name) - len(suffix)] if suffix else Path(path).stem


def is_volume(path: str | Path) -> bool:
    """Whether a file's name is that of a volume format (NIfTI, NRRD, MetaImage)."""
    suffix = suffix_of(path)
    return any(reader.volume and suffix in reader.suffixes for reader in READERS)


def reader_for(data: bytes) -> Reader:
    """The reader of a file's bytes, known by their first bytes.

    Raises:
        DataError: saying that no reader knows them, for the caller to name the file.
    """
    for reader in READERS:
        if reader.recognises(data):
            return reader
    names = [reader.name.upper() for reader in READERS]
    listed = f"{', '.join(names[:-1])} or {names[-1]}" if len(names) > 1 else names[0]
    raise DataError(f"it is not a {listed} file (it starts with {data[:8]!r})")


def by_name(name: str) -> Reader:
    """The reader of `Header.format` `name`."""
    for reader in READERS:
        if reader.name == name:
            return reader
    raise DataError(f"no reader reads format {name!r}")


def read_header(data: bytes) -> Header:
    """The header of a file's bytes, read by the reader of their format.

    Raises:
        DataError: saying what is wrong ("it is truncated: ..."), for the caller to name the
            file.
    """
    return reader_for(data).header(data)


__all__ = [
    "READERS",
    "Header",
    "PictureReader",
    "Reader",
    "VolumeReader",
    "by_name",
    "is_volume",
    "read_header",
    "reader_for",
    "stem_of",
    "suffix_of",
    "suffixes",
]
