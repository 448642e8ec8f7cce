from __future__ import annotations

import keras
import numpy as np
import pytest

from flexseg.models import FlexUNet
from flexseg.models.inference import inference_dtype, inference_model

TINY = dict(input_shape=(32, 32, 3), num_classes=3, base_filters=4, num_layers=3)


def with_statistics(model: FlexUNet) -> FlexUNet:
    """`model` with batch normalisations far from the identity (as after training)."""
    rng = np.random.default_rng(1)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights(
                [rng.uniform(0.5, 1.5, n), rng.normal(0, 0.3, n), rng.normal(0, 0.3, n),
                 rng.uniform(0.3, 2.0, n)]
            )  # fmt: skip
    return model


@pytest.fixture
def batch():
    return np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype("float32")


@pytest.mark.parametrize(
    "options",
    [dict(), dict(dropout_rate=0.1, dilation=2, base_kernels=(5, 3), output="logits")],
    ids=["batch", "dropout-dilation-logits"],
)
def test_folded_batch_normalisation_predicts_what_the_model_does(options, batch):
    model = with_statistics(FlexUNet(**TINY, **options))
    copy = inference_model(model)
    assert copy.normalization == "none" and model.normalization == "batch"
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in copy.layers)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(copy.predict_on_batch(batch)),
        keras.ops.convert_to_numpy(model(batch, training=False)),
        atol=1e-5,
    )


@pytest.mark.parametrize("normalization", ["batch", "group"])
def test_bfloat16_copy_predicts_within_its_rounding(normalization, batch):
    model = with_statistics(FlexUNet(**TINY, normalization=normalization))
    copy = inference_model(model, "bfloat16")
    head = copy.get_layer("head")
    assert head.kernel.dtype == "bfloat16" and head.compute_dtype == "bfloat16"
    probs = keras.ops.convert_to_numpy(copy.predict_on_batch(batch))
    assert probs.dtype == np.float32  # the output layer stays float32
    expected = keras.ops.convert_to_numpy(model(batch, training=False))
    assert np.abs(probs - expected).max() < 0.02
    # the model it came from and Keras' global policy are as they were
    assert model.get_layer("head").kernel.dtype == "float32"
    assert keras.mixed_precision.global_policy().name == "float32"


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_two_classes_predict_from_one_logit_difference(dtype, batch):
    model = with_statistics(FlexUNet(**{**TINY, "num_classes": 2}))
    copy = inference_model(model, dtype)
    assert copy.get_layer("head_difference").kernel.shape[-1] == 1
    assert "head" not in {layer.name for layer in copy.layers}
    probs = keras.ops.convert_to_numpy(copy.predict_on_batch(batch))
    assert probs.shape == (2, 32, 32, 2) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=-1), 1.0, atol=1e-6)
    expected = keras.ops.convert_to_numpy(model(batch, training=False))
    assert np.abs(probs - expected).max() < (1e-5 if dtype == "float32" else 0.02)


def test_a_model_with_nothing_to_fold_in_float32_is_used_as_it_is():
    model = FlexUNet(**TINY, normalization="group")
    assert inference_model(model) is model
    other = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    assert inference_model(other, "bfloat16") is other
    with pytest.raises(ValueError, match="dtype"):
        inference_model(model, "mixed_bfloat16")


@pytest.mark.parametrize(
    ("trains_in", "predicts_in"),
    [("mixed_bfloat16", "bfloat16"), ("mixed_float16", "float16"), ("float32", "float32")],
)
def test_auto_precision_predicts_in_what_auto_trains_in(trains_in, predicts_in, monkeypatch):
    monkeypatch.setattr("flexseg.backend.auto_precision", lambda: trains_in)
    assert inference_dtype("auto") == predicts_in
    assert inference_dtype("float32") == "float32"


@pytest.mark.parametrize("num_classes", [2, 3])
def test_3d_folded_copy_predicts_what_the_model_does(num_classes):
    model = with_statistics(
        FlexUNet(input_shape=(8, 16, 16, 1), spatial_dims=3, num_classes=num_classes,
                 base_filters=4, num_layers=3, pool_sizes=[(1, 2, 2), 2])
    )  # fmt: skip
    copy = inference_model(model)
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in copy.layers)
    x = np.random.default_rng(0).normal(size=(2, 8, 16, 16, 1)).astype("float32")
    probs = keras.ops.convert_to_numpy(copy.predict_on_batch(x))
    assert probs.shape == (2, 8, 16, 16, num_classes)
    np.testing.assert_allclose(
        probs, keras.ops.convert_to_numpy(model(x, training=False)), atol=1e-5
    )
