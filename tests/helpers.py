"""The contract every flexseg model honours, checked by one helper."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zlib

import keras
import numpy as np


def run_model_contract(
    model_cls,
    init_kwargs: dict,
    input_data: np.ndarray,
    expected_output_shape: tuple,
    tmp_path,
    from_logits: bool = False,
) -> keras.Model:
    """Output shape, get_config round trip, .keras save/load and a few training steps.

    The training loss is read in training mode (dropout and batch statistics on), where a
    few optimizer steps on one fixed batch must lower it.
    """
    model = model_cls(**init_kwargs)
    output = model(input_data, training=False)
    assert tuple(output.shape) == expected_output_shape

    config = model.get_config()
    for key, value in init_kwargs.items():
        expected = list(value) if isinstance(value, tuple) else value
        assert config[key] == expected, key
    revived = model_cls.from_config(config)
    assert revived.get_config() == config
    assert revived.count_params() == model.count_params()

    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, model_cls)
    assert loaded.get_config() == config
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(loaded.predict(input_data, verbose=0)),
        keras.ops.convert_to_numpy(model.predict(input_data, verbose=0)),
    )

    labels = np.zeros(expected_output_shape, "float32")
    labels[..., 0] = 1.0
    labels[:, : expected_output_shape[1] // 2, ..., 0] = 0.0
    labels[:, : expected_output_shape[1] // 2, ..., 1] = 1.0
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.CategoricalCrossentropy(from_logits=from_logits),
    )
    history = model.fit(
        input_data, labels, batch_size=len(input_data), epochs=5, shuffle=False, verbose=0
    )
    losses = history.history["loss"]
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0], losses
    return model


def write_png(path, array) -> None:
    """Writes an array as PNG (gray (H, W) or RGB (H, W, 3)) with Pillow."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.asarray(array)
    Image.fromarray(array.astype(np.uint8) if array.dtype == np.int64 else array).save(path)


# A FlexUNet of 7.6k parameters on 32x32 images: training runs that take seconds. Test
# modules add their own split, epochs and batch size.
TINY_RUN = [
    "model.base_filters=4",
    "model.num_layers=3",
    "dataset.image_size=[32,32]",
    "dataset.normalize=zscore",
    "trainer.verbose=0",
    "trainer.workers=0",  # loads in the test's process: tests of worker processes set more
]

# make_flat_dataset's three patients: two to train on, one to validate on, no test split.
TRAIN_VALID_SPLIT = [
    "dataset.split.groups={train:[p01,p02],valid:[p03],test:[]}",
    "dataset.split.holdout_fraction=0.0",
]


def dataset_config(root, **settings):
    """A `dataset` section over `make_flat_dataset`'s files (patient = `p<number>`)."""
    from flexseg.config import DatasetConfig

    return DatasetConfig(
        **{"name": "tiny", "root": str(root), "group_regex": r"^(p\d+)_", **settings}
    )


def data_source(root, split=None, **settings):
    """The data layer's `Source` of `make_flat_dataset`'s files (patient = `p<number>`);
    `split` as the `SplitRule`'s arguments."""
    from flexseg.data import Source, SplitRule

    settings = {"group_regex": r"^(p\d+)_", **settings}
    return Source(root=str(root), split=SplitRule(**(split or {})), **settings)


