from __future__ import annotations

import math

import keras
import numpy as np
import pytest

from flexseg.models import FlexUNet
from flexseg.models.initializers import HostGlorotUniform


@pytest.mark.parametrize("shape", [(3, 3, 16, 32), (2, 2, 8, 4), (1, 1, 16, 2), (64, 10)])
def test_glorot_uniform_bounds_and_spread(shape):
    receptive = math.prod(shape[:-2])
    limit = math.sqrt(6 / (receptive * (shape[-2] + shape[-1])))
    values = keras.ops.convert_to_numpy(HostGlorotUniform(seed=1)(shape, dtype="float32"))
    assert values.shape == shape and values.dtype == np.float32
    assert np.abs(values).max() <= limit
    assert np.abs(values).max() > 0.9 * limit
    np.testing.assert_allclose(values.std(), limit / math.sqrt(3), rtol=0.15)


def test_same_seed_same_values_and_config_round_trip():
    initializer = HostGlorotUniform(seed=5)
    first = keras.ops.convert_to_numpy(initializer((4, 6)))
    np.testing.assert_array_equal(first, keras.ops.convert_to_numpy(initializer((4, 6))))
    other = keras.ops.convert_to_numpy(HostGlorotUniform(seed=6)((4, 6)))
    assert not np.array_equal(first, other)
    restored = keras.initializers.deserialize(keras.initializers.serialize(initializer))
    assert isinstance(restored, HostGlorotUniform)
    np.testing.assert_array_equal(first, keras.ops.convert_to_numpy(restored((4, 6))))


def test_seed_generator_falls_back_to_keras():
    initializer = HostGlorotUniform(seed=keras.random.SeedGenerator(3))
    a = keras.ops.convert_to_numpy(initializer((4, 6)))
    b = keras.ops.convert_to_numpy(initializer((4, 6)))
    assert a.shape == (4, 6) and not np.array_equal(a, b)  # the generator moves on


def test_global_seed_fixes_flex_unet_weights():
    def weights():
        keras.utils.set_random_seed(11)
        model = FlexUNet(input_shape=(16, 16, 1), base_filters=2, num_layers=2)
        return [keras.ops.convert_to_numpy(w) for w in model.weights]

    first, second = weights(), weights()
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)
    assert any(np.abs(w).sum() > 0 for w in first)
