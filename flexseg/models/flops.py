"""Forward FLOPs of a model's convolutions, the figure benchmarks report."""

from __future__ import annotations

import math

import keras

_CONVOLUTIONS = (keras.layers.Conv2D, keras.layers.Conv3D)
_TRANSPOSED = (keras.layers.Conv2DTranspose, keras.layers.Conv3DTranspose)


def forward_flops(model: keras.Model) -> int:
    """Forward FLOPs per image (or volume): twice the multiply-adds of every convolution.

    Biases, activations, normalisation and pooling are left out: they are a rounding error
    beside the convolutions of a UNet. The model must have fixed input sizes.

    Args:
        model: a built functional model such as `FlexUNet`.

    Returns:
        FLOPs for one image, an int.
    """
    total = 0
    for layer in model.layers:
        if not isinstance(layer, _CONVOLUTIONS + _TRANSPOSED):
            continue
        in_shape, out_shape = layer.input.shape, layer.output.shape
        if None in (*in_shape[1:], *out_shape[1:]):
            raise ValueError(
                f"`forward_flops` needs a fixed input size; layer {layer.name!r} has input "
                f"shape {in_shape}. Build the model with a concrete `input_shape`."
            )
        first = layer.data_format == "channels_first"
        channel, space = (1, slice(2, None)) if first else (-1, slice(1, -1))
        in_channels = in_shape[channel] // getattr(layer, "groups", 1)
        macs_per_position = math.prod(layer.kernel_size) * in_channels * layer.filters
        # A convolution computes once per output pixel; a transposed one once per input pixel.
        transposed = isinstance(layer, _TRANSPOSED)
        positions = math.prod(in_shape[space] if transposed else out_shape[space])
        total += 2 * positions * macs_per_position
    return total
