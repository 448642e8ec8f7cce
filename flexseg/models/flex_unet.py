"""FlexUNet: a UNet whose depth, filters, kernels, dilation and dropout are configurable."""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Real

import keras

from flexseg import backend
from flexseg.models.blocks import (
    BlockConv2DTranspose,
    BlockConv3DTranspose,
    BlockMaxPooling2D,
    BlockMaxPooling3D,
)

SPATIAL_DIMS = (2, 3)
# instance: each channel of each image normalised over its own pixels or voxels (nnU-Net's
# choice for 3D, where batches hold two patches)
NORMALIZATIONS = ("none", "batch", "group", "instance")
OUTPUTS = ("softmax", "logits")
DATA_FORMATS = ("auto", "channels_last", "channels_first")

# Keras' default momentum (0.99) leaves the moving statistics far from the data after short
# runs, and a model that trained well predicts garbage in inference mode; 0.9 tracks them.
BATCH_NORM_MOMENTUM = 0.9
MAX_GROUPS = 8


def _check_int(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}. Received: {name}={value!r}")


def _axes(name: str, value, spatial_dims: int) -> tuple[int, ...]:
    """`value` (a positive int, or one per spatial axis) as one positive int per axis."""
    if isinstance(value, int) and not isinstance(value, bool):
        sizes = (value,) * spatial_dims
    elif isinstance(value, Sequence) and not isinstance(value, str):
        sizes = tuple(value)
    else:
        sizes = ()
    if len(sizes) != spatial_dims or not all(
        isinstance(k, int) and not isinstance(k, bool) and k >= 1 for k in sizes
    ):
        axes = "(height, width)" if spatial_dims == 2 else "(depth, height, width)"
        raise ValueError(
            f"`{name}` must be a positive integer or {spatial_dims} positive integers "
            f"{axes}. Received: {name}={value!r}"
        )
    return sizes


def _per_level(name: str, value, count: int, spatial_dims: int) -> list[tuple[int, ...]]:
    """A list of `count` entries, each a positive int or one per spatial axis."""
    if isinstance(value, str) or not isinstance(value, Sequence) or len(value) != count:
        raise ValueError(
            f"`{name}` must be a list of {count} entries (one per level), each a positive "
            f"integer or {spatial_dims} of them. Received: {name}={value!r}"
        )
    return [_axes(f"{name}[{i}]", entry, spatial_dims) for i, entry in enumerate(value)]


def level_kernel(base_kernels, level: int, spatial_dims: int = 2) -> tuple[int, ...]:
    """Kernel size of the convolutions at a UNet level: each axis shrinks by 2 a level, never
    below 3 (an axis of kernel 1 or 2 keeps it: `[1, 3, 3]` stays in-plane on every level)."""
    return tuple(
        min(k, max(3, k - 2 * level)) for k in _axes("base_kernels", base_kernels, spatial_dims)
    )


def level_kernels(
    base_kernels, kernel_sizes, num_layers: int, spatial_dims: int = 2
) -> list[tuple[int, ...]]:
    """The kernel of every level: `kernel_sizes` where given, else `level_kernel`'s rule."""
    if kernel_sizes is not None:
        return _per_level("kernel_sizes", kernel_sizes, num_layers, spatial_dims)
    return [level_kernel(base_kernels, level, spatial_dims) for level in range(num_layers)]


def level_pools(pool_sizes, num_layers: int, spatial_dims: int = 2) -> list[tuple[int, ...]]:
    """The pooling (and up-sampling) factor per axis between each level and the next."""
    if pool_sizes is None:
        return [(2,) * spatial_dims] * (num_layers - 1)
    return _per_level("pool_sizes", pool_sizes, num_layers - 1, spatial_dims)


def level_dilation(dilation: int, level: int) -> int:
    """Dilation rate at a UNet level: drops by 1 a level, never below 1."""
    return max(1, dilation - level)


def resolve_data_format(data_format: str) -> str:
    """The layout FlexUNet computes in: `auto` is channels-first on torch, whose convolutions
    take that layout (Keras copies every channels-last input to it and back, 19% of a CPU
    training step, docs/performance.md), and channels-last elsewhere (TensorFlow's CPU
    convolutions take only that)."""
    if data_format != "auto":
        return data_format
    return "channels_first" if backend.name() == "torch" else "channels_last"


