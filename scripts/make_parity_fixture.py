"""Write tests/fixtures/flex_unet_parity.npz: fixed weights, inputs and reference outputs.

The parity test loads these weights into a FlexUNet on each backend and checks that the
outputs match the reference within 1e-4. Run with any backend; the file records which:

    KERAS_BACKEND=tensorflow python scripts/make_parity_fixture.py
"""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np

from flexseg.models import FlexUNet

FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "flex_unet_parity.npz"

# Small models that between them exercise every option that changes the computation.
CASES = {
    "batch_dilated": dict(
        input_shape=(32, 32, 3),
        num_classes=3,
        base_filters=4,
        base_kernels=[5, 3],
        num_layers=3,
        dilation=2,
        normalization="batch",
        input_rescale=1 / 255,
    ),
    "group_gelu_logits": dict(
        input_shape=(16, 32, 1),
        num_classes=2,
        base_filters=8,
        base_kernels=7,
        num_layers=3,
        normalization="group",
        activation="gelu",
        output="logits",
        dropout_rate=0.2,
    ),
    "instance_anisotropic_3d": dict(
        input_shape=(8, 16, 16, 2),
        num_classes=3,
        base_filters=4,
        num_layers=3,
        spatial_dims=3,
        kernel_sizes=[[1, 3, 3], [3, 3, 3], [3, 3, 3]],
        pool_sizes=[[1, 2, 2], [2, 2, 2]],
        dilation=2,
        normalization="instance",
    ),
    "batch_3d_logits": dict(
        input_shape=(8, 8, 8, 1),
        num_classes=2,
        base_filters=4,
        base_kernels=[3, 5, 5],
        num_layers=2,
        spatial_dims=3,
        normalization="batch",
        output="logits",
    ),
}


def random_weights(model: keras.Model, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Weights drawn with numpy so that they do not depend on any backend's RNG."""
    weights = {}
    for w in model.weights:
        shape = tuple(w.shape)
        if w.path.endswith("moving_variance"):
            value = rng.uniform(0.5, 2.0, shape)
        elif w.path.endswith("gamma"):
            value = rng.uniform(0.5, 1.5, shape)
        else:
            fan_in = int(np.prod(shape[:-1])) or 1
            value = rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)
        weights[w.path] = value.astype("float32")
    return weights


def main() -> None:
    rng = np.random.default_rng(2024)
    arrays = {"backend": np.array(keras.backend.backend())}
    for case, config in CASES.items():
        model = FlexUNet(**config)
        weights = random_weights(model, rng)
        for w in model.weights:
            w.assign(weights[w.path])
        scale = 255.0 if config.get("input_rescale") else 1.0
        x = (rng.uniform(0, 1, (2, *config["input_shape"])) * scale).astype("float32")
        arrays[f"{case}/config"] = np.array(json.dumps(config))
        arrays[f"{case}/input"] = x
        arrays[f"{case}/output"] = keras.ops.convert_to_numpy(model(x, training=False))
        for path, value in weights.items():
            arrays[f"{case}/weights/{path}"] = value
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(FIXTURE, **arrays)
    print(f"wrote {FIXTURE} ({FIXTURE.stat().st_size} bytes) with {keras.backend.backend()}")


if __name__ == "__main__":
    main()
