"""BMP: its file and info headers, and for uncompressed files the rows they promise."""

from __future__ import annotations

import struct

from flexseg.data.readers.base import Header, PictureReader
from flexseg.errors import DataError

UNCOMPRESSED = (0, 3, 6)  # BI_RGB, BI_BITFIELDS, BI_ALPHABITFIELDS


class BmpReader(PictureReader):
    name = "bmp"
    suffixes = (".bmp",)
    magic = (b"BM",)

    def header(self, data: bytes) -> Header:
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
        beyond = compression in UNCOMPRESSED and offset + row * height > len(data)
        return Header(
            self.name, width, height, "its pixel rows end after the file does" if beyond else None
        )
