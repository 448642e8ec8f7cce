"""The demo job: a FlexUNet training step on real slices of the built-in sample.

KERAS_BACKEND=tensorflow python -m flexseg.demo
"""

from __future__ import annotations

from pathlib import Path

import cv2
import keras
import numpy as np

from flexseg import backend
from flexseg.models import FlexUNet, forward_flops

SAMPLE = Path(__file__).resolve().parent / "sample_data" / "ms-lesjak-flair"


def load_slices(names: list[str], size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Images scaled to [0, 1] and one-hot masks, zero-padded to `size` (height, width)."""
    images, masks = [], []
    for name in names:
        image = cv2.imread(str(SAMPLE / "images" / name), cv2.IMREAD_GRAYSCALE)
        mask = cv2.imread(str(SAMPLE / "masks" / name), cv2.IMREAD_GRAYSCALE)
        pad = ((0, size[0] - image.shape[0]), (0, size[1] - image.shape[1]))
        images.append(np.pad(image, pad)[..., None] / 255.0)
        masks.append(np.pad(mask > 127, pad))
    return np.stack(images).astype("float32"), np.eye(2, dtype="float32")[np.stack(masks) * 1]


def main() -> None:
    keras.utils.set_random_seed(0)
    names = ["p07_z066.png", "p07_z086.png", "p19_z065.png", "p19_z085.png"]
    images, masks = load_slices(names, (224, 192))
    model = FlexUNet(input_shape=(224, 192, 1), num_classes=2, num_layers=5)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy")
    print(
        f"backend={backend.name()} params={model.count_params():,} "
        f"gflops_per_image={forward_flops(model) / 1e9:.2f}"
    )
    history = model.fit(images, masks, batch_size=len(names), epochs=1, verbose=0)
    print(f"trained one step on {len(names)} real slices: loss={history.history['loss'][0]:.4f}")


if __name__ == "__main__":
    main()
