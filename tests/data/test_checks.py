"""flexseg.data.checks: every problem of a dataset's files, pairing and reading, in one report."""

from __future__ import annotations

import os
import struct
import zlib

import numpy as np

from flexseg.data.checks import dataset_problems
from flexseg.data.readers.png import SIGNATURE as PNG
from flexseg.data.reading import ReadSpec
from tests.helpers import data_source, make_flat_dataset, write_png


def test_pairing_reading_and_sizes_in_one_report(tmp_path):
    make_flat_dataset(tmp_path, slices=3, size=(16, 16))
    os.remove(tmp_path / "masks" / "p01_z000.png")  # an image without a mask
    mask = tmp_path / "masks" / "p02_z001.png"
    mask.write_bytes(mask.read_bytes()[:-12])  # cut before its end chunk
    write_png(tmp_path / "images" / "p03_z002.png", np.zeros((8, 8), np.uint8))  # other size
    ihdr = b"IHDR" + struct.pack(">IIBBBBB", 40_000, 40_000, 8, 0, 0, 0, 0)
    huge = PNG + struct.pack(">I", 13) + ihdr + struct.pack(">I", zlib.crc32(ihdr))
    huge += b"\0\0\0\0IEND" + struct.pack(">I", zlib.crc32(b"IEND"))
    (tmp_path / "images" / "p01_z002.png").write_bytes(huge)
    dataset = data_source(tmp_path, split={"fractions": {"train": 1}})
    splits, facts, problems, _ = dataset_problems(dataset, 2, 0, ReadSpec(), None)
    assert len(problems) == 4, problems
    text = "\n".join(problems)
    assert "1 image(s) without a mask" in text and "p01_z000.png" in text
    assert f"cannot read mask {mask}: it is truncated: it has no IEND end chunk" in text
    assert "p03_z002.png is 8x8 but its mask" in text
    assert "40000x40000 (width x height, 1,600,000,000 pixels)" in text
    assert "dataset.max_pixels=268,435,456" in text
    assert facts["train"]["images"] == 8  # the pairs that pair were all read
