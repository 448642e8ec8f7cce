from __future__ import annotations

import numpy as np
import pytest

from flexseg.data import build_augmentation
from flexseg.errors import ConfigError

SPATIAL = {
    "flip": [{"name": "HorizontalFlip", "p": 1.0}, {"name": "VerticalFlip", "p": 1.0}],
    "rot90": [{"name": "RandomRotate90", "p": 1.0}],
    "affine": [
        {
            "name": "Affine",
            "rotate": [20, 40],
            "scale": [0.8, 1.2],
            "translate_percent": 0.1,
            "p": 1.0,
        }
    ],
    "elastic": [{"name": "ElasticTransform", "alpha": 40, "sigma": 5, "p": 1.0}],
    "grid": [{"name": "GridDistortion", "distort_limit": 0.3, "p": 1.0}],
}


def blobs(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A dark image with bright discs, and the mask that thresholding it gives."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:64, :64]
    mask = np.zeros((64, 64), np.uint8)
    for _ in range(4):
        cy, cx, r = rng.integers(10, 54), rng.integers(10, 54), rng.integers(4, 10)
        mask[(yy - cy) ** 2 + (xx - cx) ** 2 <= r**2] = 1
    image = np.where(mask > 0, 0.9, 0.1).astype(np.float32)[..., None]
    return image, mask


def mismatch(image: np.ndarray, mask: np.ndarray) -> float:
    return float(((image[..., 0] > 0.5) != (mask > 0)).mean())


@pytest.mark.parametrize("kind", SPATIAL)
def test_spatial_transforms_keep_image_and_mask_aligned(kind):
    pipeline = build_augmentation(SPATIAL[kind])
    for seed in range(3):
        image, mask = blobs(seed)
        pipeline.set_random_seed(seed)
        out = pipeline(image=image, mask=mask)
        assert set(np.unique(out["mask"])) <= {0, 1}  # nearest neighbour: no blended ids
        assert mismatch(out["image"], out["mask"]) < 0.02  # only interpolated edge pixels
        # The check has teeth: the mask of another random draw does not line up.
        pipeline.set_random_seed(seed + 100)
        other = pipeline(image=image, mask=mask)["mask"]
        if kind not in ("flip",):
            assert mismatch(out["image"], other) > 0.02 or np.array_equal(other, out["mask"])


def test_intensity_transforms_leave_the_mask_alone():
    pipeline = build_augmentation(
        [
            {"name": "RandomBrightnessContrast", "p": 1.0},
            {"name": "RandomGamma", "p": 1.0},
            {"name": "GaussNoise", "std_range": [0.05, 0.1], "p": 1.0},
        ]
    )
    image, mask = blobs()
    out = pipeline(image=image, mask=mask)
    np.testing.assert_array_equal(out["mask"], mask)
    assert not np.allclose(out["image"], image)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"name": "HorizontalFlop"}, "HorizontalFlop"),
        ({"name": "HorizontalFlip", "pp": 0.5}, r"unknown argument\(s\) \['pp'\]"),
        ({"name": "Affine", "mask_interpolation": 1}, "mask_interpolation must stay 0"),
        ({"name": "Affine", "rotate": "a lot"}, r"transforms\[0\] \(Affine\)"),
    ],
)
def test_bad_transform_specs_name_the_entry(spec, message):
    with pytest.raises(ConfigError, match=message):
        build_augmentation([spec])


def test_no_transforms_means_no_augmentation():
    assert build_augmentation([]) is None


def test_axis_swapping_transforms_need_square_images():
    spec = [{"name": "RandomRotate90", "p": 0.5}]
    assert build_augmentation(spec, image_size=(64, 64)) is not None
    with pytest.raises(ConfigError, match=r"RandomRotate90\) swaps height and width"):
        build_augmentation(spec, image_size=(224, 192))


def test_axis_swapping_transforms_of_patches_need_equal_axes():
    cubic = [{"name": "CubicSymmetry", "p": 0.5}]
    assert build_augmentation(cubic, image_size=(16, 16, 16)) is not None
    with pytest.raises(ConfigError, match=r"CubicSymmetry\) swaps axes .* \[16, 16, 8\]"):
        build_augmentation(cubic, image_size=(16, 16, 8))
    planar = [{"name": "RandomRotate90", "p": 0.5}]
    assert build_augmentation(planar, image_size=(8, 16, 16)) is not None  # each (y, z) plane
    with pytest.raises(ConfigError, match="equal y and z"):
        build_augmentation(planar, image_size=(16, 16, 8))


def test_mirror3d_flips_patch_and_mask_along_each_axis_on_its_own():
    rng = np.random.default_rng(0)
    volume = rng.normal(size=(6, 5, 4, 1)).astype(np.float32)
    mask = (rng.random((6, 5, 4)) > 0.5).astype(np.uint8)
    pipeline = build_augmentation(
        [{"name": "Mirror3D", "axes": [0, 1, 2], "axis_p": 0.5}], image_size=(6, 5, 4)
    )
    seen = set()
    for seed in range(40):
        pipeline.set_random_seed(seed)
        out = pipeline(volume=volume, mask3d=mask)
        flipped = next(
            axes
            for axes in ((), (0,), (1,), (2,), (0, 1), (0, 2), (1, 2), (0, 1, 2))
            if np.array_equal(out["volume"], np.flip(volume, axes) if axes else volume)
        )
        np.testing.assert_array_equal(out["mask3d"], np.flip(mask, flipped) if flipped else mask)
        seen.add(flipped)
    assert len(seen) == 8  # every combination of axes, each drawn on its own
    with pytest.raises(ConfigError, match=r"Mirror3D\) acts on 3D patches only"):
        build_augmentation([{"name": "Mirror3D"}], image_size=(64, 64))
