"""Sliding-window prediction: coverage, weights, stitching, and a FlexUNet over a volume."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from flexseg.models import FlexUNet
from flexseg.models.windows import (
    gaussian_weights,
    sliding_window,
    tile_starts,
    window_corners,
)


@pytest.mark.parametrize(("size", "tile", "overlap"), [(10, 4, 0.5), (9, 4, 0.25), (4, 4, 0.5)])
def test_tiles_cover_the_image(size, tile, overlap):
    starts = tile_starts(size, tile, overlap)
    covered = np.zeros(size, bool)
    for s in starts:
        covered[s : s + tile] = True
    assert covered.all() and starts[-1] + tile == size


def test_gaussian_weights_peak_in_the_centre():
    w = gaussian_weights(8, 8)
    assert w[3:5, 3:5].min() == w.max() and w.min() > 0
    w3 = gaussian_weights(4, 8, 6)
    assert w3.shape == (4, 8, 6) and w3.dtype == np.float32
    assert w3[1:3, 3:5, 2:4].min() == w3.max() == 1 and w3.min() > 0
    np.testing.assert_allclose(w3[1, 3], gaussian_weights(8, 6)[3] * w3[1, 3, 2], rtol=1e-6)


def test_windows_cover_a_volume_with_the_overlap_asked():
    corners = window_corners((20, 16, 7), (8, 8, 8), 0.5)
    assert sorted({c[0] for c in corners}) == [0, 4, 8, 12]
    assert sorted({c[1] for c in corners}) == [0, 4, 8]
    assert {c[2] for c in corners} == {0}  # an axis shorter than the window: one window
    assert len(corners) == 12


def _model_of(fn):
    """A forward function that records the batch sizes it was given."""
    calls = []

    def forward(batch):
        calls.append(len(batch))
        return fn(batch)

    return forward, calls


@pytest.mark.parametrize("weighting", ["gaussian", "constant"])
def test_windows_of_a_constant_model_stitch_to_a_constant_volume(weighting):
    volume = np.random.default_rng(0).normal(size=(21, 18, 11, 2)).astype(np.float32)
    constant = np.array([0.2, 0.3, 0.5], np.float32)
    forward, calls = _model_of(lambda b: np.broadcast_to(constant, (*b.shape[:-1], 3)))
    probs = sliding_window(volume, forward, (8, 8, 8), 0.5, batch_size=3, weighting=weighting)
    assert probs.shape == (21, 18, 11, 3) and probs.dtype == np.float32
    np.testing.assert_allclose(probs, np.broadcast_to(constant, probs.shape), atol=1e-6)
    windows = len(window_corners((21, 18, 11), (8, 8, 8), 0.5))
    assert sum(calls) == windows and max(calls) == 3


def test_a_position_wise_model_gives_its_own_values_back_through_the_windows():
    # a model whose output at a voxel depends on that voxel only: any stitching returns it
    volume = np.random.default_rng(1).uniform(size=(13, 9, 17, 1)).astype(np.float32)
    probs = sliding_window(
        volume, lambda b: np.concatenate([1 - b, b], -1), (4, 8, 8), 0.25, batch_size=5
    )
    np.testing.assert_allclose(probs[..., 1], volume[..., 0], atol=1e-6)


def test_a_volume_smaller_than_the_window_is_padded_and_cut_back():
    volume = np.ones((3, 5, 6, 1), np.float32)
    seen = []

    def forward(batch):
        seen.append(batch.shape)
        return np.concatenate([1 - batch, batch], -1)

    probs = sliding_window(volume, forward, (4, 8, 8))
    assert seen == [(1, 4, 8, 8, 1)] and probs.shape == (3, 5, 6, 2)
    np.testing.assert_allclose(probs[..., 1], 1)  # the padding (zeros) was cut off


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(window=(8, 8)), "has 2 axes; the image has 3"),
        (dict(overlap=1.0), "overlap=1.0"),
        (dict(weighting="hann"), "weighting='hann'"),
        (dict(batch_size=0), "batch_size=0"),
    ],
)
def test_bad_settings_are_named(kwargs, message):
    settings = {"window": (8, 8, 8), **kwargs}
    with pytest.raises(ValueError, match=message):
        sliding_window(np.zeros((8, 8, 8, 1), np.float32), lambda b: b, **settings)


def test_one_window_over_the_volume_is_the_model_on_the_whole_volume():
    model = FlexUNet(
        input_shape=(None, None, None, 2), spatial_dims=3, num_classes=3, base_filters=4,
        num_layers=3, normalization="instance", pool_sizes=[(1, 2, 2), 2],
    )  # fmt: skip
    volume = np.random.default_rng(2).normal(size=(8, 16, 12, 2)).astype(np.float32)
    whole = keras.ops.convert_to_numpy(model(volume[None], training=False))[0]

    def forward(batch):
        return keras.ops.convert_to_numpy(model.predict_on_batch(batch))

    stitched = sliding_window(volume, forward, (8, 16, 12), 0.5)
    np.testing.assert_allclose(stitched, whole, atol=1e-5)
    # smaller windows over the same volume still give class probabilities everywhere
    tiled = sliding_window(volume, forward, (4, 8, 8), 0.5, batch_size=4)
    assert tiled.shape == whole.shape
    np.testing.assert_allclose(tiled.sum(-1), 1, atol=1e-5)
