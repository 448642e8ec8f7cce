from __future__ import annotations

import cv2
import numpy as np
import pytest

from flexseg.data.reading import (
    ReadSpec,
    fit_size,
    intensity_stats,
    normalize,
    padding_for,
    read_image,
    to_model_input,
)
from flexseg.errors import ConfigError, DataError


@pytest.mark.parametrize("ext", [".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"])
def test_every_format_reads_as_gray_or_rgb(tmp_path, ext):
    rgb = np.zeros((6, 5, 3), np.uint8)
    rgb[..., 0] = 200  # red
    path = tmp_path / f"a{ext}"
    cv2.imwrite(str(path), rgb[..., ::-1])  # OpenCV writes BGR
    color = read_image(path, channels=3)
    assert color.shape == (6, 5, 3) and color.dtype == np.uint8
    assert abs(int(color[0, 0, 0]) - 200) <= 3 and color[0, 0, 2] <= 3  # red stays red
    gray = read_image(path, channels=1)
    assert gray.shape == (6, 5, 1)
    assert read_image(path, channels=None).shape == (6, 5, 3)


def test_16_bit_tiff_keeps_its_range(tmp_path):
    image = np.full((4, 4), 40000, np.uint16)
    cv2.imwrite(str(tmp_path / "a.tif"), image)
    read = read_image(tmp_path / "a.tif")
    assert read.dtype == np.uint16 and read.max() == 40000
    unit = to_model_input(read / 65535.0, 65535.0, ReadSpec(normalize="scale01"))
    assert unit.max() == pytest.approx(40000 / 65535)


def test_a_float_image_with_nan_or_infinite_pixels_is_refused_by_name(tmp_path):
    image = np.ones((5, 6), np.float32)
    image[1, 2], image[3, 4] = np.nan, np.inf
    cv2.imwrite(str(tmp_path / "scan.tif"), image)
    assert read_image_dtype(tmp_path / "scan.tif") == np.float32
    with pytest.raises(DataError, match=r"scan.tif has 2 NaN or infinite pixel\(s\); fill them"):
        read_image(tmp_path / "scan.tif")


def read_image_dtype(path):
    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED).dtype


@pytest.mark.parametrize("content", [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n\x00\x00"])
def test_unreadable_files_are_named(tmp_path, content):
    (tmp_path / "bad.png").write_bytes(content)
    with pytest.raises(DataError, match="bad.png"):
        read_image(tmp_path / "bad.png")


def test_truncated_png_is_named(tmp_path):
    cv2.imwrite(
        str(tmp_path / "a.png"), np.random.default_rng(0).integers(0, 255, (64, 64), np.uint8)
    )
    data = (tmp_path / "a.png").read_bytes()
    (tmp_path / "a.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="a.png"):
        read_image(tmp_path / "a.png")


def test_pad_centres_and_resize_keeps_mask_ids():
    image = np.ones((5, 7, 1), np.float32)
    mask = np.zeros((5, 7), np.uint8)
    mask[2, 3] = 1
    padded, padded_mask = fit_size(image, mask, ReadSpec(size_multiple=4))
    assert padded.shape == (8, 8, 1) and padded_mask[3, 3] == 1  # 1 row above, 2 below
    assert padding_for((5, 7), 4) == (1, 2, 0, 1)
    resized, resized_mask = fit_size(
        image, mask, ReadSpec(size_policy="resize", image_size=(10, 14))
    )
    assert resized.shape == (10, 14, 1) and set(np.unique(resized_mask)) == {0, 1}


def test_pad_refuses_images_larger_than_the_frame():
    spec = ReadSpec(image_size=(4, 4))
    with pytest.raises(DataError, match="size_policy=resize"):
        fit_size(np.zeros((5, 4, 1)), None, spec, "image x.png")


def test_zscore_over_nonzero_pixels_with_clipping():
    image = np.zeros((10, 10, 1), np.float32)
    image[2:8, 2:8] = np.linspace(0.2, 0.8, 36).reshape(6, 6, 1)
    spec = ReadSpec(normalize="zscore", clip_percentiles=(0, 100), ignore_zero=True)
    out = normalize(image, spec)
    brain = out[2:8, 2:8]
    assert abs(brain.mean()) < 0.02 and abs(brain.std() - 1) < 0.05
    stats = intensity_stats([image], ReadSpec(clip_percentiles=(10, 90)))
    assert 0.2 < stats.low[0] < stats.high[0] < 0.8


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        (dict(channels=0), "dataset.channels"),
        (dict(context_slices=-1), "dataset.context_slices"),
        (dict(size_policy="crop"), "dataset.size_policy"),
        (dict(size_policy="resize"), "dataset.image_size"),
        (dict(normalize="minmax"), "dataset.normalize"),
        (dict(clip_percentiles=(99, 1)), "dataset.clip_percentiles"),
    ],
)
def test_bad_read_settings_name_the_key(kwargs, key):
    with pytest.raises(ConfigError, match=key):
        ReadSpec(**kwargs)
