from __future__ import annotations

import json

import numpy as np

from flexseg.data import ColorMap, find_samples
from flexseg.data.stats import dataset_statistics, write_statistics
from tests.helpers import data_source, make_flat_dataset, write_png

BINARY_MAP = [
    {"name": "background", "color": [0, 0, 0], "id": 0},
    {"name": "lesion", "color": [255, 255, 255], "id": 1},
]


NAMES = ["background", "lesion"]


def binary_dataset(root):
    return data_source(root, split={"groups": {"train": ["p01", "p02"], "test": ["p03"]}})


def statistics(source):
    return dataset_statistics(find_samples(source, seed=0), NAMES, ColorMap.from_config(BINARY_MAP))


def test_statistics_per_split_and_the_mask_report(tmp_path):
    make_flat_dataset(tmp_path, slices=2, size=(16, 16))
    # An anti-aliased edge in one mask, and an empty mask in another.
    mask = np.zeros((16, 16), np.uint8)
    mask[4:8, 4:8] = 255
    mask[8, 4:8] = 128
    write_png(tmp_path / "masks" / "p01_z000.png", mask)
    write_png(tmp_path / "masks" / "p03_z001.png", np.zeros((16, 16), np.uint8))
    cfg = binary_dataset(tmp_path)
    stats, report = statistics(cfg)
    assert stats["train"]["images"] == 4 and stats["train"]["groups"] == 2
    assert stats["test"]["image_sizes_wxh"] == {"16x16": 2}
    assert stats["test"]["fraction_with_foreground"] == 0.5
    fractions = stats["train"]["class_pixel_fraction"]
    assert set(fractions) == {"background", "lesion"}
    assert abs(sum(fractions.values()) - 1) < 1e-9
    assert report.blended_pixels == 4 and not report.unknown
    json_path, png_path = write_statistics(tmp_path / "out", stats, report)
    saved = json.loads(json_path.read_text())
    assert saved["mask_report"]["blended_pixels"] == 4
    assert png_path.stat().st_size > 0


def test_unknown_colours_are_reported_by_file(tmp_path):
    make_flat_dataset(tmp_path, slices=1, size=(8, 8))
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[0, :3] = [0, 200, 0]
    write_png(tmp_path / "masks" / "p02_z000.png", rgb)
    cfg = binary_dataset(tmp_path)
    _, report = statistics(cfg)
    assert report.unknown == {(0, 200, 0): 3}
    assert list(report.unknown_files) == [str(tmp_path / "masks" / "p02_z000.png")]


def test_groups_whose_channels_are_copies_are_named(tmp_path):
    """lgg's scans without T1 sequences carry FLAIR in all three channels: named per split."""
    make_flat_dataset(tmp_path, slices=2, size=(16, 16))
    rng = np.random.default_rng(0)
    for group, copied in (("p01", True), ("p02", False), ("p03", True)):
        for z in range(2):
            flair = rng.integers(1, 255, (16, 16), dtype=np.uint8)
            rgb = np.stack([flair] * 3 if copied else [flair, flair // 2, 255 - flair], -1)
            write_png(tmp_path / "images" / f"{group}_z{z:03d}.png", rgb)
    write_png(tmp_path / "images" / "p02_z001.png", np.zeros((16, 16, 3), np.uint8))  # blank
    cfg = binary_dataset(tmp_path)
    stats, _ = statistics(cfg)
    assert stats["train"]["groups_with_copied_channels"] == ["p01"]
    assert stats["test"]["groups_with_copied_channels"] == ["p03"]
