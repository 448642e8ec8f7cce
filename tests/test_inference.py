from __future__ import annotations

import keras
import numpy as np
import pytest
from PIL import Image

from flexseg.data.reading import ReadSpec
from flexseg.errors import DataError, PreflightError
from flexseg.inference import Predictor, gaussian_weights, infer, tile_starts
from tests.helpers import write_png


class Identity(keras.Model):
    """A 'model' whose class-1 probability is the input itself: predictions are checkable."""

    def __init__(self, size):
        inputs = keras.Input((*size, 1))
        outputs = keras.layers.Concatenate()([1.0 - inputs, inputs])
        super().__init__(inputs, outputs)


@pytest.mark.parametrize(("size", "tile", "overlap"), [(10, 4, 0.5), (9, 4, 0.25), (4, 4, 0.5)])
def test_tiles_cover_the_image(size, tile, overlap):
    starts = tile_starts(size, tile, overlap)
    covered = np.zeros(size, bool)
    for s in starts:
        covered[s : s + tile] = True
    assert covered.all() and starts[-1] + tile == size


def test_gaussian_weights_peak_in_the_centre():
    w = gaussian_weights(8, 8)
    assert w[3:5, 3:5].min() == w.max() and w.min() > 0


@pytest.mark.parametrize("shape", [(16, 16), (10, 13), (40, 27)])
@pytest.mark.parametrize("tta", ["none", "flip"])
def test_predictions_come_back_at_the_original_size(shape, tta):
    image = np.random.default_rng(0).uniform(0, 1, (*shape, 1)).astype(np.float32)
    predictor = Predictor(Identity((16, 16)), ReadSpec(normalize="scale01"), tta=tta)
    probs = predictor.predict(image)
    assert probs.shape == (*shape, 2)
    # Padding, tiling and blending must give back exactly what the model saw at each pixel.
    np.testing.assert_allclose(probs[..., 1], image[..., 0], atol=1e-5)


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


def test_inference_at_original_size_tiled_and_never_overwriting(trained, tmp_path):
    _, run_dir, _ = trained
    inputs = tmp_path / "in"
    rng = np.random.default_rng(1)
    write_png(inputs / "p09_small.png", rng.integers(0, 255, (20, 26), dtype=np.uint8))
    write_png(inputs / "p09_large.png", rng.integers(0, 255, (70, 45), dtype=np.uint8))
    write_png(inputs / "p09_rgb.png", rng.integers(0, 255, (30, 28, 3), dtype=np.uint8))
    output = tmp_path / "out"
    cfg = {
        "run_dir": str(run_dir),
        "input": str(inputs),
        "output": str(output),
        "tta": "flip",
        "save_probabilities": True,
    }
    with pytest.warns(UserWarning, match="3-channel"):
        written = infer(cfg)
    assert len(written) == 3
    for stem, size in (("p09_small", (20, 26)), ("p09_large", (70, 45)), ("p09_rgb", (30, 28))):
        with Image.open(output / "masks" / f"{stem}.png") as mask:
            assert mask.mode == "P" and mask.size == (size[1], size[0])
            assert set(np.unique(np.asarray(mask))) <= {0, 1}
        with Image.open(output / "overlays" / f"{stem}.png") as picture:
            assert picture.size == (size[1], size[0])
        probs = np.load(output / "probabilities" / f"{stem}.npy")
        assert probs.shape == (*size, 2)
        np.testing.assert_allclose(probs.astype(np.float32).sum(-1), 1.0, atol=1e-2)
    before = (output / "masks" / "p09_small.png").read_bytes()
    with pytest.raises(ValueError, match="overwrite=true"):
        infer(cfg)
    assert (output / "masks" / "p09_small.png").read_bytes() == before
    infer({**cfg, "overwrite": True})


def test_an_input_folder_without_images(trained, tmp_path):
    _, run_dir, _ = trained
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=f"{tmp_path / 'empty'} holds no images"):
        infer({"run_dir": str(run_dir), "input": str(tmp_path / "empty")})


def test_an_unreadable_input_stops_inference_before_any_prediction(trained, tmp_path):
    root, run_dir, _ = trained
    (tmp_path / "broken.png").write_bytes(b"not a png")
    good = root / "images" / "p03_z000.png"
    output = tmp_path / "out"
    with pytest.raises(PreflightError, match="nothing was predicted") as info:
        infer({"run_dir": str(run_dir), "input": [str(good), str(tmp_path / "broken.png")],
               "output": str(output)})  # fmt: skip
    assert "broken.png" in str(info.value)
    assert not output.exists()  # nothing was predicted
