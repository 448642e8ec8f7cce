"""Damaged and odd files among valid pairs, generated: the data check names each damaged file
and raises nothing but flexseg's own errors.

Seeded and bounded (`derandomize`, `max_examples`), run once per `make test`, not per backend:
the data layer reads files the same way on every backend.
"""

from __future__ import annotations

import functools
import io
import os
import shutil
import tempfile
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from flexseg.data import Source, SplitRule, files, readers
from flexseg.data.checks import dataset_problems
from flexseg.data.reading import ReadSpec
from flexseg.errors import ConfigError, DataError
from tests.helpers import encoded, huge_header

pytestmark = pytest.mark.once  # files are read the same way on every backend

CASES = 500
SIZE = (12, 16)  # height, width of every valid file
FORMATS = {"png": "PNG", "jpg": "JPEG", "tif": "TIFF", "bmp": "BMP"}
STEMS = ("p01_z000", "p01_z001", "p02_z000")
MAX_PIXELS = 2**20


def encode(array: np.ndarray, extension: str, **options) -> bytes:
    return encoded(array, FORMATS[extension], **options)


@functools.cache
def valid_image(extension: str, stem: str) -> bytes:
    rng = np.random.default_rng(zlib.crc32(f"{extension}/{stem}".encode()))
    return encode(rng.integers(0, 255, SIZE, dtype=np.uint8), extension)


@functools.cache
def valid_mask(extension: str = "png") -> bytes:
    mask = np.zeros(SIZE, np.uint8)
    mask[3:8, 4:9] = 255
    return encode(mask, extension)


def odd_image(kind: str) -> bytes:
    """Valid files of other depths and channel counts: each read, or refused by name."""
    rng = np.random.default_rng(1)
    if kind == "rgba":
        return encode(rng.integers(0, 255, (*SIZE, 4), dtype=np.uint8), "png")
    if kind == "gray_alpha":
        pixels = rng.integers(0, 255, (*SIZE, 2), dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels, "LA").save(buffer, "PNG")
        return buffer.getvalue()
    if kind == "16bit":
        return encode(rng.integers(0, 65535, SIZE, dtype=np.uint16), "png")
    if kind == "1bit":
        return encode(rng.integers(0, 2, SIZE).astype(bool), "png")
    if kind == "palette":
        return encode(rng.integers(0, 3, SIZE, dtype=np.uint8), "png", bits=2)
    if kind == "float_tiff":
        return encode(rng.random(SIZE, dtype=np.float32), "tif")
    return encode(rng.integers(0, 255, (*SIZE, 3), dtype=np.uint8), "png")  # rgb


ODD = ("rgba", "gray_alpha", "16bit", "1bit", "palette", "float_tiff", "rgb")


@st.composite
def damage(draw, folder: str):
    """(what the damaged file holds, its extension, whether the check must name it), made
    from a valid image, or a valid 0/255 mask, of the folder it goes into."""
    kind = draw(st.sampled_from(["cut", "random", "magic", "huge", "flip", "odd"]))
    extension = draw(st.sampled_from(list(FORMATS)))
    valid = valid_image(extension, "damaged") if folder == "images" else valid_mask(extension)
    if kind == "cut":  # every length class: in the signature, the header, the data, the end
        return valid[: draw(st.integers(0, len(valid) - 1))], extension, True
    if kind == "random":
        return draw(st.binary(min_size=0, max_size=300)), extension, True
    if kind == "magic":
        junk = draw(st.binary(min_size=2, max_size=4).filter(lambda b: b[:2] != valid[:2]))
        return junk + valid[len(junk) :], extension, True
    if kind == "huge":
        side = draw(st.integers(1025, 2**31 - 1))
        return huge_header(extension, side, side), extension, True
    if kind == "flip":  # a PNG checksum catches any changed byte; other formats may not
        position = draw(st.integers(0, len(valid) - 1))
        flipped = bytearray(valid)
        flipped[position] ^= draw(st.integers(1, 255))
        return bytes(flipped), extension, extension == "png" and position >= 8
    odd = draw(st.sampled_from(ODD))
    return odd_image(odd), "tif" if odd == "float_tiff" else "png", False


