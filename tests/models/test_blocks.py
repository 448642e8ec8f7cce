"""The block forms compute exactly what Keras' own layers do, values and gradients."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from flexseg import backend
from flexseg.models import blocks
from tests.helpers import gradient


def _value_and_input_gradient(layer, x):
    """Output, and the gradient of a fixed weighted sum of it with respect to `x`."""
    weights = np.random.default_rng(1).standard_normal(layer.compute_output_shape(x.shape))
    weights = weights.astype("float32")
    value = keras.ops.convert_to_numpy(layer(x))
    return value, gradient(lambda v: keras.ops.multiply(layer(v), weights), x)


@pytest.mark.parametrize(
    "make",
    [
        lambda cls: cls(5, 2, strides=2, padding="same"),
        lambda cls: cls(3, (3, 2), strides=(3, 2), padding="valid", activation="relu"),
        lambda cls: cls(4, 2, strides=2, use_bias=False),
    ],
    ids=["2x2", "3x2-relu", "no-bias"],
)
@pytest.mark.parametrize("pays", [True, False], ids=["block", "native"])
def test_transposed_convolution_matches_keras(make, pays, monkeypatch):
    x = np.random.default_rng(0).standard_normal((2, 6, 4, 3)).astype("float32")
    ours, theirs = make(blocks.BlockConv2DTranspose), make(keras.layers.Conv2DTranspose)
    ours.build(x.shape)
    theirs.build(x.shape)
    for w in ours.weights:
        w.assign(np.random.default_rng(2).standard_normal(w.shape))
    theirs.set_weights(ours.get_weights())
    monkeypatch.setattr(blocks, "block_form_pays", lambda: pays)
    got, expected = _value_and_input_gradient(ours, x), _value_and_input_gradient(theirs, x)
    assert got[0].shape == expected[0].shape
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("pool", [2, (2, 3)])
@pytest.mark.parametrize("pays", [True, False], ids=["block", "native"])
def test_max_pooling_matches_keras(pool, pays, monkeypatch):
    # Distinct values: where several inputs share a window's maximum, Keras' pooling and a
    # reduce-max may route the gradient to different ones.
    x = np.random.default_rng(0).permutation(2 * 8 * 6 * 3).reshape(2, 8, 6, 3).astype("float32")
    monkeypatch.setattr(blocks, "block_form_pays", lambda: pays)
    got = _value_and_input_gradient(blocks.BlockMaxPooling2D(pool), x)
    expected = _value_and_input_gradient(keras.layers.MaxPooling2D(pool), x)
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kernel", [2, (1, 2, 2), (2, 3, 1)])
@pytest.mark.parametrize("pays", [True, False], ids=["block", "native"])
def test_3d_transposed_convolution_matches_keras(kernel, pays, monkeypatch):
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 2, 3)).astype("float32")
    ours = blocks.BlockConv3DTranspose(4, kernel, strides=kernel, padding="same")
    theirs = keras.layers.Conv3DTranspose(4, kernel, strides=kernel, padding="same")
    ours.build(x.shape)
    theirs.build(x.shape)
    for w in ours.weights:
        w.assign(np.random.default_rng(2).standard_normal(w.shape))
    theirs.set_weights(ours.get_weights())
    monkeypatch.setattr(blocks, "block_form_pays", lambda: pays)
    got, expected = _value_and_input_gradient(ours, x), _value_and_input_gradient(theirs, x)
    assert got[0].shape == expected[0].shape
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("pool", [2, (1, 2, 2), (2, 3, 1)])
@pytest.mark.parametrize("pays", [True, False], ids=["block", "native"])
def test_3d_max_pooling_matches_keras(pool, pays, monkeypatch):
    x = np.random.default_rng(0).permutation(2 * 4 * 6 * 4 * 2).reshape(2, 4, 6, 4, 2)
    x = x.astype("float32")
    monkeypatch.setattr(blocks, "block_form_pays", lambda: pays)
    got = _value_and_input_gradient(blocks.BlockMaxPooling3D(pool), x)
    expected = _value_and_input_gradient(keras.layers.MaxPooling3D(pool), x)
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_array_equal(a, b)


def test_block_form_is_used_only_by_jax_on_the_cpu():
    assert blocks.block_form_pays() == (backend.name() == "jax" and not backend.has_gpu())


def test_mixed_precision_computes_in_bfloat16(monkeypatch):
    monkeypatch.setattr(blocks, "block_form_pays", lambda: True)
    layer = blocks.BlockConv2DTranspose(2, 2, strides=2, dtype="mixed_bfloat16")
    y = layer(np.ones((1, 2, 2, 3), "float32"))
    assert keras.backend.standardize_dtype(y.dtype) == "bfloat16"
    assert layer.kernel.dtype == "float32"
