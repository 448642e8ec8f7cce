"""What an image file holds before it is decoded: its format, its size, and whether it is whole.

Decoders guess: OpenCV and Pillow decode a PNG cut short into a partial image with only a
warning on stderr, and OpenCV's own pixel limit raises deep inside a decoder. So every file
is read through `read_checked` first: the bytes are read once, the format is known from its
first bytes (PNG, JPEG, TIFF, BMP), the size from its header, and a file that is truncated
(a missing end marker, a chunk or strip beyond the end of the file) or corrupt (a PNG chunk
whose CRC does not match) is refused, as is one whose header declares more pixels than
`dataset.max_pixels`, before any pixel is decoded.
"""

from __future__ import annotations

import stat
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

from flexseg.errors import DataError

PNG = b"\x89PNG\r\n\x1a\n"
# JPEG start-of-frame markers (baseline, progressive, lossless, arithmetic): they carry the size.
JPEG_FRAMES = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
TIFF_TYPES = {1: 1, 3: 2, 4: 4, 16: 8}  # BYTE, SHORT, LONG, LONG8: bytes per value
BMP_UNCOMPRESSED = (0, 3, 6)  # BI_RGB, BI_BITFIELDS, BI_ALPHABITFIELDS


@dataclass(frozen=True)
class Header:
    """A file's format, its size as the header declares it, and pixel data the header
    points to beyond the end of the file (checked after the size, which says more)."""

    format: str
    width: int
    height: int
    missing: str | None = None


