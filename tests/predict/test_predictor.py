"""The predictor: tiles, test-time mirrors, the original size, batching."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from flexseg.config.schema import TTA_MODES
from flexseg.data.reading import ReadSpec
from flexseg.predict.predictor import TTA_VIEWS, Predictor


class Identity(keras.Model):
    """A 'model' whose class-1 probability is the input itself: predictions are checkable."""

    def __init__(self, size):
        inputs = keras.Input((*size, 1))
        outputs = keras.layers.Concatenate()([1.0 - inputs, inputs])
        super().__init__(inputs, outputs)


@pytest.mark.parametrize("shape", [(16, 16), (10, 13), (40, 27)])
@pytest.mark.parametrize("tta", TTA_MODES)
def test_predictions_come_back_at_the_original_size(shape, tta):
    image = np.random.default_rng(0).uniform(0, 1, (*shape, 1)).astype(np.float32)
    predictor = Predictor(Identity((16, 16)), ReadSpec(normalize="scale01"), tta=tta)
    probs = predictor.predict(image)
    assert probs.shape == (*shape, 2)
    # Padding, tiling and blending must give back exactly what the model saw at each pixel.
    np.testing.assert_allclose(probs[..., 1], image[..., 0], atol=1e-5)


class FixedMap:
    """A 'model' that predicts the same map whatever the image: what test-time augmentation
    averages is then the map's own mirrors, un-mirrored."""

    def __init__(self, fg):
        self.input_shape = (None, *fg.shape, 1)
        self.probs = np.stack([1 - fg, fg], -1)

    def predict_on_batch(self, x):
        return np.broadcast_to(self.probs, (len(x), *self.probs.shape))


@pytest.mark.parametrize(
    ("tta", "views"),
    [("none", lambda m: [m]), ("flip", lambda m: [m, m[:, ::-1]]),
     ("flip_hv", lambda m: [m, m[:, ::-1], m[::-1], m[::-1, ::-1]])],
)  # fmt: skip
def test_test_time_augmentation_averages_the_mirrored_predictions(tta, views):
    fg = np.random.default_rng(1).uniform(0, 1, (16, 16)).astype(np.float32)
    image = np.zeros((16, 16, 1), np.float32)
    probs = Predictor(FixedMap(fg), ReadSpec(normalize="scale01"), tta=tta).predict(image)
    np.testing.assert_allclose(probs[..., 1], np.mean(views(fg), 0), atol=1e-6)


def test_resize_policy_resizes_back():
    image = np.full((50, 30, 1), 0.25, np.float32)
    spec = ReadSpec(size_policy="resize", image_size=(16, 16))
    probs = Predictor(Identity((16, 16)), spec).predict(image)
    assert probs.shape == (50, 30, 2)
    np.testing.assert_allclose(probs[..., 1], 0.25, atol=1e-5)


class MeanOfChannels(keras.Model):
    """Class-1 probability is the mean of the input's channels."""

    def __init__(self, size, channels):
        inputs = keras.Input((*size, channels))
        mean = keras.layers.Lambda(lambda t: keras.ops.mean(t, axis=-1, keepdims=True))(inputs)
        super().__init__(inputs, keras.layers.Concatenate()([1.0 - mean, mean]))


@pytest.mark.parametrize(("given", "model_channels"), [(3, 1), (1, 3)])
def test_other_channel_counts_are_converted_with_a_warning(given, model_channels):
    image = np.random.default_rng(1).uniform(0, 1, (12, 20, given)).astype(np.float32)
    predictor = Predictor(MeanOfChannels((16, 16), model_channels), ReadSpec(normalize="scale01"))
    with pytest.warns(UserWarning, match=f"converting a {given}-channel image"):
        probs = predictor.predict(image)
    assert probs.shape == (12, 20, 2)  # the original size, padded and cut back
    np.testing.assert_allclose(probs[..., 1], image.mean(-1), atol=1e-5)


class CountedIdentity(Identity):
    """Identity that counts its forward passes and the inputs of each."""

    def __init__(self, size):
        super().__init__(size)
        self.passes = []

    def predict_on_batch(self, x):
        self.passes.append(len(x))
        return super().predict_on_batch(x)


@pytest.mark.parametrize("tta", TTA_MODES)
def test_batched_prediction_equals_one_image_at_a_time(tta):
    """Images of every kind (padded, tiled, exact) share forward passes of `batch_size`
    inputs, flipped copies included, and get the same probabilities as one at a time."""
    rng = np.random.default_rng(2)
    shapes = [(16, 16), (10, 13), (40, 27), (16, 16), (12, 9), (16, 16), (7, 16)]
    images = [rng.uniform(0, 1, (*shape, 1)).astype(np.float32) for shape in shapes]
    model = CountedIdentity((16, 16))
    predictor = Predictor(model, ReadSpec(normalize="scale01"), tta=tta, batch_size=8)
    alone = [predictor.predict(image) for image in images]
    model.passes.clear()
    together = list(predictor.predict_many((image, None, k) for k, image in enumerate(images)))
    for k, ((probs, job), one, image) in enumerate(zip(together, alone, images, strict=True)):
        assert job.item == k  # each image's own item comes back with it
        np.testing.assert_allclose(probs, one, atol=1e-6)
        assert job.outputs.shape[0] == job.inputs.shape[0]
        np.testing.assert_allclose(probs[..., 1], image[..., 0], atol=1e-5)
    inputs = sum(len(job.inputs) for _, job in together)  # 6 images + 6 tiles of the large one
    assert model.passes == [8] * len(model.passes)  # every pass full: a short one is padded
    per_pass = 8 // len(TTA_VIEWS[tta])
    assert len(model.passes) == -(-inputs // per_pass)


def test_a_model_of_open_size_batches_images_of_one_size_together():
    """Each image is padded to the model's size multiple; images of other sizes go in
    passes of their own."""
    inputs = keras.Input((None, None, 1))
    model = keras.Model(inputs, keras.layers.Concatenate()([1.0 - inputs, inputs]))
    rng = np.random.default_rng(3)
    shapes = [(10, 13), (16, 16), (30, 20), (12, 15)]  # padded: 16x16, 16x16, 32x24, 16x16
    images = [rng.uniform(0, 1, (*shape, 1)).astype(np.float32) for shape in shapes]
    predictor = Predictor(model, ReadSpec(size_multiple=8, normalize="scale01"), batch_size=8)
    for (probs, _), image in zip(
        predictor.predict_many((image, None, None) for image in images), images, strict=True
    ):
        assert probs.shape == (*image.shape[:2], 2)
        np.testing.assert_allclose(probs[..., 1], image[..., 0], atol=1e-5)


def test_every_tta_option_of_the_schema_has_its_views():
    assert list(TTA_VIEWS) == list(TTA_MODES)
    assert all(views[0] == () for views in TTA_VIEWS.values())  # the image itself first
