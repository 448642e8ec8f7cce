"""Damaged and bad volumes among valid cases of an nnU-Net folder, generated: the data check
names each bad file and raises nothing but flexseg's own errors.

Seeded and bounded as the 2D fuzz suite; each case is a fresh folder of three tiny cases.
"""

from __future__ import annotations

import functools
import gzip
import shutil
import tempfile
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flexseg.data import ReadSpec, Source, SplitRule
from flexseg.data.checks import dataset_problems
from flexseg.errors import ConfigError, DataError
from tests.helpers import make_volume_dataset

pytestmark = pytest.mark.once  # files are read the same way on every backend

CASES = 150
SHAPE = (8, 7, 5)
CASE_NAMES = ("p01", "p02", "p03")
MAX_VOXELS = 2**16
# Bad volumes that are whole files: each must be named.
BAD = ("nan", "fraction", "four_d_label", "label_shape", "label_affine", "empty", "classes")


@functools.cache
def valid_folder() -> Path:
    root = Path(tempfile.mkdtemp(prefix="flexseg-fuzz-volumes-"))
    make_volume_dataset(root, CASE_NAMES, SHAPE, channels=1, seed=3)
    return root


def nifti(voxels: np.ndarray, affine=None) -> bytes:
    image = nib.Nifti1Image(np.asarray(voxels), np.eye(4) if affine is None else affine)
    return gzip.compress(image.to_bytes(), mtime=0)


def bad_volume(kind: str, folder: str) -> tuple[bytes, str]:
    """(a whole file that is bad in one way, the folder it replaces a file in)."""
    rng = np.random.default_rng(zlib.crc32(kind.encode()))
    image = rng.normal(300, 40, SHAPE).astype(np.float32)
    label = np.zeros(SHAPE, np.uint8)
    label[2:5, 2:5, 1:3] = 1
    if kind == "nan":
        image[1, 1, 1] = np.nan
        return nifti(image), "imagesTr"
    if kind == "fraction":
        return nifti(label.astype(np.float32) * 0.5), "labelsTr"
    if kind == "four_d_label":
        return nifti(np.stack([label, label], -1)), "labelsTr"
    if kind == "label_shape":
        return nifti(np.zeros((8, 7, 6), np.uint8) + 1), "labelsTr"
    if kind == "label_affine":
        return nifti(label, np.diag([1.0, 1.0, 2.0, 1.0])), "labelsTr"
    if kind == "empty":
        return nifti(np.zeros(SHAPE, np.uint8)), "labelsTr"
    return nifti(label * 5), "labelsTr"  # class ids beyond num_classes=2


@st.composite
def damage(draw):
    """(content, folder, whether the check must name it)."""
    kind = draw(st.sampled_from(["cut", "random", "flip", "huge", "bad"]))
    folder = draw(st.sampled_from(["imagesTr", "labelsTr"]))
    name = "p01_0000.nii.gz" if folder == "imagesTr" else "p01.nii.gz"
    valid = (valid_folder() / folder / name).read_bytes()
    if kind == "cut":
        return valid[: draw(st.integers(0, len(valid) - 1))], folder, True
    if kind == "random":
        return draw(st.binary(min_size=0, max_size=400)), folder, True
    if kind == "flip":  # the gzip header's time and system bytes (4-9) are checked by nothing
        position = draw(st.integers(0, len(valid) - 1))
        flipped = bytearray(valid)
        flipped[position] ^= draw(st.integers(1, 255))
        return bytes(flipped), folder, position >= 10 or position < 3
    if kind == "huge":
        header = nib.Nifti1Header()
        header.set_data_shape(tuple(draw(st.integers(41, 4000)) for _ in range(3)))
        header.set_data_dtype(np.float32)
        return gzip.compress(header.binaryblock + b"\0" * 4), folder, True
    content, folder = bad_volume(draw(st.sampled_from(BAD)), folder)
    return content, folder, True


def check_case(case) -> None:
    content, folder, must_name = case
    root = Path(tempfile.mkdtemp(prefix="flexseg-fuzz-volumes-case-"))
    try:
        shutil.copytree(valid_folder(), root, dirs_exist_ok=True)
        target = root / folder / ("p01_0000.nii.gz" if folder == "imagesTr" else "p01.nii.gz")
        target.write_bytes(content)
        source = Source(root, split=SplitRule(fractions={"train": 1.0}), max_voxels=MAX_VOXELS)
        spec = ReadSpec(channels=1, normalize="volume_zscore", max_voxels=MAX_VOXELS)
        try:
            _, _, problems, _ = dataset_problems(source, 2, 0, spec, None)
        except (ConfigError, DataError) as error:  # flexseg's own: allowed, and must name it
            problems = [str(error)]
        text = "\n".join(problems)
        if must_name:
            assert str(target) in text, f"{target.name} ({len(content)} bytes) not named:\n{text}"
        for other in ("p02", "p03"):  # only the damaged file's case may be named
            assert f"{other}.nii.gz" not in text and f"{other}_0000" not in text, text
    finally:
        shutil.rmtree(root, ignore_errors=True)


FUZZ = settings(
    max_examples=CASES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@FUZZ
@given(case=damage())
def test_every_bad_volume_is_named_and_nothing_else_raises(case):
    check_case(case)


@pytest.mark.parametrize("kind", BAD)
def test_each_bad_volume_class_is_named(kind):
    content, folder = bad_volume(kind, "")
    check_case((content, folder, True))


def test_the_volume_fuzz_fails_on_a_reader_that_trusts_gzip(monkeypatch):
    """The test of the test: with the gzip stream decoded as far as it goes and its checksum
    ignored (as a lenient reader would), the same cases find a damaged file nobody names."""

    def lenient(data: bytes) -> bytes:
        stream = zlib.decompressobj(wbits=31)
        try:
            return stream.decompress(data)
        except zlib.error:
            return b""

    monkeypatch.setattr("flexseg.data.readers.nifti.gzip.decompress", lenient)

    @settings(FUZZ, max_examples=CASES)
    @given(case=damage())
    def fuzz(case):
        check_case(case)

    with pytest.raises(Exception) as info:  # noqa: PT011 - one of several failures
        fuzz()
    found = getattr(info.value, "exceptions", [info.value])  # hypothesis groups distinct bugs
    assert any(isinstance(e, AssertionError) and "not named" in str(e) for e in found), found
