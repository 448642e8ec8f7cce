from __future__ import annotations

import keras
import numpy as np
import pytest

from flexseg import backend
from flexseg.models import FlexUNet, forward_flops
from flexseg.models.flex_unet import (
    level_dilation,
    level_kernel,
    level_kernels,
    resolve_data_format,
)
from tests.helpers import run_model_contract, shapes_only

TINY = dict(input_shape=(32, 32, 3), num_classes=2, base_filters=4, num_layers=3)
TINY_3D = dict(input_shape=(8, 16, 16, 2), num_classes=3, base_filters=4, num_layers=3,
               spatial_dims=3)  # fmt: skip


@pytest.mark.parametrize(
    "options",
    [
        dict(normalization="none"),
        dict(dropout_rate=0.1, activation="gelu"),  # batch normalization: the default
        dict(normalization="group", base_kernels=(5, 3), dilation=2, input_rescale=1 / 255),
        dict(output="logits", num_classes=3, foreground_prior=0.05),
    ],
    ids=["plain", "batch", "group", "logits"],
)
def test_model_contract(options, tmp_path):
    kwargs = {**TINY, **options}
    x = np.random.default_rng(0).uniform(0, 1, (2, 32, 32, 3)).astype("float32")
    run_model_contract(
        FlexUNet,
        kwargs,
        x,
        (2, 32, 32, kwargs["num_classes"]),
        tmp_path,
        from_logits=kwargs.get("output") == "logits",
    )


def test_softmax_output_sums_to_one():
    model = FlexUNet(**TINY)
    probs = keras.ops.convert_to_numpy(model(np.ones((1, 32, 32, 3), "float32")))
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)


@pytest.mark.parametrize(("output", "num_classes"), [("softmax", 2), ("softmax", 3), ("logits", 1)])
def test_untrained_model_predicts_the_foreground_prior(output, num_classes):
    x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype("float32")

    def median_foreground(**prior) -> float:
        model = FlexUNet(**{**TINY, "output": output, "num_classes": num_classes}, **prior)
        scores = keras.ops.convert_to_numpy(model(x))
        if output == "logits":  # one logit: the foreground's log-odds
            return float(np.median(1 / (1 + np.exp(-scores[..., 0]))))
        return float(np.median(scores[..., 1:].sum(-1)))

    assert abs(median_foreground(foreground_prior=0.01) - 0.01) < 0.005
    assert median_foreground() > 0.3  # zero biases: 1 - 1 / num_classes, or 0.5 for one logit


def test_convolutions_without_normalization_apply_the_activation_themselves():
    model = FlexUNet(**TINY, normalization="none", activation="gelu")
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert len(convs) == 2 * (2 * TINY["num_layers"] - 1) + 1  # the head too
    assert all(conv.activation is keras.activations.gelu for conv in convs[:-1])
    assert convs[-1].name == "head" and convs[-1].activation is keras.activations.linear
    names = [layer.name for layer in model.layers]
    assert not [name for name in names if "_act" in name or "_norm" in name]
    with_norm = FlexUNet(**TINY, normalization="group", activation="gelu")
    assert with_norm.get_layer("enc0_conv1").activation is keras.activations.linear
    assert with_norm.get_layer("enc0_act1").activation is keras.activations.gelu


def test_any_size_multiple_when_height_and_width_are_open():
    model = FlexUNet(**{**TINY, "input_shape": (None, None, 1)})
    out = model.predict(np.zeros((1, 16, 40, 1), "float32"), verbose=0)
    assert out.shape == (1, 16, 40, 2)


def test_reference_parameter_count():
    model = shapes_only(  # 125M weights left undrawn
        FlexUNet,
        input_shape=(512, 512, 3),
        num_classes=2,
        base_filters=16,
        base_kernels=9,
        num_layers=8,
        dropout_rate=0.04,
        normalization="none",
    )
    assert model.count_params() == 124_996_866