@keras.saving.register_keras_serializable(package="flexseg")
class FlexUNet(keras.Model):
    """A UNet with configurable depth, filters, kernel sizes, dilation and dropout, in 2D or
    3D.

    Encoder level ``i`` (0 .. ``num_layers`` - 1) has ``base_filters * 2**i`` filters, kernel
    ``max(3, base_kernels - 2*i)`` per axis (or ``kernel_sizes[i]``), dilation
    ``max(1, dilation - i)`` and two convolutions with ``Dropout(dropout_rate * i)`` between
    them; max-pooling of ``pool_sizes[i - 1]`` (2 on every axis unless given) joins the
    levels and the last level is the bridge. The decoder mirrors it: a transposed
    convolution whose kernel and stride are the pooling's, the skip connection concatenated,
    two convolutions. A 1x1 (1x1x1) convolution gives the class scores.

    Args:
        input_shape: `(height, width, channels)`, or `(depth, height, width, channels)` with
            ``spatial_dims=3``. Each spatial size must be a multiple of the product of the
            pooling factors along its axis (``2**(num_layers - 1)`` by default); any may be
            `None` for a model that takes any such size.
        num_classes: number of output channels, background included (2 for binary masks).
        base_filters: filters of the first level; each level below doubles them.
        base_kernels: kernel size of the first level, an int or one per spatial axis (e.g.
            `[1, 3, 3]`: in-plane kernels on thick slices; an axis of 1 or 2 keeps its size).
        num_layers: number of levels, the bridge included (so ``num_layers - 1`` poolings).
        dropout_rate: dropout step per level; level ``i`` drops ``dropout_rate * i``.
        dilation: dilation rate of the first level; it drops by one each level down to 1.
        normalization: `"batch"` (momentum 0.9), `"group"` (up to 8 groups), or
            `"instance"` (each channel over its own image), applied after each convolution,
            or `"none"` (convolutions with bias and their activation).
        activation: name of a Keras activation used after each convolution.
        input_rescale: a factor the input is multiplied by inside the model (e.g. `1/255`),
            or `None` when the data arrive already normalised.
        output: `"softmax"` for class probabilities or `"logits"` for raw scores.
        foreground_prior: the probability of foreground the untrained model gives every pixel
            (the prior initialisation of Lin et al. 2017): the head's biases start at
            ``log(1 - p)`` for the background and ``log(p / (num_classes - 1))`` for each
            other class (one logit output: ``log(p / (1 - p))``), so training on sparse masks
            starts near the background rate instead of at 1 / num_classes. `None`: zeros.
        data_format: the layout the layers compute in: `"channels_last"`,
            `"channels_first"`, or `"auto"` (channels-first on torch, channels-last on
            TensorFlow and JAX, the faster one of each). Inputs and outputs are channels-last
            and the weights are the same in every layout.
        spatial_dims: 2 for images, 3 for volumes.
        kernel_sizes: `None` (the `base_kernels` rule), or one kernel per level, each an int
            or one per spatial axis: e.g. `[[1, 3, 3], [1, 3, 3], [3, 3, 3], [3, 3, 3]]`.
        pool_sizes: `None` (2 on every axis), or the pooling factor between each level and
            the next (``num_layers - 1`` entries), each an int or one per spatial axis: e.g.
            `[[1, 2, 2], [2, 2, 2], [2, 2, 2]]` on data whose slices are thick.

    Example:
    >>> model = FlexUNet(input_shape=(64, 64, 1), num_classes=2, num_layers=4)
    >>> model(np.zeros((1, 64, 64, 1))).shape
    (1, 64, 64, 2)
    >>> model = FlexUNet(input_shape=(16, 32, 32, 2), spatial_dims=3, num_layers=3)
    >>> model(np.zeros((1, 16, 32, 32, 2))).shape
    (1, 16, 32, 32, 2)
    """

    def __init__(
        self,
        input_shape: Sequence[int | None] = (None, None, 3),
        num_classes: int = 2,
        base_filters: int = 16,
        base_kernels: int | Sequence[int] = 3,
        num_layers: int = 5,
        dropout_rate: float = 0.0,
        dilation: int = 1,
        normalization: str = "batch",
        activation: str = "relu",
        input_rescale: float | None = None,
        output: str = "softmax",
        foreground_prior: float | None = None,
        data_format: str = "auto",
        spatial_dims: int = 2,
        kernel_sizes: Sequence[int | Sequence[int]] | None = None,
        pool_sizes: Sequence[int | Sequence[int]] | None = None,
        **kwargs,
    ):
        kwargs.setdefault("name", "flex_unet")
        kernels, pools = _validate(
            input_shape,
            num_classes,
            base_filters,
            base_kernels,
            num_layers,
            dropout_rate,
            dilation,
            normalization,
            activation,
            input_rescale,
            output,
            foreground_prior,
            data_format,
            spatial_dims,
            kernel_sizes,
            pool_sizes,
        )
        input_shape = tuple(input_shape)
        layout = resolve_data_format(data_format)
        channel_axis = 1 if layout == "channels_first" else -1
        base_kernels = base_kernels if isinstance(base_kernels, int) else list(base_kernels)
        filters = [base_filters * 2**i for i in range(num_layers)]
        conv, pool, up = _LAYERS[spatial_dims]

        normalized = normalization != "none"

        def conv_block(x, level: int, prefix: str):
            for j in (1, 2):
                if j == 2 and dropout_rate * level > 0:
                    x = keras.layers.Dropout(dropout_rate * level, name=f"{prefix}_dropout")(x)
                # Without normalisation the activation is the convolution's own: one layer
                # call fewer (Keras on torch runs every call eagerly, ~0.1 ms each).
                x = conv(
                    filters[level],
                    kernels[level],
                    padding="same",
                    dilation_rate=level_dilation(dilation, level),
                    activation=None if normalized else activation,
                    use_bias=not normalized,
                    data_format=layout,
                    name=f"{prefix}_conv{j}",
                )(x)
                if normalized:
                    x = _normalization(
                        normalization, filters[level], channel_axis, f"{prefix}_norm{j}"
                    )(x)
                    x = keras.layers.Activation(activation, name=f"{prefix}_act{j}")(x)
            return x

        inputs = keras.Input(shape=input_shape, name="image")
        x = inputs
        if input_rescale is not None:
            x = keras.layers.Rescaling(input_rescale, name="rescale")(x)
        spatial = tuple(range(1, spatial_dims + 1))
        if layout == "channels_first":  # (B, C, *spatial)
            x = keras.layers.Permute((spatial_dims + 1, *spatial), name="to_channels_first")(x)

        skips = []
        for level in range(num_layers):
            if level > 0:
                x = pool(pools[level - 1], data_format=layout, name=f"enc{level}_pool")(x)
            x = conv_block(x, level, f"enc{level}")
            skips.append(x)

        for level in range(num_layers - 2, -1, -1):
            x = up(
                filters[level],
                pools[level],
                strides=pools[level],
                padding="same",
                data_format=layout,
                name=f"dec{level}_up",
            )(x)
            x = keras.layers.Concatenate(axis=channel_axis, name=f"dec{level}_concat")(
                [x, skips[level]]
            )
            x = conv_block(x, level, f"dec{level}")

        x = conv(num_classes, 1, data_format=layout, name="head")(x)
        if layout == "channels_first":
            x = keras.layers.Permute((*(a + 1 for a in spatial), 1), name="to_channels_last")(x)
        # x: (B, *spatial, num_classes)
        # The output stays float32 under mixed precision so losses see full precision.
        act = "softmax" if output == "softmax" else "linear"
        outputs = keras.layers.Activation(act, dtype="float32", name="output")(x)
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        if foreground_prior is not None:
            self.get_layer("head").bias.assign(head_bias(foreground_prior, num_classes))

        self.image_shape = input_shape
        self.num_classes = num_classes
        self.base_filters = base_filters
        self.base_kernels = base_kernels
        self.num_layers = num_layers
        self.dropout_rate = dropout_rate
        self.dilation = dilation
        self.normalization = normalization
        self.activation = activation
        self.input_rescale = input_rescale
        self.output_kind = output
        self.foreground_prior = foreground_prior
        self.data_format = data_format
        self.spatial_dims = spatial_dims
        self.kernel_sizes = _listed(kernel_sizes)
        self.pool_sizes = _listed(pool_sizes)

    @property
    def size_multiple(self) -> int:
        """Every spatial size of an input must be a multiple of this number."""
        return self.size_multiple_for(self.get_config())

    @staticmethod
    def size_multiples_for(arguments: dict) -> tuple[int, ...]:
        """What each spatial size of an input to the FlexUNet these constructor arguments
        make must be a multiple of: the product of the pooling factors along its axis."""
        _check_int("num_layers", arguments["num_layers"], 2)
        dims = arguments.get("spatial_dims", 2)
        pools = level_pools(arguments.get("pool_sizes"), arguments["num_layers"], dims)
        return tuple(math.prod(p[axis] for p in pools) for axis in range(dims))

    @staticmethod
    def size_multiple_for(arguments: dict) -> int:
        """One number every spatial size may be a multiple of: the least common multiple
        of `size_multiples_for`, ``2**(num_layers - 1)`` by default."""
        return math.lcm(*FlexUNet.size_multiples_for(arguments))

    def get_config(self) -> dict:
        return {
            "name": self.name,
            "trainable": self.trainable,
            "input_shape": list(self.image_shape),
            "num_classes": self.num_classes,
            "base_filters": self.base_filters,
            "base_kernels": self.base_kernels,
            "num_layers": self.num_layers,
            "dropout_rate": self.dropout_rate,
            "dilation": self.dilation,
            "normalization": self.normalization,
            "activation": self.activation,
            "input_rescale": self.input_rescale,
            "output": self.output_kind,
            "foreground_prior": self.foreground_prior,
            "data_format": self.data_format,
            "spatial_dims": self.spatial_dims,
            "kernel_sizes": self.kernel_sizes,
            "pool_sizes": self.pool_sizes,
        }

    @classmethod
    def from_config(cls, config: dict) -> FlexUNet:
        return cls(**config)


