"""Loader throughput and memory: images/s of SegmentationDataset, and peak RSS.

    python scripts/benchmark_loader.py dataset=lgg dataset.root=/data/lgg-flair-80 augment=light

Iterates every image of the data set once (all splits, augmented like training data), then
prints the images per second and the peak resident memory of the process. Any Hydra override of the
training config applies.
"""

from __future__ import annotations

import json
import resource
import sys
import time

from flexseg.config import load_config
from flexseg.data.build import build_datasets
from flexseg.data.sources import find_samples


def main(overrides: list[str]) -> dict:
    cfg = load_config(overrides)
    start = time.perf_counter()
    splits = find_samples(cfg["dataset"], cfg["seed"])
    every = [sample for samples in splits.values() for sample in samples]
    datasets = build_datasets(cfg, splits={"train": every})
    setup_s = time.perf_counter() - start
    train = datasets["train"]
    images = 0
    start = time.perf_counter()
    for i in range(len(train)):
        x, _ = train[i]
        images += len(x)
    seconds = time.perf_counter() - start
    result = {
        "dataset": cfg["dataset"]["name"],
        "augment": cfg["augment"]["name"],
        "image_size": cfg["dataset"]["image_size"],
        "batch_size": cfg["trainer"]["batch_size"],
        "images": images,
        "setup_s": round(setup_s, 2),
        "loader_img_s": round(images / seconds, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
