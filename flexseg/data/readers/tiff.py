"""TIFF and BigTIFF: the first directory's tags read, its strips or tiles within the file."""

from __future__ import annotations

import struct

from flexseg.data.readers.base import Header, PictureReader
from flexseg.errors import DataError

TYPES = {1: 1, 3: 2, 4: 4, 16: 8}  # BYTE, SHORT, LONG, LONG8: bytes per value


class TiffReader(PictureReader):
    name = "tiff"
    suffixes = (".tif", ".tiff")
    magic = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")

    def header(self, data: bytes) -> Header:
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
                if kind not in TYPES:
                    continue
                width = TYPES[kind]
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
        return Header(self.name, tags[256][0], tags[257][0], missing)