# (convolution, pooling, up-sampling) per number of spatial dimensions
_LAYERS = {
    2: (keras.layers.Conv2D, BlockMaxPooling2D, BlockConv2DTranspose),
    3: (keras.layers.Conv3D, BlockMaxPooling3D, BlockConv3DTranspose),
}


def conv_layer(spatial_dims: int) -> type[keras.layers.Layer]:
    """The convolution FlexUNet uses for inputs of `spatial_dims` spatial axes."""
    return _LAYERS[spatial_dims][0]


def _listed(entries):
    """Per-level settings as JSON-like lists (`get_config` compares equal after a round trip)."""
    if entries is None:
        return None
    return [e if isinstance(e, int) else list(e) for e in entries]


def head_bias(foreground_prior: float, num_classes: int) -> list[float]:
    """The head's biases that make an untrained model predict `foreground_prior` foreground."""
    if num_classes == 1:
        return [math.log(foreground_prior / (1 - foreground_prior))]
    share = math.log(foreground_prior / (num_classes - 1))
    return [math.log(1 - foreground_prior)] + [share] * (num_classes - 1)


def _normalization(kind: str, filters: int, axis: int, name: str) -> keras.layers.Layer:
    if kind == "batch":
        return keras.layers.BatchNormalization(axis=axis, momentum=BATCH_NORM_MOMENTUM, name=name)
    groups = filters if kind == "instance" else math.gcd(MAX_GROUPS, filters)
    return keras.layers.GroupNormalization(groups, axis=axis, name=name)


