from __future__ import annotations

import os

import pytest

from flexseg.data import pair_by_name
from flexseg.data.pairing import find_pairs, list_images
from flexseg.errors import DataError
from tests.helpers import make_flat_dataset, write_png


def test_pairs_by_stem_whatever_the_listing_order(tmp_path, monkeypatch):
    names = make_flat_dataset(tmp_path, slices=3)
    forward = pair_by_name(tmp_path / "images", tmp_path / "masks")
    real_iterdir = type(tmp_path).iterdir
    # The file system may list files in any order; pairing must not depend on it.
    monkeypatch.setattr(type(tmp_path), "iterdir", lambda self: reversed(list(real_iterdir(self))))
    backward = pair_by_name(tmp_path / "images", tmp_path / "masks")
    assert [p.name for p in forward] == [p.name for p in backward] == sorted(names)
    assert all(p.image.stem == p.mask.stem for p in backward)


def test_mask_with_other_extension_and_suffix(tmp_path):
    write_png(tmp_path / "images" / "a.png", [[0]])
    write_png(tmp_path / "masks" / "a_mask.bmp", [[0]])
    (pair,) = pair_by_name(tmp_path / "images", tmp_path / "masks", mask_suffix="_mask")
    assert pair.mask.name == "a_mask.bmp"


def test_unpaired_files_are_named(tmp_path):
    make_flat_dataset(tmp_path, groups=("p01",), slices=2)
    os.remove(tmp_path / "masks" / "p01_z000.png")
    write_png(tmp_path / "masks" / "stray.png", [[0]])
    with pytest.raises(DataError, match="p01_z000.png") as info:
        pair_by_name(tmp_path / "images", tmp_path / "masks")
    assert "stray.png" in str(info.value)


def test_hidden_files_are_ignored_and_other_files_named(tmp_path):
    write_png(tmp_path / "a.png", [[0]])
    (tmp_path / ".DS_Store").write_text("x")
    assert [p.name for p in list_images(tmp_path)] == ["a.png"]
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="notes.txt"):
        list_images(tmp_path)


def test_entries_that_are_no_files_are_named_as_what_they_are(tmp_path):
    make_flat_dataset(tmp_path, groups=("p01",), slices=2)
    os.remove(tmp_path / "masks" / "p01_z001.png")
    (tmp_path / "masks" / "p01_z001.png").mkdir()  # a folder named like the mask
    (tmp_path / "images" / "p01_z002.png").symlink_to(tmp_path / "gone.png")
    (tmp_path / "images" / "old").mkdir()  # a subfolder without an image's name: passed over
    pairs, problems = find_pairs(tmp_path / "images", tmp_path / "masks")
    assert [p.name for p in pairs] == ["p01_z000"]
    text = "\n".join(problems)
    assert f"mask {tmp_path / 'masks' / 'p01_z001.png'} is a folder, not a file" in text
    assert f"image {tmp_path / 'images' / 'p01_z002.png'} is a broken link" in text
    assert "1 image(s) without a mask" in text and str(tmp_path / "images" / "old") not in text