def make_flat_dataset(
    root, groups=("p01", "p02", "p03"), slices=4, size=(32, 32), seed=0
) -> list[str]:
    """A flat images/ + masks/ dataset of bright squares on dark noise, 0/255 masks.

    The mask is exactly where the image is bright, so a model or a check can recover it.
    Returns the file stems.
    """
    rng = np.random.default_rng(seed)
    names = []
    for group in groups:
        for z in range(slices):
            name = f"{group}_z{z:03d}"
            image = rng.integers(0, 60, size, dtype=np.uint8)
            mask = np.zeros(size, np.uint8)
            top, left = rng.integers(2, size[0] // 2, 2)
            mask[top : top + size[0] // 3, left : left + size[1] // 3] = 255
            image[mask > 0] = rng.integers(180, 255, int((mask > 0).sum()), dtype=np.uint8)
            write_png(root / "images" / f"{name}.png", image)
            write_png(root / "masks" / f"{name}.png", mask)
            names.append(name)
    return names


def gradient(fn, x: np.ndarray) -> np.ndarray:
    """d sum(fn(x)) / dx with the active backend's autodiff (tests may import backends)."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        xt = tf.Variable(x)
        with tf.GradientTape() as tape:
            y = keras.ops.sum(fn(xt))
        return tape.gradient(y, xt).numpy()
    if backend == "jax":
        import jax

        return np.asarray(jax.grad(lambda v: keras.ops.sum(fn(v)))(x))
    import torch

    xt = torch.tensor(x, requires_grad=True)
    keras.ops.sum(fn(xt)).backward()
    return xt.grad.numpy()


def numeric_gradient(fn, x: np.ndarray, eps: float = 1e-3) -> np.ndarray:
    """Central differences of sum(fn(x)), in float64 numpy."""
    import keras

    grad = np.zeros_like(x, dtype=np.float64)
    for index in np.ndindex(x.shape):
        up, down = x.copy(), x.copy()
        up[index] += eps
        down[index] -= eps
        f_up = float(keras.ops.convert_to_numpy(keras.ops.sum(fn(up))))
        f_down = float(keras.ops.convert_to_numpy(keras.ops.sum(fn(down))))
        grad[index] = (f_up - f_down) / (2 * eps)
    return grad


def shapes_only(build, *args, **kwargs):
    """`build(*args, **kwargs)` in a stateless scope: the layers and their weight shapes, no
    weights drawn (JAX would compile an initialiser per weight shape)."""
    with keras.StatelessScope(initialize_variables=False):
        return build(*args, **kwargs)


def run_cli(command: str, *overrides: str, cwd) -> subprocess.CompletedProcess:
    """`python -m flexseg <command> <overrides>` in `cwd`, as a user runs it; not checked."""
    return subprocess.run(
        [sys.executable, "-m", "flexseg", command, *overrides],
        cwd=cwd, env={**os.environ}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def run_python(code: str, env: dict[str, str] | None = None) -> str:
    """Runs `code` in a fresh Python process (this environment unless `env`); its stdout."""
    result = subprocess.run(
        [sys.executable, "-c", code], env=env if env is not None else {**os.environ},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def encoded(array: np.ndarray, image_format: str, **options) -> bytes:
    """An array as the bytes of an image file (PNG, JPEG, TIFF, BMP), written by Pillow."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, image_format, **options)
    return buffer.getvalue()


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    """One PNG chunk: length, type, payload and its CRC."""
    body = kind + payload
    return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body))


def huge_header(extension: str, width: int, height: int) -> bytes:
    """A small file whose header declares `width` x `height` pixels, consistent otherwise."""
    if extension == "png":
        ihdr = png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
        idat = png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
        return b"\x89PNG\r\n\x1a\n" + ihdr + idat + png_chunk(b"IEND", b"")
    if extension == "jpg":
        data = bytearray(encoded(np.zeros((12, 16), np.uint8), "JPEG"))
        sof = next(i for i in range(2, len(data)) if data[i - 1] == 0xFF and data[i] == 0xC0)
        data[sof + 4 : sof + 8] = struct.pack(">HH", min(height, 65535), min(width, 65535))
        return bytes(data)
    if extension == "bmp":
        data = bytearray(encoded(np.zeros((12, 16), np.uint8), "BMP"))
        data[18:26] = struct.pack("<ii", width, height)
        return bytes(data)
    entries = [(256, 4, 1, width), (257, 4, 1, height), (273, 4, 1, 8), (279, 4, 1, 4)]
    ifd = struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHII", *e) for e in entries)
    return b"II*\x00" + struct.pack("<I", 12) + b"\0\0\0\0" + ifd + b"\0\0\0\0"


def write_nifti(path, voxels, affine=None, zooms=None):
    """Writes an array as NIfTI-1 (`.nii` or `.nii.gz` by the name) with nibabel; `affine`
    defaults to the RAS identity scaled by `zooms`."""
    import nibabel as nib

    path.parent.mkdir(parents=True, exist_ok=True)
    voxels = np.asarray(voxels)
    if affine is None:
        affine = np.diag([*(zooms or (1.0, 1.0, 1.0)), 1.0])
    nib.save(nib.Nifti1Image(voxels, np.asarray(affine, float)), path)
    return path


def make_volume_dataset(
    root, cases=("p01", "p02", "p03"), shape=(20, 18, 10), channels=2, seed=0, affine=None
) -> list[str]:
    """An nnU-Net v2 raw folder of tiny volumes: a bright box in float32 noise in channel 0
    (scanner-like intensities in the hundreds), its negative in channel 1, and the box as
    label 1. Returns the case names."""
    rng = np.random.default_rng(seed)
    for case in cases:
        label = np.zeros(shape, np.uint8)
        start = [int(rng.integers(1, max(2, n // 2))) for n in shape]
        label[tuple(slice(s, s + max(2, n // 3)) for s, n in zip(start, shape, strict=True))] = 1
        base = rng.normal(300, 40, shape).astype(np.float32)
        bright = np.where(label > 0, base + 600, base)
        for c in range(channels):
            voxels = bright if c == 0 else (2000 - bright).astype(np.float32)
            write_nifti(root / "imagesTr" / f"{case}_{c:04d}.nii.gz", voxels, affine)
        write_nifti(root / "labelsTr" / f"{case}.nii.gz", label, affine)
    names = {str(c): f"channel{c}" for c in range(channels)}
    manifest = {"channel_names": names, "labels": {"background": 0, "lesion": 1},
                "numTraining": len(cases), "file_ending": ".nii.gz"}  # fmt: skip
    (root / "dataset.json").write_text(json.dumps(manifest))
    return list(cases)
