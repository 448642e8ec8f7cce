from __future__ import annotations

import keras
import numpy as np
import pytest
from PIL import Image

from flexseg.config.schema import TTA_MODES, TTA_VIEWS
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


def test_progress_shows_on_a_terminal_only(trained, tmp_path, capsys, monkeypatch):
    root, run_dir, _ = trained
    cfg = {"run_dir": str(run_dir), "input": str(root / "images"), "output": str(tmp_path / "a")}
    infer(cfg)
    assert capsys.readouterr().out == ""  # a log file or a cluster job gets no bar
    monkeypatch.setattr("sys.stdout.isatty", lambda: True)
    infer({**cfg, "output": str(tmp_path / "b")})
    shown = capsys.readouterr().out
    assert "predicting: 18 images" in shown and "18/18" in shown


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


@pytest.mark.once
def test_a_sweep_folder_predicts_as_the_ensemble_of_its_runs(trained, tmp_path):
    """Two copies of one run in a sweep's numbered folders: the ensemble's probabilities
    are the run's own, written to the sweep's ensemble/ folder."""
    import shutil

    _, run_dir, _ = trained
    inputs = tmp_path / "in"
    write_png(inputs / "p09_a.png", np.random.default_rng(2).integers(0, 255, (30, 28), np.uint8))
    for job in ("0", "1"):
        shutil.copytree(run_dir, tmp_path / "sweep" / job)
    common = {"input": str(inputs), "save_probabilities": True, "tta": "flip"}
    infer({**common, "run_dir": str(run_dir), "output": str(tmp_path / "one")})
    infer({**common, "run_dir": str(tmp_path / "sweep")})
    ensemble = tmp_path / "sweep" / "ensemble" / "predictions"
    np.testing.assert_allclose(
        np.load(ensemble / "probabilities" / "p09_a.npy"),
        np.load(tmp_path / "one" / "probabilities" / "p09_a.npy"),
        atol=1e-6,
    )
