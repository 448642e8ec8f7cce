"""Segment a folder of images with an exported flexseg model, without flexseg or Keras.

    python examples/predict_onnx.py <export folder> <image folder> <output folder> [--tta flip]

Needs only numpy, opencv-python and onnxruntime. The export folder is what
`flexseg-export run_dir=... format=onnx` wrote: `model.onnx` and `preprocessing.json`, which
says how an image becomes the model's input; this script follows it step by step and writes
one colour mask per image (the class colours of `preprocessing.json`) to the output folder.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from pathlib import Path

import cv2
import numpy as np
import onnxruntime

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}


def read_image(path: Path, channels: int) -> np.ndarray:
    """(H, W, channels) in the file's own type; colour averaged to gray, gray repeated."""
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise SystemExit(f"cannot read {path}")
    if image.ndim == 2:
        image = image[..., None]
    if image.shape[2] in (2, 4):
        image = image[..., : image.shape[2] - 1]  # alpha carries no intensity
    if image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    if image.shape[2] == channels:
        return image
    if channels == 1:
        return image.mean(axis=-1, keepdims=True).astype(image.dtype)
    return np.repeat(image[..., :1], channels, axis=-1)


def to_unit(image: np.ndarray) -> tuple[np.ndarray, float]:
    scale = float(np.iinfo(image.dtype).max) if np.issubdtype(image.dtype, np.integer) else 1.0
    return image.astype(np.float32) / scale, scale


def statistics(images: list[np.ndarray], rule: dict) -> tuple[np.ndarray, ...]:
    """Per-channel (low, high, mean, std) from a histogram of unit-scaled values."""
    bins = rule["histogram_bins"]
    hist = np.zeros((images[0].shape[-1], bins), np.int64)
    for image in images:
        image = np.clip(image, 0.0, 1.0)
        for c in range(image.shape[-1]):
            values = image[..., c]
            if rule["ignore_zero"]:
                values = values[values > 0]
            index = np.minimum((values * bins).astype(np.int64), bins - 1).ravel()
            hist[c] += np.bincount(index, minlength=bins)
    centers = (np.arange(bins) + 0.5) / bins
    low_p, high_p = rule["clip_percentiles"] or (0.0, 100.0)
    stats = []
    for counts in hist:
        if counts.sum() == 0:
            stats.append((0.0, 1.0, 0.0, 1.0))
            continue
        cdf = np.cumsum(counts) / counts.sum()
        low = centers[np.searchsorted(cdf, low_p / 100)] if low_p > 0 else 0.0
        high = centers[min(np.searchsorted(cdf, high_p / 100), bins - 1)] if high_p < 100 else 1.0
        clipped = np.clip(centers, low, high)
        mean = np.average(clipped, weights=counts)
        std = math.sqrt(np.average((clipped - mean) ** 2, weights=counts))
        stats.append((low, high, mean, max(std, 1e-6)))
    return tuple(np.array(column, np.float32) for column in zip(*stats, strict=True))


def model_input(unit: np.ndarray, scale: float, rule: dict, group_stats) -> np.ndarray:
    if rule["normalize"] == "scale01":
        return unit
    if rule["normalize"] == "none":
        return (unit * scale).astype(np.float32)
    low, high, mean, std = (
        group_stats if rule["normalize"] == "group_zscore" else statistics([unit], rule)
    )
    return ((np.clip(unit, low, high) - mean) / std).astype(np.float32)