def read_checked(path: str | Path, max_pixels: int, what: str = "image") -> tuple[bytes, Header]:
    """The bytes of an image file and its header, after checking that it is whole.

    Args:
        path: the file.
        max_pixels: the most pixels (width x height) a header may declare.
        what: "image" or "mask", for the message.

    Raises:
        DataError: naming the file and what is wrong with it: not a regular file, empty,
            not a PNG/JPEG/TIFF/BMP file, cut short, corrupt, or larger than `max_pixels`.
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


def read_header(data: bytes) -> Header:
    """The header of PNG, JPEG, TIFF or BMP bytes.

    Raises:
        DataError: saying what is wrong ("it is truncated: ..."), for the caller to name the
            file.
    """
    if data.startswith(PNG):
        return _png(data)
    if data.startswith(b"\xff\xd8\xff"):
        return _jpeg(data)
    if data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return _tiff(data)
    if data.startswith(b"BM"):
        return _bmp(data)
    raise DataError(f"it is not a PNG, JPEG, TIFF or BMP file (it starts with {data[:8]!r})")


def _png(data: bytes) -> Header:
    size, pos = None, len(PNG)
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        end = pos + 12 + length
        if end > len(data):
            raise DataError(f"it is truncated: its {_name(kind)} chunk ends after the file does")
        (crc,) = struct.unpack(">I", data[end - 4 : end])
        if zlib.crc32(data[pos + 4 : end - 4]) != crc:
            raise DataError(
                f"it is corrupt: the checksum of its {_name(kind)} chunk does not match"
            )
        if kind == b"IHDR":
            size = struct.unpack(">II", data[pos + 8 : pos + 16])
        elif kind == b"IEND":
            if size is None:
                raise DataError("it is corrupt: it has no IHDR header chunk")
            return Header("png", *size)
        pos = end
    raise DataError("it is truncated: it has no IEND end chunk")


def _jpeg(data: bytes) -> Header:
    size, pos = None, 2  # after the start-of-image marker
    while True:
        if pos >= len(data) or data[pos] != 0xFF:
            raise DataError(f"it is {'truncated' if pos >= len(data) else 'corrupt'}: no marker "
                          f"at byte {pos} of its header")  # fmt: skip
        while pos < len(data) and data[pos] == 0xFF:  # fill bytes before a marker
            pos += 1
        if pos + 3 > len(data):
            raise DataError("it is truncated: it ends inside its header")
        marker, pos = data[pos], pos + 1
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            continue
        (length,) = struct.unpack(">H", data[pos : pos + 2])
        if marker in JPEG_FRAMES:  # length, precision, height, width
            if pos + 7 > len(data):
                raise DataError("it is truncated: it ends inside its frame header")
            height, width = struct.unpack(">HH", data[pos + 3 : pos + 7])
            size = (width, height)
        pos += length
        if marker == 0xDA:  # start of scan: entropy-coded data up to the end marker
            break
    if size is None:
        raise DataError("it is corrupt: it has no frame header before its image data")
    # After the scan starts, 0xFF is followed by a stuffed 0x00 or a restart marker, so the
    # end-of-image marker FF D9 appears there only as the real end.
    if data.find(b"\xff\xd9", pos) == -1:
        raise DataError("it is truncated: it has no end-of-image marker")
    return Header("jpeg", *size)


def _tiff(data: bytes) -> Header:
    order = "<" if data[:2] == b"II" else ">"
    big = data[2:4] in (b"+\x00", b"\x00+")
    entry_size, count_format = (20, "Q") if big else (12, "I")
    try:
        (ifd,) = struct.unpack(order + ("Q" if big else "I"), data[8:16] if big else data[4:8])
        (entries,) = struct.unpack(
            order + ("Q" if big else "H"), data[ifd : ifd + (8 if big else 2)]
        )
        start = ifd + (8 if big else 2)
        if start + entries * entry_size > len(data):
            raise DataError("it is truncated: its header runs past the end of the file")
        tags: dict[int, list[int]] = {}
        for i in range(entries):
            entry = data[start + i * entry_size : start + (i + 1) * entry_size]
            tag, kind = struct.unpack(order + "HH", entry[:4])
            (count,) = struct.unpack(order + count_format, entry[4 : 12 if big else 8])
            if kind not in TIFF_TYPES:
                continue
            width = TIFF_TYPES[kind]
            inline = entry[12:20] if big else entry[8:12]
            if count * width <= len(inline):
                raw = inline[: count * width]
            else:
                (offset,) = struct.unpack(order + ("Q" if big else "I"), inline)
                raw = data[offset : offset + count * width]
                if len(raw) < count * width:
                    raise DataError(f"it is truncated: tag {tag}'s values lie beyond the file")
            code = {1: "B", 2: "H", 4: "I", 8: "Q"}[width]
            tags[tag] = list(struct.unpack(f"{order}{count}{code}", raw))
    except struct.error:
        raise DataError("it is truncated: it ends inside its header") from None
    if 256 not in tags or 257 not in tags:
        raise DataError("it is corrupt: its header gives no width and height")
    offsets = tags.get(273, tags.get(324, []))  # strips, or tiles
    counts = tags.get(279, tags.get(325, []))
    if not offsets or len(offsets) != len(counts):
        raise DataError("it is corrupt: its header does not say where the pixels are")
    beyond = any(o + c > len(data) for o, c in zip(offsets, counts, strict=True))
    missing = "its pixel data ends after the file does" if beyond else None
    return Header("tiff", tags[256][0], tags[257][0], missing)


def _bmp(data: bytes) -> Header:
    if len(data) < 26:
        raise DataError("it is truncated: it ends inside its header")
    (offset,) = struct.unpack("<I", data[10:14])
    (info,) = struct.unpack("<I", data[14:18])
    if info == 12:  # the old OS/2 header
        width, height, _, bits = struct.unpack("<HHHH", data[18:26])
        compression = 0
    else:
        if len(data) < 34:
            raise DataError("it is truncated: it ends inside its header")
        width, height, _, bits, compression = struct.unpack("<iiHHI", data[18:34])
    height = abs(height)  # negative: rows stored top-down
    if width <= 0 or bits == 0:
        raise DataError("it is corrupt: its header gives no width or bit depth")
    row = (width * bits + 31) // 32 * 4  # rows are padded to 4 bytes
    beyond = compression in BMP_UNCOMPRESSED and offset + row * height > len(data)
    return Header(
        "bmp", width, height, "its pixel rows end after the file does" if beyond else None
    )


def _name(kind: bytes) -> str:
    return kind.decode("latin-1") if kind.isalpha() else repr(kind)