def test_topology_follows_the_level_rules():
    model = shapes_only(
        FlexUNet,
        input_shape=(64, 64, 1),
        base_filters=8,
        base_kernels=9,
        num_layers=4,
        dilation=3,
        dropout_rate=0.1,
    )
    expected = {0: (8, (9, 9), 3), 1: (16, (7, 7), 2), 2: (32, (5, 5), 1), 3: (64, (3, 3), 1)}
    for level, (filters, kernel, dilation) in expected.items():
        for prefix in ("enc", "dec") if level < 3 else ("enc",):
            conv = model.get_layer(f"{prefix}{level}_conv1")
            assert conv.filters == filters
            assert tuple(conv.kernel_size) == kernel
            assert tuple(conv.dilation_rate) == (dilation, dilation)
            if level:
                assert model.get_layer(f"{prefix}{level}_dropout").rate == pytest.approx(
                    0.1 * level
                )
    assert level_kernel((9, 4), 1) == (7, 3)
    assert level_dilation(1, 5) == 1
    up = model.get_layer("dec2_up")
    assert up.filters == 32 and tuple(up.kernel_size) == (2, 2) and tuple(up.strides) == (2, 2)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (dict(num_classes=1), "num_classes=1"),
        (dict(num_classes=2.5), "num_classes=2.5"),
        (dict(base_filters=0), "base_filters=0"),
        (dict(base_kernels=0), "base_kernels=0"),
        (dict(base_kernels=(3, 3, 3)), "base_kernels=(3, 3, 3)"),
        (dict(base_kernels="3"), "base_kernels='3'"),
        (dict(num_layers=1), "num_layers=1"),
        (dict(dilation=0), "dilation=0"),
        (dict(dropout_rate=-0.1), "dropout_rate=-0.1"),
        (dict(dropout_rate=0.5), "dropout_rate=0.5"),
        (dict(normalization="layer"), "normalization='layer'"),
        (dict(activation="nope"), "activation='nope'"),
        (dict(input_rescale=0), "input_rescale=0"),
        (dict(output="sigmoid"), "output='sigmoid'"),
        (dict(foreground_prior=0), "foreground_prior=0"),
        (dict(foreground_prior=1.0), "foreground_prior=1.0"),
        (dict(data_format="nchw"), "data_format='nchw'"),
        (dict(input_shape=(32, 32)), "input_shape=(32, 32)"),
        (dict(input_shape=(32, 32, None)), "input_shape=(32, 32, None)"),
        (dict(input_shape=(30, 32, 3)), "height must be a multiple of 4"),
        (dict(input_shape=(32, 18, 3)), "width must be a multiple of 4"),
    ],
)
def test_bad_arguments_name_argument_and_value(override, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        FlexUNet(**{**TINY, **override})


def test_size_error_suggests_a_padded_size():
    with pytest.raises(ValueError, match="e.g. to 504"):
        FlexUNet(input_shape=(500, 512, 1), num_layers=4)


@pytest.mark.parametrize("normalization", ["batch", "group", "none"])
def test_both_layouts_hold_the_same_weights_and_give_the_same_outputs(normalization):
    kwargs = {**TINY, "normalization": normalization, "dilation": 2, "num_classes": 3}
    if keras.backend.backend() == "tensorflow" and not backend.has_gpu():
        with pytest.raises(ValueError, match="needs a GPU on TensorFlow"):
            FlexUNet(**kwargs, data_format="channels_first")
        assert resolve_data_format("auto") == "channels_last"
        return
    last = FlexUNet(**kwargs, data_format="channels_last")
    first = FlexUNet(**kwargs, data_format="channels_first")
    assert [(w.path, w.shape) for w in first.weights] == [(w.path, w.shape) for w in last.weights]
    for source, target in zip(last.weights, first.weights, strict=True):
        target.assign(source)
    x = np.random.default_rng(0).uniform(0, 1, (2, 32, 32, 3)).astype("float32")
    for training in (False, True):  # batch statistics over the right axis too
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(first(x, training=training)),
            keras.ops.convert_to_numpy(last(x, training=training)),
            atol=1e-5,
        )
    assert forward_flops(first) == forward_flops(last)
    expected = "channels_first" if keras.backend.backend() == "torch" else "channels_last"
    assert resolve_data_format("auto") == expected
    assert FlexUNet.from_config(first.get_config()).get_layer("enc0_conv1").data_format == (
        "channels_first"
    )


@pytest.mark.parametrize(
    "options",
    [
        dict(normalization="instance"),
        dict(base_kernels=[1, 3, 3], pool_sizes=[[1, 2, 2], 2], dilation=2, dropout_rate=0.1),
        dict(kernel_sizes=[[1, 3, 3], 3, [3, 1, 1]], normalization="group", output="logits"),
    ],
    ids=["instance", "anisotropic", "kernel-per-level"],
)
def test_3d_model_contract(options, tmp_path):
    kwargs = {**TINY_3D, **options}
    x = np.random.default_rng(0).normal(size=(2, 8, 16, 16, 2)).astype("float32")
    logits = options.get("output") == "logits"
    run_model_contract(FlexUNet, kwargs, x, (2, 8, 16, 16, 3), tmp_path, from_logits=logits)