class Model:
    def __init__(self, folder: Path, tta: str):
        self.prep = json.loads((folder / "preprocessing.json").read_text())
        self.session = onnxruntime.InferenceSession(
            str(folder / self.prep["model"]), providers=["CPUExecutionProvider"]
        )
        self.name = self.session.get_inputs()[0].name
        self.tta = tta
        self.rule = self.prep.get("postprocessing", {}).get("rule", {"name": "none"})

    def forward(self, batch: np.ndarray) -> np.ndarray:
        """(N, H, W, C) inputs -> (N, H, W, K) probabilities (flip-averaged with --tta flip)."""
        probs = self._probabilities(batch)
        if self.tta == "flip":
            probs = 0.5 * (probs + self._probabilities(batch[:, :, ::-1])[:, :, ::-1])
        return probs

    def _probabilities(self, batch: np.ndarray) -> np.ndarray:
        out = self.session.run(None, {self.name: np.ascontiguousarray(batch)})[0]
        if self.prep["output"]["values"] == "logits":
            out = np.exp(out - out.max(-1, keepdims=True))
            out /= out.sum(-1, keepdims=True)
        return out.astype(np.float32)

    def predict(self, image: np.ndarray, group_stats) -> np.ndarray:
        """Class ids (H, W) of one image at its own size."""
        unit, scale = to_unit(image)
        rule, size = self.prep["intensity"], self.prep["size"]
        height, width = unit.shape[:2]
        model_h, model_w = size["input_size"]
        if size["policy"] == "resize":
            resized = cv2.resize(unit, (model_w, model_h), interpolation=cv2.INTER_LINEAR)
            x = model_input(resized.reshape(model_h, model_w, -1), scale, rule, group_stats)
            probs = cv2.resize(self.forward(x[None])[0], (width, height))
            return class_ids(probs.reshape(height, width, -1), self.rule)
        pad_h, pad_w = max(0, model_h - height), max(0, model_w - width)
        top, left = pad_h // 2, pad_w // 2
        padded = np.pad(unit, ((top, pad_h - top), (left, pad_w - left), (0, 0)))
        x = model_input(padded, scale, rule, group_stats)
        if x.shape[:2] == (model_h, model_w):
            probs = self.forward(x[None])[0]
        else:
            probs = self.tiled(x, size["tile_overlap"])
        return class_ids(probs[top : top + height, left : left + width], self.rule)

    def tiled(self, x: np.ndarray, overlap: float) -> np.ndarray:
        model_h, model_w = self.prep["size"]["input_size"]
        weights = (gaussian(model_h)[:, None] * gaussian(model_w)[None, :])[..., None]
        weights = np.maximum(weights / weights.max(), 1e-3)
        total = np.zeros(x.shape[:2] + (self.prep["output"]["classes"],), np.float32)
        norm = np.zeros(x.shape[:2] + (1,), np.float32)
        for y in starts(x.shape[0], model_h, overlap):
            for left in starts(x.shape[1], model_w, overlap):
                tile = x[None, y : y + model_h, left : left + model_w]
                total[y : y + model_h, left : left + model_w] += self.forward(tile)[0] * weights
                norm[y : y + model_h, left : left + model_w] += weights
        return total / norm


def class_ids(probs: np.ndarray, rule: dict) -> np.ndarray:
    """(H, W) class ids of (H, W, K) probabilities by the run's post-processing rule."""
    if "threshold" in rule:
        foreground = probs[..., 1:]
        reached = foreground.sum(-1) >= rule["threshold"]
        ids = np.where(reached, foreground.argmax(-1) + 1, 0).astype(np.uint8)
    else:
        ids = probs.argmax(-1).astype(np.uint8)
    if rule["name"] == "none":
        return ids
    out = ids.copy()
    for class_id in np.unique(ids[ids > 0]):
        count, labels, stats, _ = cv2.connectedComponentsWithStats(
            (ids == class_id).astype(np.uint8), connectivity=4
        )
        sizes = stats[1:, cv2.CC_STAT_AREA]  # components 1..count-1
        if rule["name"] == "min_size":
            dropped = np.flatnonzero(sizes < rule["min_size"]) + 1
        else:  # largest
            dropped = np.delete(np.arange(1, count), sizes.argmax())
        out[np.isin(labels, dropped)] = 0
    return out


def gaussian(size: int) -> np.ndarray:
    return np.exp(-0.5 * ((np.arange(size) - (size - 1) / 2) / (0.125 * size)) ** 2)


def starts(size: int, tile: int, overlap: float) -> list[int]:
    if size <= tile:
        return [0]
    stride = max(1, int(tile * (1.0 - overlap)))
    return sorted(
        {min(i * stride, size - tile) for i in range(math.ceil((size - tile) / stride) + 1)}
    )


def group_of(name: str, regex: str | None) -> str:
    match = re.search(regex, name) if regex else None
    return (match.group(1) if match.groups() else match.group(0)) if match else name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("export", type=Path, help="the folder flexseg-export wrote")
    parser.add_argument("images", type=Path, help="a folder of images")
    parser.add_argument("output", type=Path, help="where the colour masks go")
    parser.add_argument("--tta", choices=["none", "flip"], default="none")
    args = parser.parse_args()

    model = Model(args.export, args.tta)
    prep = model.prep
    channels = prep["input"]["shape"][-1]
    paths = sorted(p for p in args.images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    images = {p: read_image(p, channels) for p in paths}
    groups = {p: group_of(p.stem, prep["intensity"]["group_regex"]) for p in paths}
    stats = {}
    if prep["intensity"]["normalize"] == "group_zscore":
        for group in set(groups.values()):
            members = [to_unit(images[p])[0] for p in paths if groups[p] == group]
            stats[group] = statistics(members, prep["intensity"])
    colors = np.zeros((256, 3), np.uint8)
    for entry in prep["classes"]:
        colors[entry["id"]] = entry["color"]
    args.output.mkdir(parents=True, exist_ok=True)
    for path in paths:
        ids = model.predict(images[path], stats.get(groups[path]))
        rgb = colors[ids]
        cv2.imwrite(str(args.output / f"{path.stem}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    print(f"wrote {len(paths)} mask(s) to {args.output}")


if __name__ == "__main__":
    main()