def check_case(case) -> None:
    (content, extension, must_name), folder, which = case
    root = Path(tempfile.mkdtemp(prefix="flexseg-fuzz-"))
    try:
        for stem in STEMS:
            (root / "images").mkdir(exist_ok=True)
            (root / "masks").mkdir(exist_ok=True)
            (root / "images" / f"{stem}.png").write_bytes(valid_image("png", stem))
            (root / "masks" / f"{stem}.png").write_bytes(valid_mask())
        target = root / folder / f"{STEMS[which]}.{extension}"
        for old in (root / folder).glob(f"{STEMS[which]}.*"):
            old.unlink()
        target.write_bytes(content)
        source = Source(root, group_regex=r"^(p\d+)_", split=SplitRule(fractions={"train": 1.0}))
        try:
            _, _, problems, _ = dataset_problems(
                source, 2, 0, ReadSpec(max_pixels=MAX_PIXELS), None
            )
        except (ConfigError, DataError) as error:  # flexseg's own: allowed, and must name it
            problems = [str(error)]
        text = "\n".join(problems)
        if must_name:
            assert str(target) in text, f"{target.name} ({len(content)} bytes) not named:\n{text}"
        untouched = [
            root / f / f"{s}.png" for f in ("images", "masks") for s in STEMS if s != STEMS[which]
        ]
        for path in untouched:  # only the damaged file's pair may be named
            assert str(path) not in text, f"{path} named though untouched:\n{text}"
    finally:
        shutil.rmtree(root, ignore_errors=True)


@st.composite
def hostile_case(draw):
    """(damage, the folder it is in, which pair)."""
    folder = draw(st.sampled_from(["images", "masks"]))
    return draw(damage(folder)), folder, draw(st.integers(0, len(STEMS) - 1))


CASE = hostile_case()
FUZZ = settings(
    max_examples=CASES,
    derandomize=True,  # the same cases on every run: seeded, so a failure repeats
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@FUZZ
@given(case=CASE)
def test_every_damaged_file_is_named_and_nothing_else_raises(case):
    check_case(case)


def test_the_fuzz_suite_fails_on_a_reader_that_accepts_damaged_files(monkeypatch):
    """The test of the test: with the header and integrity checks out (a reader that trusts
    the decoders, as flexseg once did), the same cases find a damaged file nobody names."""

    def trusting(path, max_pixels, what="image"):
        data = Path(path).read_bytes()
        try:
            with warnings.catch_warnings(), Image.open(io.BytesIO(data)) as image:
                warnings.simplefilter("ignore")  # Pillow's own complaints about the header
                size = image.size
        except Exception as error:
            raise DataError(f"cannot read {what} {path}: {error}") from None
        return data, readers.Header("png", *size)  # decoded as any 2D picture

    for module in ("flexseg.data.reading", "flexseg.data.masks"):
        monkeypatch.setattr(f"{module}.read_checked", trusting)

    @settings(FUZZ, max_examples=200)
    @given(case=CASE)
    def fuzz(case):
        check_case(case)

    with pytest.raises(AssertionError, match="not named"):
        fuzz()


def test_the_cases_cover_every_damage_class():
    """The budget is spent in full and reaches damaged and odd files in both folders and every
    format (this guards against a strategy that never leaves some of them)."""
    seen, cases = set(), []

    @settings(FUZZ, max_examples=CASES)
    @given(case=CASE)
    def record(case):
        (content, extension, must_name), folder, _ = case
        seen.add((folder, must_name, len(content) == 0, extension))
        cases.append(case)

    record()
    assert len(cases) >= CASES  # the budget is spent: every run checks 500 cases
    assert {(f, True) for f in ("images", "masks")} <= {(f, m) for f, m, _, _ in seen}
    assert {(f, False) for f in ("images", "masks")} <= {(f, m) for f, m, _, _ in seen}
    assert {e for _, _, _, e in seen} == set(FORMATS)


@pytest.mark.parametrize("extension", list(FORMATS))
def test_a_huge_header_is_refused_before_decoding(extension, tmp_path):
    path = tmp_path / f"scan.{extension}"
    path.write_bytes(huge_header(extension, 50_000, 60_000))
    with pytest.raises(DataError) as info:
        files.read_checked(path, 2**28, "image")
    assert f"{path} is 50000x60000" in str(info.value)
    assert "dataset.max_pixels=268,435,456" in str(info.value)


def test_non_files_are_named_as_what_they_are(tmp_path):
    (tmp_path / "folder.png").mkdir()
    (tmp_path / "broken.png").symlink_to(tmp_path / "nowhere.png")
    os.mkfifo(tmp_path / "pipe.png")
    expected = {
        "folder.png": "a folder, not a file",
        "broken.png": "a broken link",
        "pipe.png": "a named pipe, not a file",
    }
    for name, kind in expected.items():
        with pytest.raises(DataError, match=kind):
            files.read_checked(tmp_path / name, 2**28)
