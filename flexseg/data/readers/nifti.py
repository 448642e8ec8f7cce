"""NIfTI-1 and NIfTI-2 (`.nii`, `.nii.gz`), read by nibabel: the header from the first bytes,
the voxels once the whole gzip stream has been checked."""

from __future__ import annotations

import gzip
import io
import zlib
from pathlib import Path

import numpy as np

from flexseg.data.readers.base import Header, VolumeReader
from flexseg.errors import DataError

GZIP = b"\x1f\x8b"
# (magic, where it stands) of a NIfTI-1 and a NIfTI-2 header
MAGICS = ((b"n+1\0", 344), (b"ni1\0", 344), (b"n+2\0", 4), (b"ni2\0", 4))
_HEADER_BYTES = 544  # a NIfTI-2 header and its extension flag


class NiftiReader(VolumeReader):
    name = "nifti"
    suffixes = (".nii", ".nii.gz")
    magic = (GZIP, b"\x5c\x01\x00\x00", b"\x00\x00\x01\x5c", b"\x1c\x02\x00\x00")

    def recognises(self, data: bytes) -> bool:
        start = _start(data)
        return any(start[at : at + len(magic)] == magic for magic, at in MAGICS)

    def header(self, data: bytes) -> Header:
        start = _start(data)
        nib_header = _nib_header(start)
        shape = tuple(int(n) for n in nib_header.get_data_shape())
        if not shape or min(shape) < 1:
            raise DataError(f"it is corrupt: its header declares the shape {list(shape)}")
        dtype = nib_header.get_data_dtype()
        needed = None
        if not data.startswith(GZIP):  # an uncompressed file: its size follows from the header
            voxels = int(np.prod(shape, dtype=np.int64))
            needed = int(nib_header.get_data_offset()) + voxels * dtype.itemsize
        width, height = shape[0], shape[1] if len(shape) > 1 else 1
        return Header(self.name, width, height, None, shape, str(dtype), needed)

    def affine(self, path: Path, data: bytes) -> np.ndarray:
        return np.asarray(_nib_header(_start(data)).get_best_affine(), np.float64)

    def read(self, path: Path) -> tuple[np.ndarray, np.ndarray]:
        import nibabel as nib

        data = path.read_bytes()
        if data.startswith(GZIP):
            try:
                data = gzip.decompress(data)
            except EOFError:
                raise DataError("it is truncated: its gzip stream ends early") from None
            except (OSError, zlib.error) as error:  # a bad CRC, a broken deflate stream
                raise DataError(
                    f"it is corrupt: its gzip stream does not decode ({error})"
                ) from None
        image_type = nib.Nifti2Image if _is_nifti2(data) else nib.Nifti1Image
        try:
            image = image_type.from_bytes(data)
            voxels = np.asanyarray(image.dataobj)
        except (ValueError, OSError, EOFError) as error:
            raise DataError(f"it is corrupt: nibabel cannot read its voxels ({error})") from None
        return voxels, np.asarray(image.affine, np.float64)


def _start(data: bytes) -> bytes:
    """The first bytes of the file's content, decompressed when it is gzipped."""
    if not data.startswith(GZIP):
        return data[:_HEADER_BYTES]
    try:
        return zlib.decompressobj(wbits=31).decompress(data[:65536], _HEADER_BYTES)
    except zlib.error:
        return b""


def _is_nifti2(start: bytes) -> bool:
    return start[4:8] in (b"n+2\0", b"ni2\0")


def _nib_header(start: bytes):
    import nibabel as nib

    kind = nib.Nifti2Header if _is_nifti2(start) else nib.Nifti1Header
    needed = 540 if kind is nib.Nifti2Header else 348
    if len(start) < needed:
        raise DataError(f"it is truncated: its header has {len(start)} of {needed} bytes")
    try:
        return kind.from_fileobj(io.BytesIO(start[:needed]), check=False)
    except Exception as error:  # nibabel's HeaderDataError and friends
        raise DataError(f"it is corrupt: its header does not parse ({error})") from None