def _validate(
    input_shape,
    num_classes,
    base_filters,
    base_kernels,
    num_layers,
    dropout_rate,
    dilation,
    normalization,
    activation,
    input_rescale,
    output,
    foreground_prior,
    data_format,
    spatial_dims,
    kernel_sizes,
    pool_sizes,
) -> tuple[list[tuple[int, ...]], list[tuple[int, ...]]]:
    """Checks the arguments; returns the kernel of every level and the pooling factors."""
    if spatial_dims not in SPATIAL_DIMS or isinstance(spatial_dims, bool):
        raise ValueError(
            f"`spatial_dims` must be 2 (images) or 3 (volumes). "
            f"Received: spatial_dims={spatial_dims!r}"
        )
    _check_int("num_classes", num_classes, 2 if output == "softmax" else 1)
    _check_int("base_filters", base_filters, 1)
    _check_int("num_layers", num_layers, 2)
    kernels = level_kernels(base_kernels, kernel_sizes, num_layers, spatial_dims)
    pools = level_pools(pool_sizes, num_layers, spatial_dims)
    _check_int("dilation", dilation, 1)
    if (
        isinstance(dropout_rate, bool)
        or not isinstance(dropout_rate, Real)
        or not 0 <= dropout_rate * (num_layers - 1) < 1
    ):
        raise ValueError(
            "`dropout_rate` must be >= 0 with `dropout_rate * (num_layers - 1)` < 1, the rate "
            f"of the deepest level. Received: dropout_rate={dropout_rate!r}, "
            f"num_layers={num_layers}"
        )
    if normalization not in NORMALIZATIONS:
        raise ValueError(
            f"`normalization` must be one of {NORMALIZATIONS}. "
            f"Received: normalization={normalization!r}"
        )
    try:
        keras.activations.get(activation)
    except (ValueError, TypeError) as error:
        raise ValueError(
            "`activation` must name a Keras activation such as 'relu', 'gelu' or 'silu'. "
            f"Received: activation={activation!r}"
        ) from error
    if input_rescale is not None and (
        isinstance(input_rescale, bool) or not isinstance(input_rescale, Real) or input_rescale == 0
    ):
        raise ValueError(
            "`input_rescale` must be a non-zero number or None. "
            f"Received: input_rescale={input_rescale!r}"
        )
    if output not in OUTPUTS:
        raise ValueError(f"`output` must be one of {OUTPUTS}. Received: output={output!r}")
    if foreground_prior is not None and (
        isinstance(foreground_prior, bool)
        or not isinstance(foreground_prior, Real)
        or not 0 < foreground_prior < 1
    ):
        raise ValueError(
            "`foreground_prior` must be a probability in (0, 1), e.g. 0.01, or None. "
            f"Received: foreground_prior={foreground_prior!r}"
        )
    if data_format not in DATA_FORMATS:
        raise ValueError(
            f"`data_format` must be one of {DATA_FORMATS}. Received: data_format={data_format!r}"
        )
    if data_format == "channels_first" and backend.name() == "tensorflow" and not backend.has_gpu():
        raise ValueError(
            "`data_format='channels_first'` needs a GPU on TensorFlow, whose CPU convolutions "
            "take channels-last tensors only; use 'auto' or 'channels_last' (the weights are "
            "the same). Received: data_format='channels_first'"
        )

    names = ("height", "width") if spatial_dims == 2 else ("depth", "height", "width")
    if (
        isinstance(input_shape, str)
        or not isinstance(input_shape, Sequence)
        or len(input_shape) != spatial_dims + 1
        or not all(
            d is None or (isinstance(d, int) and not isinstance(d, bool) and d >= 1)
            for d in input_shape
        )
        or input_shape[-1] is None
    ):
        raise ValueError(
            f"`input_shape` must be ({', '.join(names)}, channels) of positive integers "
            f"with spatial_dims={spatial_dims}; {' and '.join(names)} may be None. "
            f"Received: input_shape={input_shape!r}"
        )
    multiples = [math.prod(p[axis] for p in pools) for axis in range(spatial_dims)]
    for axis, size, multiple in zip(names, input_shape[:-1], multiples, strict=True):
        if size is not None and size % multiple:
            rule = (
                f"2**(num_layers - 1) with num_layers={num_layers}"
                if pool_sizes is None
                else "the product of its pool_sizes"
            )
            raise ValueError(
                f"`input_shape` {axis} must be a multiple of {multiple} ({rule}); pad or "
                f"resize the inputs, e.g. to {math.ceil(size / multiple) * multiple}. "
                f"Received: input_shape={input_shape!r}"
            )
    return kernels, pools
