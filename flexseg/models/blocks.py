"""Block-wise resampling layers: Keras' layers, computed another way where that is faster.

A transposed convolution and a max-pooling whose stride equals their window touch each pixel
in exactly one window, so they need no windowed kernel: the first is one matrix product
rearranged into blocks, the second a reshape and a max. XLA's CPU backend runs the windowed
versions (a base-dilated convolution; reduce-window and select-and-scatter) several times
slower, and in a FlexUNet they took half of each JAX training step (docs/performance.md).
TensorFlow's and torch's native kernels are as fast or faster, so the block form is used only
where it was measured to pay, JAX on the CPU. Weights, configs and results are Keras'.
"""

from __future__ import annotations

import keras
from keras import ops

from flexseg import backend


def block_form_pays() -> bool:
    """Whether the block form is the faster one on the active backend and device."""
    return backend.is_jax_on_cpu()


def _pooled_by_blocks(layer) -> bool:
    """Whether a max-pooling layer computes in the block form: where it pays, channels
    last, its windows side by side."""
    return (
        block_form_pays()
        and layer.data_format == "channels_last"
        and tuple(layer.strides) == tuple(layer.pool_size)
    )


def _transposed_by_blocks(layer) -> bool:
    """Whether a transposed convolution computes in the block form: where it pays, channels
    last, each input pixel writing its own block."""
    return (
        block_form_pays()
        and layer.data_format == "channels_last"
        and tuple(layer.strides) == tuple(layer.kernel_size)
        and set(layer.dilation_rate) == {1}
    )


@keras.saving.register_keras_serializable(package="flexseg")
class BlockConv2DTranspose(keras.layers.Conv2DTranspose):
    """`keras.layers.Conv2DTranspose`, as a matrix product when ``strides == kernel_size``.

    Each input pixel then writes its own ``kernel_size`` block of the output: a product of
    its channels with the kernel, ``(C) -> (kh * kw * filters)``, moved into place.
    """

    def call(self, inputs):
        if not _transposed_by_blocks(self):
            return super().call(inputs)
        kh, kw = self.kernel_size
        _, height, width, _ = ops.shape(inputs)
        # kernel: (kh, kw, filters, C); output pixel (h * kh + i, w * kw + j) <- input (h, w)
        x = ops.einsum("bhwc,ijfc->bhiwjf", inputs, self.kernel)
        x = ops.reshape(x, (-1, height * kh, width * kw, self.filters))
        if self.use_bias:
            x = x + self.bias
        return self.activation(x)  # Keras' `activation=None` is the linear function


@keras.saving.register_keras_serializable(package="flexseg")
class BlockMaxPooling2D(keras.layers.MaxPooling2D):
    """`keras.layers.MaxPooling2D`, as a reshape and a max when ``strides == pool_size``.

    Height and width must then be multiples of the pool size (FlexUNet's always are).
    """

    def call(self, inputs):
        if not _pooled_by_blocks(self):
            return super().call(inputs)
        ph, pw = self.pool_size
        _, height, width, channels = ops.shape(inputs)
        x = ops.reshape(inputs, (-1, height // ph, ph, width // pw, pw, channels))
        return ops.max(x, axis=(2, 4))  # (B, H / ph, W / pw, C)


@keras.saving.register_keras_serializable(package="flexseg")
class BlockConv3DTranspose(keras.layers.Conv3DTranspose):
    """`keras.layers.Conv3DTranspose`, as a matrix product when ``strides == kernel_size``:
    each input voxel writes its own ``kernel_size`` block, ``(C) -> (kd * kh * kw * filters)``.
    """

    def call(self, inputs):
        if not _transposed_by_blocks(self):
            return super().call(inputs)
        kd, kh, kw = self.kernel_size
        _, depth, height, width, _ = ops.shape(inputs)
        # kernel: (kd, kh, kw, filters, C); output (d * kd + i, h * kh + j, w * kw + k)
        x = ops.einsum("bdhwc,ijkfc->bdihjwkf", inputs, self.kernel)
        x = ops.reshape(x, (-1, depth * kd, height * kh, width * kw, self.filters))
        if self.use_bias:
            x = x + self.bias
        return self.activation(x)


@keras.saving.register_keras_serializable(package="flexseg")
class BlockMaxPooling3D(keras.layers.MaxPooling3D):
    """`keras.layers.MaxPooling3D`, as a reshape and a max when ``strides == pool_size``."""

    def call(self, inputs):
        if not _pooled_by_blocks(self):
            return super().call(inputs)
        pd, ph, pw = self.pool_size
        _, depth, height, width, channels = ops.shape(inputs)
        d, h, w = depth // pd, height // ph, width // pw
        # one axis at a time, in tensors of at most 4 axes (TensorFlow's gradient of a max
        # broadcasts at most 5)
        x = ops.max(ops.reshape(inputs, (-1, w, pw, channels)), axis=2)
        x = ops.max(ops.reshape(x, (-1, h, ph, w * channels)), axis=2)
        x = ops.max(ops.reshape(x, (-1, d, pd, h * w * channels)), axis=2)
        return ops.reshape(x, (-1, d, h, w, channels))  # (B, D / pd, H / ph, W / pw, C)