def test_3d_topology_follows_kernels_and_pools_per_axis():
    model = shapes_only(
        FlexUNet, **{**TINY_3D, "num_layers": 4, "input_shape": (4, 32, 32, 1)},
        base_kernels=(1, 5, 5), pool_sizes=[(1, 2, 2), (2, 2, 2), (2, 2, 2)],
        data_format="channels_last",
    )  # fmt: skip
    assert isinstance(model.get_layer("enc0_conv1"), keras.layers.Conv3D)
    kernels = [tuple(model.get_layer(f"enc{i}_conv1").kernel_size) for i in range(4)]
    assert kernels == [(1, 5, 5), (1, 3, 3), (1, 3, 3), (1, 3, 3)]  # an axis of 1 keeps it
    assert tuple(model.get_layer("enc1_pool").pool_size) == (1, 2, 2)
    up = model.get_layer("dec0_up")
    assert tuple(up.kernel_size) == (1, 2, 2) and tuple(up.strides) == (1, 2, 2)
    assert model.get_layer("enc3_conv1").output.shape[1:4] == (1, 4, 4)
    assert FlexUNet.size_multiples_for(model.get_config()) == (4, 8, 8)
    assert FlexUNet.size_multiple_for(model.get_config()) == 8
    assert FlexUNet.size_multiple_for(FlexUNet(**TINY).get_config()) == 4
    assert level_kernels(3, [5, (1, 3, 3)], 2, 3) == [(5, 5, 5), (1, 3, 3)]


def test_instance_normalization_normalizes_each_channel_of_each_image():
    model = FlexUNet(**TINY_3D, normalization="instance", data_format="channels_last")
    norm = model.get_layer("enc0_norm1")
    assert isinstance(norm, keras.layers.GroupNormalization) and norm.groups == 4
    x = np.random.default_rng(0).normal(3, 5, size=(1, 8, 16, 16, 4)).astype("float32")
    y = keras.ops.convert_to_numpy(norm(x))
    np.testing.assert_allclose(y.mean(axis=(1, 2, 3)), 0, atol=1e-4)
    np.testing.assert_allclose(y.std(axis=(1, 2, 3)), 1, atol=1e-2)


@pytest.mark.parametrize("normalization", ["batch", "instance"])
def test_3d_layouts_hold_the_same_weights_and_give_the_same_outputs(normalization):
    kwargs = {**TINY_3D, "normalization": normalization, "pool_sizes": [(1, 2, 2), 2]}
    if keras.backend.backend() == "tensorflow" and not backend.has_gpu():
        pytest.raises(ValueError, FlexUNet, **kwargs, data_format="channels_first")
        return
    last = FlexUNet(**kwargs, data_format="channels_last")
    first = FlexUNet(**kwargs, data_format="channels_first")
    for source, target in zip(last.weights, first.weights, strict=True):
        target.assign(source)
    x = np.random.default_rng(0).normal(size=(2, 8, 16, 16, 2)).astype("float32")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(first(x, training=False)),
        keras.ops.convert_to_numpy(last(x, training=False)),
        atol=1e-5,
    )
    assert forward_flops(first) == forward_flops(last) > 0


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (dict(spatial_dims=4), "spatial_dims=4"),
        (dict(input_shape=(16, 16, 2)), "input_shape=(16, 16, 2)"),
        (dict(base_kernels=(3, 3)), "base_kernels=(3, 3)"),
        (dict(pool_sizes=[2]), "list of 2 entries"),
        (dict(pool_sizes=[2, (1, 0, 2)]), "pool_sizes[1]=(1, 0, 2)"),
        (dict(kernel_sizes=[3, 3]), "kernel_sizes"),
        (dict(input_shape=(6, 16, 16, 2)), "depth must be a multiple of 4"),
        (dict(input_shape=(5, 16, 16, 2), pool_sizes=[(1, 2, 2), 2]),
         "depth must be a multiple of 2 (the product of its pool_sizes)"),
    ],
)  # fmt: skip
def test_bad_3d_arguments_name_argument_and_value(override, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")
                       .replace("[", r"\[").replace("]", r"\]")):  # fmt: skip
        FlexUNet(**{**TINY_3D, **override})
