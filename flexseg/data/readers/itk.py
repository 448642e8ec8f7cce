"""NRRD (`.nrrd`, `.nhdr`) and MetaImage (`.mha`, `.mhd`), read by SimpleITK, an optional
extra (`pip install 'flexseg[volumes]'`): the text header parsed here, the voxels by ITK."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from flexseg.data.readers.base import Header, VolumeReader
from flexseg.errors import DataError

EXTRA = "pip install 'flexseg[volumes]'"
# ITK's voxel types by the names the headers use
_NRRD_TYPES = {
    "uchar": "uint8", "unsigned char": "uint8", "uint8": "uint8", "uint8_t": "uint8",
    "signed char": "int8", "int8": "int8", "int8_t": "int8", "char": "int8",
    "short": "int16", "int16": "int16", "int16_t": "int16", "signed short": "int16",
    "ushort": "uint16", "unsigned short": "uint16", "uint16": "uint16", "uint16_t": "uint16",
    "int": "int32", "int32": "int32", "int32_t": "int32", "signed int": "int32",
    "uint": "uint32", "unsigned int": "uint32", "uint32": "uint32", "uint32_t": "uint32",
    "float": "float32", "double": "float64",
}  # fmt: skip
_MET_TYPES = {
    "MET_UCHAR": "uint8", "MET_CHAR": "int8", "MET_SHORT": "int16", "MET_USHORT": "uint16",
    "MET_INT": "int32", "MET_UINT": "uint32", "MET_FLOAT": "float32", "MET_DOUBLE": "float64",
    "MET_LONG": "int64", "MET_ULONG": "uint64",
}  # fmt: skip


class ItkReader(VolumeReader):
    """A format SimpleITK reads; subclasses parse their own text header."""

    def affine(self, path: Path, data: bytes) -> np.ndarray:
        sitk = simple_itk(path)
        info = sitk.ImageFileReader()
        info.SetFileName(str(path))
        try:
            info.ReadImageInformation()
        except RuntimeError as error:
            reason = str(error).strip().splitlines()[-1] if str(error).strip() else "no reason"
            raise DataError(f"it is corrupt: ITK cannot read its header ({reason})") from None
        return itk_affine(info)

    def read(self, path: Path) -> tuple[np.ndarray, np.ndarray]:
        sitk = simple_itk(path)
        try:
            image = sitk.ReadImage(str(path))
        except RuntimeError as error:
            reason = str(error).strip().splitlines()[-1] if str(error).strip() else "no reason"
            raise DataError(f"it is truncated or corrupt: ITK cannot read it ({reason})") from None
        voxels = sitk.GetArrayFromImage(image)  # (z, y, x[, components])
        spatial = image.GetDimension()
        voxels = np.moveaxis(voxels, range(spatial), range(spatial)[::-1])  # (x, y, z, ...)
        return voxels, itk_affine(image)


def simple_itk(path: Path):
    """SimpleITK, or an error that names the file and the extra to install."""
    try:
        import SimpleITK as sitk  # noqa: N813 - the name ITK's own examples use
    except ImportError:
        raise DataError(
            f"{path} is a {Path(path).suffix.lstrip('.').upper()} volume, read by SimpleITK, "
            f"which is not installed; {EXTRA}, or convert the file to NIfTI."
        ) from None
    return sitk


def itk_affine(image) -> np.ndarray:
    """The voxel-to-RAS affine of an ITK image or file reader (ITK places voxels in LPS
    millimetres)."""
    dims = image.GetDimension()
    direction = np.array(image.GetDirection(), np.float64).reshape(dims, dims)
    affine = np.eye(4)
    affine[:dims, :dims] = direction * np.array(image.GetSpacing())
    affine[:dims, 3] = image.GetOrigin()
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine  # LPS -> RAS


def _text(data: bytes) -> str:
    head = data[:65536]
    end = head.find(b"\n\n")  # NRRD: a blank line ends the header
    return head[: end if end >= 0 else len(head)].decode("latin-1", "replace")


class NrrdReader(ItkReader):
    name = "nrrd"
    suffixes = (".nrrd", ".nhdr")
    magic = (b"NRRD000",)

    def header(self, data: bytes) -> Header:
        fields = {}
        for line in _text(data).splitlines()[1:]:
            if ":" in line and not line.startswith("#"):
                key, _, value = line.partition(":")
                fields[key.strip().lower()] = value.lstrip("=").strip()
        try:
            shape = tuple(int(n) for n in fields["sizes"].split())
        except (KeyError, ValueError):
            raise DataError("it is corrupt: its header has no `sizes` of whole numbers") from None
        kinds = fields.get("kinds", "").split()
        if kinds and kinds[0] not in ("domain", "space"):  # components first, as NRRD stores them
            shape = shape[1:] + shape[:1]
        dtype = _NRRD_TYPES.get(fields.get("type", "").lower(), fields.get("type", ""))
        return Header(self.name, shape[0], shape[1] if len(shape) > 1 else 1, None, shape, dtype)


class MetaImageReader(ItkReader):
    name = "metaimage"
    suffixes = (".mha", ".mhd")
    magic = (b"ObjectType", b"NDims")

    def recognises(self, data: bytes) -> bool:
        return re.match(rb"\s*(ObjectType|NDims|Comment)\s*=", data[:256]) is not None

    def header(self, data: bytes) -> Header:
        fields = {}
        for line in _text(data).splitlines():
            key, sep, value = line.partition("=")
            if sep:
                fields[key.strip()] = value.strip()
            if key.strip() == "ElementDataFile":
                break  # the voxels follow
        try:
            shape = tuple(int(n) for n in fields["DimSize"].split())
        except (KeyError, ValueError):
            raise DataError("it is corrupt: its header has no `DimSize` of whole numbers") from None
        channels = int(fields.get("ElementNumberOfChannels", "1") or 1)
        if channels > 1:
            shape = (*shape, channels)
        dtype = _MET_TYPES.get(fields.get("ElementType", ""), fields.get("ElementType", ""))
        return Header(self.name, shape[0], shape[1] if len(shape) > 1 else 1, None, shape, dtype)
