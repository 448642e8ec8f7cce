"""From a config to datasets: the one place that wires sources, masks, reading and augmentation."""

from __future__ import annotations

from collections.abc import Mapping

from flexseg.data.dataset import SegmentationDataset, compute_group_stats
from flexseg.data.masks import ColorMap
from flexseg.data.reading import ReadSpec
from flexseg.data.sources import Sample, find_samples
from flexseg.data.transforms import build_augmentation
from flexseg.errors import ConfigError


def colormap_of(dataset: Mapping) -> ColorMap | None:
    """The dataset's colour map, or None when its masks hold class ids."""
    if dataset.get("rgb_map") is None:
        return None
    cmap = ColorMap.from_config(dataset["rgb_map"], dataset.get("color_tolerance", 10.0))
    if cmap.num_classes != dataset["num_classes"]:
        raise ConfigError(
            f"dataset.num_classes={dataset['num_classes']} but dataset.rgb_map has "
            f"{cmap.num_classes} classes; make them agree."
        )
    return cmap


def read_spec_of(dataset: Mapping, size_multiple: int = 1) -> ReadSpec:
    """The ReadSpec a dataset config describes; `size_multiple` comes from the model."""
    size = dataset.get("image_size")
    clip = dataset.get("clip_percentiles")
    return ReadSpec(
        channels=dataset.get("channels", 1),
        size_policy=dataset.get("size_policy", "pad"),
        image_size=tuple(size) if size else None,
        size_multiple=size_multiple,
        normalize=dataset.get("normalize", "scale01"),
        clip_percentiles=tuple(clip) if clip else None,
        ignore_zero=dataset.get("ignore_zero", True),
    )


def spec_of(cfg: Mapping) -> ReadSpec:
    """The ReadSpec of a whole config: the dataset's reading and the model's size multiple."""
    return read_spec_of(cfg["dataset"], 2 ** (cfg["model"].get("num_layers", 1) - 1))


def build_datasets(
    cfg: Mapping,
    splits: Mapping[str, list[Sample]] | None = None,
    workers: int | None = None,
    only: str | None = None,
) -> dict[str, SegmentationDataset]:
    """Train, valid and test datasets of a config; only the training set is augmented.

    Args:
        cfg: the whole config (`dataset`, `model`, `trainer`, `augment`, `seed`).
        splits: samples per split, found from the config when None.
        workers: loader workers; `trainer.workers` when None.
        only: build just this split (intensity statistics still come from every split).

    Returns:
        `{split: SegmentationDataset}` for each split that has samples (or just `only`).
    """
    dataset, trainer = cfg["dataset"], cfg["trainer"]
    seed = cfg.get("seed", 0)
    splits = splits if splits is not None else find_samples(dataset, seed)
    spec = spec_of(cfg)
    cmap = colormap_of(dataset)
    stats = None
    if spec.normalize == "group_zscore":
        stats = compute_group_stats([s for v in splits.values() for s in v], spec)
    workers = trainer.get("workers", 1) if workers is None else workers
    result = {}
    for split, samples in splits.items():
        if not samples or only not in (None, split):
            continue
        result[split] = SegmentationDataset(
            samples,
            num_classes=dataset["num_classes"],
            batch_size=trainer["batch_size"],
            spec=spec,
            colormap=cmap,
            augment=(
                build_augmentation(cfg["augment"]["transforms"], dataset.get("image_size"))
                if split == "train"
                else None
            ),
            shuffle=split == "train",
            seed=seed,
            drop_remainder=split == "train" and trainer.get("drop_remainder", True),
            foreground_fraction=trainer.get("foreground_fraction") if split == "train" else None,
            cache=dataset.get("cache", False),
            group_stats=stats,
            workers=workers,
            use_multiprocessing=trainer.get("use_multiprocessing", False),
        )
    return result
