"""A trained FlexUNet rebuilt for prediction only: batch normalisation folded into the
convolutions, and the whole network in 16-bit floats where the device computes them fast.

In inference a batch normalisation is a fixed affine map per channel, ``y = s * x + t`` with
``s = gamma / sqrt(var + eps)`` and ``t = beta - mean * s``; after a convolution without bias
it is the same convolution with its kernel scaled by ``s`` and bias ``t``. The copy is a
FlexUNet with ``normalization="none"`` (convolutions with bias) holding those weights: one
operator fewer per convolution, and nothing left that needs float32 statistics. Built under
a ``bfloat16`` or ``float16`` dtype policy, its weights and arithmetic are 16-bit (no cast of
every kernel on every call, as mixed precision does); its output layer stays float32.

With two classes and a softmax output, the copy's head computes one logit difference: a
softmax over two classes is the sigmoid of that difference, ``p1 = 1 / (1 + exp(l0 - l1))``,
and one output channel with a sigmoid costs less than two with a softmax (oneDNN's softmax
over a last axis of 2 took a tenth of TensorFlow's inference step; docs/performance.md).
"""

from __future__ import annotations

import keras
import numpy as np

from flexseg import backend
from flexseg.models import INFERENCE_DTYPES
from flexseg.models.flex_unet import FlexUNet, conv_layer


def inference_dtype(setting: str) -> str:
    """The dtype `precision` (`auto` or one of `INFERENCE_DTYPES`) means on this machine:
    for `auto`, the 16-bit type `trainer.precision=auto` trains in here, else float32."""
    if setting != "auto":
        return setting
    return backend.auto_precision().removeprefix("mixed_")


def inference_model(model: keras.Model, dtype: str = "float32") -> keras.Model:
    """`model` rebuilt for prediction: batch normalisation folded, weights and arithmetic
    in `dtype` (one of `INFERENCE_DTYPES`), output float32, a two-class softmax computed
    from one logit difference.

    A model that is not a FlexUNet is returned as it is. The copy predicts what `model`
    predicts in inference mode: equal within float32 rounding in float32 (1e-5 on the
    class probabilities), within 16-bit rounding otherwise (docs/performance.md).
    """
    if dtype not in INFERENCE_DTYPES:
        raise ValueError(f"`dtype` must be one of {INFERENCE_DTYPES}. Received: dtype={dtype!r}")
    if not isinstance(model, FlexUNet):
        return model
    folds = model.normalization == "batch"
    if not folds and dtype == "float32":
        return model
    config = model.get_config()
    config.update(foreground_prior=None, name=f"{model.name}_inference")
    if folds:
        config["normalization"] = "none"
    policy = keras.mixed_precision
    with backend.swapped(policy.global_policy, policy.set_global_policy, dtype):
        copy = FlexUNet.from_config(config)
        for layer in copy.layers:
            if not layer.weights:
                continue
            weights = model.get_layer(layer.name).get_weights()
            if folds and isinstance(layer, conv_layer(copy.spatial_dims)) and layer.name != "head":
                weights = _folded(weights[0], model.get_layer(_norm_of(layer.name)))
            layer.set_weights(weights)
        if copy.output_kind == "softmax" and copy.num_classes == 2:
            return _one_difference(copy, model.get_layer("head").get_weights())
    return copy


def _one_difference(model: FlexUNet, head: list[np.ndarray]) -> keras.Model:
    """`model` (two classes, softmax) with a head of one channel, the logit difference of
    the `head` weights [kernel, bias] (taken in float32), in the global policy's dtype, and a
    float32 sigmoid after it."""
    old_head = model.get_layer("head")
    layout = old_head.data_format
    dims = model.spatial_dims
    difference = conv_layer(dims)(1, 1, data_format=layout, name="head_difference")
    x = difference(old_head.input)
    if layout == "channels_first":
        order = (*range(2, dims + 2), 1)
        x = keras.layers.Permute(order, name="difference_to_channels_last")(x)
    foreground = keras.layers.Activation("sigmoid", dtype="float32", name="foreground")(x)
    outputs = keras.layers.Concatenate(dtype="float32", name="output")(
        [keras.ops.subtract(1.0, foreground), foreground]
    )
    kernel, bias = head
    difference.set_weights([kernel[..., 1:] - kernel[..., :1], bias[1:] - bias[:1]])
    return keras.Model(model.input, outputs, name=model.name)


def _norm_of(conv_name: str) -> str:
    """`enc1_conv2` -> `enc1_norm2`: the batch normalisation after a block's convolution."""
    prefix, _, index = conv_name.rpartition("_conv")
    return f"{prefix}_norm{index}"


def _folded(kernel: np.ndarray, norm: keras.layers.BatchNormalization) -> list[np.ndarray]:
    """[kernel, bias] of a bias-free convolution followed by `norm` in inference mode."""
    gamma, beta, mean, var = (
        np.asarray(w.numpy(), np.float64)
        for w in (norm.gamma, norm.beta, norm.moving_mean, norm.moving_variance)
    )
    scale = gamma / np.sqrt(var + norm.epsilon)
    return [
        (np.asarray(kernel, np.float64) * scale).astype(np.float32),
        (beta - mean * scale).astype(np.float32),
    ]
