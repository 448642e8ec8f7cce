"""A file checked before it is decoded: a regular file, of a format a reader knows, whole, and
no larger than allowed.

Every image and mask is read through `read_checked`: its bytes are read once, its format is
known from its first bytes (`flexseg.data.readers`), its size and integrity from its header,
and a file that is no regular file, empty, truncated, corrupt, or whose header declares more
pixels than `dataset.max_pixels` is refused, naming the file, before any pixel is decoded.
"""

from __future__ import annotations

import stat
from pathlib import Path

from flexseg.data.readers import Header, read_header
from flexseg.errors import DataError

# The most pixels a header may declare, unless dataset.max_pixels says (16k x 16k).
MAX_PIXELS = 2**28


def read_checked(path: str | Path, max_pixels: int, what: str = "image") -> tuple[bytes, Header]:
    """The bytes of a file and its header, after checking that it is whole.

    Args:
        path: the file.
        max_pixels: the most pixels (width x height) a header may declare.
        what: "image" or "mask", for the message.

    Raises:
        DataError: naming the file and what is wrong with it: not a regular file, empty,
            of no format a reader knows, cut short, corrupt, or larger than `max_pixels`.
    """
    path = Path(path)
    kind = file_kind(path)
    if kind != "file":
        raise DataError(f"cannot read {what} {path}: it is {kind}; put the {what} file there.")
    data = path.read_bytes()
    if not data:
        raise DataError(f"cannot read {what} {path}: it is empty; replace or remove the file.")
    try:
        header = read_header(data)
    except DataError as error:  # what is wrong; named here
        raise DataError(
            f"cannot read {what} {path}: {error}; replace or remove the file."
        ) from None
    pixels = header.width * header.height
    if pixels > max_pixels:
        raise DataError(
            f"{what} {path} is {header.width}x{header.height} (width x height, {pixels:,} "
            f"pixels), more than dataset.max_pixels={max_pixels:,}; shrink the file, or raise "
            "dataset.max_pixels if an image that large is meant to be read."
        )
    if header.missing:
        raise DataError(
            f"cannot read {what} {path}: it is truncated: {header.missing}; replace or remove "
            "the file."
        )
    return data, header


def file_kind(path: Path) -> str:
    """ "file" for a regular file (or a link to one), else what the path is, in words."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return "a broken link" if path.is_symlink() else "missing (the path does not exist)"
    except OSError as error:
        return f"unreadable ({error.strerror})"
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "a folder, not a file"
    if stat.S_ISFIFO(mode):
        return "a named pipe, not a file"
    if stat.S_ISSOCK(mode):
        return "a socket, not a file"
    return "a device, not a file"
