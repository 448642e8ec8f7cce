"""Weight initializers drawn by numpy on the host, for JAX.

Keras draws initial weights with the backend's random functions. JAX compiles one XLA
program per weight shape for that, about half a second each on a 2-core CPU: 11 of the 12 s
it took to build a 5-level FlexUNet (docs/performance.md). Drawing the same distribution with
numpy costs milliseconds. TensorFlow and torch draw without compiling, and keep Keras' own
draws (and so the weights, and the trainings, that their seeds gave before).
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

from flexseg import backend


@keras.saving.register_keras_serializable(package="flexseg")
class HostGlorotUniform(keras.initializers.GlorotUniform):
    """`keras.initializers.GlorotUniform`, drawn with numpy.

    Uniform in ``[-limit, limit]``, ``limit = sqrt(6 / (fan_in + fan_out))``. As in Keras,
    an integer seed (or none: one is drawn from Python's `random`, which
    `keras.utils.set_random_seed` seeds) gives the same values at every call; a
    `keras.random.SeedGenerator` seed falls back to Keras' own draw.
    """

    def __call__(self, shape, dtype=None):
        if not isinstance(self.seed, int):
            return super().__call__(shape, dtype=dtype)
        fan_in, fan_out = _fans(shape)
        limit = math.sqrt(6.0 / max(1.0, fan_in + fan_out))
        values = np.random.default_rng(self.seed).uniform(-limit, limit, size=tuple(shape))
        return ops.convert_to_tensor(values, dtype=dtype or keras.config.floatx())


def kernel_initializer() -> keras.initializers.Initializer:
    """Glorot-uniform for a convolution kernel: drawn with numpy on JAX, by Keras elsewhere."""
    if backend.name() == "jax":
        return HostGlorotUniform()
    return keras.initializers.GlorotUniform()


def _fans(shape) -> tuple[float, float]:
    """Keras' fans: the last two axes are (inputs, outputs), the others a receptive field."""
    if len(shape) == 0:
        return 1.0, 1.0
    if len(shape) == 1:
        return float(shape[0]), float(shape[0])
    receptive_field = math.prod(shape[:-2])
    return float(shape[-2] * receptive_field), float(shape[-1] * receptive_field)
