"""PNG: its chunks walked to the end chunk, each one's checksum compared."""

from __future__ import annotations

import struct
import zlib

from flexseg.data.readers.base import Header, PictureReader
from flexseg.errors import DataError

SIGNATURE = b"\x89PNG\r\n\x1a\n"


class PngReader(PictureReader):
    name = "png"
    suffixes = (".png",)
    magic = (SIGNATURE,)

    def header(self, data: bytes) -> Header:
        size, pos = None, len(SIGNATURE)
        while pos + 8 <= len(data):
            length, kind = struct.unpack(">I4s", data[pos : pos + 8])
            end = pos + 12 + length
            if end > len(data):
                raise DataError(
                    f"it is truncated: its {_name(kind)} chunk ends after the file does"
                )
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
                return Header(self.name, *size)
            pos = end
        raise DataError("it is truncated: it has no IEND end chunk")


def _name(kind: bytes) -> str:
    return kind.decode("latin-1") if kind.isalpha() else repr(kind)
