"""Loader throughput and memory against training throughput, for one config.

    python scripts/benchmark_loader.py dataset=lgg dataset.root=/data/lgg-flair-80 augment=light
    python scripts/benchmark_loader.py --train-config experiment=demo -- dataset=lgg ...

Iterates every image of the data set once (all splits, augmented like training data) and
prints the loader's images per second and the peak resident memory of the process. With
`--train-config`, it then times training steps of the model that config describes on its own
data (after two warm-up steps) and prints the ratio: a loader slower than training starves
it. Any Hydra override of the training config applies.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

from flexseg.runtime import prepare_process

prepare_process()  # as flexseg's commands do, before Keras starts

from flexseg.config import instantiate  # noqa: E402
from flexseg.config.compose import load_config  # noqa: E402
from flexseg.data.build import build_datasets  # noqa: E402
from flexseg.data.sources import find_samples  # noqa: E402


def loader_speed(overrides: list[str]) -> dict:
    cfg = load_config(overrides)
    start = time.perf_counter()
    splits = find_samples(cfg.dataset, cfg.seed)
    every = [sample for samples in splits.values() for sample in samples]
    train = build_datasets(cfg, splits={"train": every})["train"]
    setup_s = time.perf_counter() - start
    images = 0
    start = time.perf_counter()
    for i in range(len(train)):
        images += len(train[i][0])
    seconds = time.perf_counter() - start
    return {
        "dataset": cfg.dataset.name,
        "augment": cfg.augment.name,
        "image_size": cfg.dataset.image_size,
        "batch_size": cfg.trainer.batch_size,
        "images": images,
        "setup_s": round(setup_s, 2),
        "loader_img_s": round(images / seconds, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def train_speed(overrides: list[str], steps: int = 8) -> dict:
    from flexseg.losses import build_loss
    from flexseg.metrics import segmentation_metrics
    from flexseg.training.setup import build_optimizer, resolve_jit_compile

    cfg = load_config(overrides)
    train = build_datasets(cfg)["train"]
    model = instantiate(cfg.model)
    model.compile(
        optimizer=build_optimizer(cfg.trainer),
        loss=build_loss(cfg.loss, cfg.dataset.num_classes, cfg.model.from_logits),
        metrics=segmentation_metrics(cfg.dataset.num_classes),
        jit_compile=resolve_jit_compile(cfg.trainer.jit_compile),
    )
    batches = [train[i] for i in range(min(steps, len(train) - 1))]
    for x, y in batches[:2]:
        model.train_on_batch(x, y)
    start = time.perf_counter()
    images = 0
    for x, y in batches:
        model.train_on_batch(x, y)
        images += len(x)
    return {
        "train_config": overrides,
        "params": model.count_params(),
        "train_img_s": round(images / (time.perf_counter() - start), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-config", nargs="*", help="overrides of the model to time")
    parser.add_argument("overrides", nargs="*", help="overrides of the loader's config")
    args = parser.parse_args()
    result = loader_speed(args.overrides)
    if args.train_config is not None:
        result.update(train_speed(args.train_config))
        result["loader_over_train"] = round(result["loader_img_s"] / result["train_img_s"], 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
