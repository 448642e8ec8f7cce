"""JPEG: its markers walked to the start of the scan, then its end-of-image marker found."""

from __future__ import annotations

import struct

from flexseg.data.readers.base import Header, PictureReader
from flexseg.errors import DataError

# Start-of-frame markers (baseline, progressive, lossless, arithmetic): they carry the size.
FRAMES = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


class JpegReader(PictureReader):
    name = "jpeg"
    suffixes = (".jpg", ".jpeg")
    magic = (b"\xff\xd8\xff",)

    def header(self, data: bytes) -> Header:
        size, pos = None, 2  # after the start-of-image marker
        while True:
            if pos >= len(data) or data[pos] != 0xFF:
                raise DataError(f"it is {'truncated' if pos >= len(data) else 'corrupt'}: no "
                              f"marker at byte {pos} of its header")  # fmt: skip
            while pos < len(data) and data[pos] == 0xFF:  # fill bytes before a marker
                pos += 1
            if pos + 3 > len(data):
                raise DataError("it is truncated: it ends inside its header")
            marker, pos = data[pos], pos + 1
            if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
                continue
            (length,) = struct.unpack(">H", data[pos : pos + 2])
            if marker in FRAMES:  # length, precision, height, width
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
        return Header(self.name, *size)
