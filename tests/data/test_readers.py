"""The readers: one per format behind one interface, known by first bytes and by name."""

from __future__ import annotations

import numpy as np
import pytest

from flexseg.data import Sample, readers
from flexseg.data.batches import read_pair
from flexseg.data.masks import decode_mask
from flexseg.data.reading import ReadSpec, read_image
from flexseg.errors import DataError
from tests.helpers import encoded, write_png


@pytest.mark.parametrize(
    ("name", "suffix", "stem"),
    [("p07_z026.png", ".png", "p07_z026"), ("a.b.JPEG", ".jpeg", "a.b"), ("x.tif", ".tif", "x"),
     ("notes.txt", None, "notes"), ("p07_0001.nii.gz", ".nii.gz", "p07_0001"),
     ("scan.nii", ".nii", "scan"), ("ct.mha", ".mha", "ct")],
)  # fmt: skip
def test_a_file_name_gives_its_format_suffix_and_stem(name, suffix, stem):
    assert readers.suffix_of(name) == suffix
    assert readers.stem_of(name) == stem


def test_each_format_is_known_by_its_first_bytes():
    image = np.arange(12 * 16, dtype=np.uint8).reshape(12, 16)
    for fmt, name in (("PNG", "png"), ("JPEG", "jpeg"), ("TIFF", "tiff"), ("BMP", "bmp")):
        data = encoded(image, fmt)
        reader = readers.reader_for(data)
        assert reader.name == name and readers.by_name(name) is reader
        header = reader.header(data)
        assert (header.format, header.width, header.height) == (name, 16, 12)
    with pytest.raises(
        DataError, match=r"not a PNG, JPEG, TIFF, BMP, NIFTI, NRRD or METAIMAGE file \(it starts"
    ):
        readers.reader_for(b"GIF89a....")


def test_every_reader_is_registered_with_its_names():
    assert readers.suffixes() == (
        *(".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"),
        *(".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd"),
    )
    assert [r.name for r in readers.READERS if r.volume] == ["nifti", "nrrd", "metaimage"]
    assert all(isinstance(r, readers.Reader) and r.magic and r.suffixes for r in readers.READERS)


def test_a_sample_names_its_place_in_its_file(tmp_path):
    write_png(tmp_path / "p01_z000.png", np.full((8, 8), 200, np.uint8))
    write_png(tmp_path / "m.png", np.zeros((8, 8), np.uint8))
    whole = Sample(tmp_path / "p01_z000.png", tmp_path / "m.png", "p01")
    assert whole.name == "p01_z000" and whole.index is None
    image, mask = read_pair(whole, 2, ReadSpec())
    assert image.shape == (8, 8, 1) and mask.shape == (8, 8)
    sliced = Sample(tmp_path / "p01_z000.png", tmp_path / "m.png", "p01", index=3)
    assert sliced.name == "p01_z000_z003"
    with pytest.raises(DataError, match=r"p01_z000\.png is a 2D image; it has no slice 3"):
        read_image(sliced.image, index=sliced.index)
    with pytest.raises(DataError, match=r"m\.png is a 2D image; it has no slice 3"):
        decode_mask(sliced.mask, 2, index=sliced.index)
