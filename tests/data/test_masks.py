from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from flexseg.data import ColorMap, decode_mask, write_palette_png
from flexseg.errors import ConfigError, DataError
from tests.helpers import write_png

THREE = [
    {"name": "background", "color": [0, 0, 0], "id": 0},
    {"name": "lesion", "color": [255, 0, 0], "id": 1},
    {"name": "edema", "color": [0, 0, 255], "id": 2},
]


def test_index_mask(tmp_path):
    write_png(tmp_path / "m.png", np.array([[0, 1], [2, 1]], np.uint8))
    index, _ = decode_mask(tmp_path / "m.png", num_classes=3)
    np.testing.assert_array_equal(index, [[0, 1], [2, 1]])


def test_binary_0_255_mask(tmp_path):
    write_png(tmp_path / "m.png", np.array([[0, 255]], np.uint8))
    index, _ = decode_mask(tmp_path / "m.png", num_classes=2)
    np.testing.assert_array_equal(index, [[0, 1]])


def test_gray_values_that_are_no_class_ids_are_refused(tmp_path):
    write_png(tmp_path / "m.png", np.array([[0, 128, 255]], np.uint8))
    with pytest.raises(DataError, match=r"m.png has values \[0, 128, 255\]"):
        decode_mask(tmp_path / "m.png", num_classes=2)


def test_palette_mask_indices_and_round_trip(tmp_path):
    cmap = ColorMap.from_config(THREE)
    index = np.array([[0, 1, 2], [2, 2, 0]], np.uint8)
    write_palette_png(tmp_path / "p.png", index, cmap)
    with Image.open(tmp_path / "p.png") as image:
        assert image.mode == "P"
        assert image.getpalette()[:9] == [0, 0, 0, 255, 0, 0, 0, 0, 255]
    np.testing.assert_array_equal(decode_mask(tmp_path / "p.png", 3)[0], index)
    np.testing.assert_array_equal(decode_mask(tmp_path / "p.png", 3, cmap)[0], index)


def test_rgb_mask_through_the_map(tmp_path):
    rgb = np.array([[[0, 0, 0], [255, 0, 0], [0, 0, 255]]], np.uint8)
    write_png(tmp_path / "m.png", rgb)
    index, report = decode_mask(tmp_path / "m.png", 3, ColorMap.from_config(THREE))
    np.testing.assert_array_equal(index, [[0, 1, 2]])
    assert report.blended_pixels == 0 and not report.unknown


def test_rgb_mask_without_a_map_is_refused(tmp_path):
    write_png(tmp_path / "m.png", np.zeros((2, 2, 3), np.uint8))
    with pytest.raises(DataError, match="set dataset.rgb_map"):
        decode_mask(tmp_path / "m.png", 2)


def test_anti_aliased_edges_go_to_the_nearest_colour_and_are_counted():
    cmap = ColorMap.from_config({(0, 0, 0): 0, (255, 255, 255): 1})  # the reference's form
    gray = np.array([[0, 30, 127, 128, 250, 255]], np.uint8)
    index, report = cmap.decode(gray)
    np.testing.assert_array_equal(index, [[0, 0, 0, 1, 1, 1]])
    assert report.blended_pixels == 4 and not report.unknown


def test_blend_between_two_colours_of_three():
    cmap = ColorMap.from_config(THREE)
    rgb = np.array([[[200, 0, 55], [90, 0, 0], [3, 2, 1]]], np.uint8)  # red-blue, red-black
    index, report = cmap.decode(rgb)
    np.testing.assert_array_equal(index, [[1, 0, 0]])
    assert report.blended_pixels == 3 and not report.unknown


def test_unknown_colour_is_reported_with_file_and_count():
    cmap = ColorMap.from_config(THREE, tolerance=10)
    rgb = np.zeros((2, 3, 3), np.uint8)
    rgb[0, :2] = [0, 255, 0]  # green: far from every colour and every blend
    _, report = cmap.decode(rgb, "masks/a.png")
    assert report.unknown == {(0, 255, 0): 2}
    assert "unknown colour [0, 255, 0] in masks/a.png: 2 pixels" in report.summary()


def test_string_keys_of_the_reference_form():
    cmap = ColorMap.from_config({"(0, 0, 0)": 0, "(255, 255, 255)": 1})
    assert [c.color for c in cmap.classes] == [(0, 0, 0), (255, 255, 255)]


@pytest.mark.parametrize(
    ("rgb_map", "message"),
    [
        ([{"name": "a", "color": [0, 0, 0], "id": 1}], "ids must be 0 .. n-1"),
        ([{"name": "a", "color": [0, 0], "id": 0}], "colour of class 'a'"),
        ([{"name": "a", "color": [0, 0, 0], "id": 0, "colour": 1}], r"rgb_map\[0\]"),
        ({(0, 0, 0): 0, (0, 0, 0, 0): 1}, "must be"),
        ("red", "must be a list"),
    ],
)
def test_bad_rgb_maps(rgb_map, message):
    with pytest.raises(ConfigError, match=message):
        ColorMap.from_config(rgb_map)


def gray_regions(*values) -> np.ndarray:
    """A 40 x 40 mask of 0 with a 12 x 12 square of each value."""
    mask = np.zeros((40, 40), np.uint8)
    for i, value in enumerate(values):
        mask[2 + 14 * i : 14 + 14 * i, 4:16] = value
    return mask


def test_blends_inside_a_region_are_refused_with_a_map_that_would_read_them(tmp_path):
    """A three-class mask written as 0/100/200 is no anti-aliased 0/255 mask."""
    write_png(tmp_path / "m.png", gray_regions(100, 200))
    cmap = ColorMap.from_config({(0, 0, 0): 0, (255, 255, 255): 1})
    _, report = decode_mask(tmp_path / "m.png", 2, cmap)
    text = report.misplaced_files[str(tmp_path / "m.png")]
    assert "lie inside regions" in text and "[100, 100, 100] (144 pixels)" in text
    assert "color: [200, 200, 200], id: 2}] with dataset.num_classes=3" in text
    assert f"{tmp_path / 'm.png'}: blended colours" in report.summary()


def test_anti_aliasing_on_every_edge_of_a_region_passes():
    mask = gray_regions(255)
    blurred = mask.copy()
    blurred[1, 4:16] = blurred[14, 4:16] = 128  # the edges above and below, one pixel wide
    blurred[2:14, 3] = blurred[2:14, 16] = 64
    _, report = ColorMap.from_config({(0, 0, 0): 0, (255, 255, 255): 1}).decode(blurred)
    assert report.blended_pixels == 48 and report.misplaced_files == {}


def test_a_foreground_of_mostly_blends_is_refused():
    """Thin strokes of a blend colour: each near black and white, but most of the foreground."""
    mask = np.zeros((40, 40), np.uint8)
    mask[5:35, 19] = 255
    mask[5:35, 17:19] = mask[5:35, 20:22] = 128  # next to white and to black
    _, report = ColorMap.from_config({(0, 0, 0): 0, (255, 255, 255): 1}).decode(mask, "s.png")
    assert "make up 120 of the 150 foreground pixels" in report.misplaced_files["s.png"]
