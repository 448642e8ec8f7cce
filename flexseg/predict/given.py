"""Predictions made elsewhere (another tool's masks), scored as a run's own are.

`flexseg-evaluate run_dir=<run> predictions=<folder>` scores the masks in `<folder>` against
the run's split with the run's evaluation: one file per sample, named as flexseg-infer names
its masks (`<image stem>.png`, or `<case>.nii.gz` for a volume), holding class ids.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from flexseg.data import volumes
from flexseg.data.masks import decode_mask
from flexseg.data.reading import ReadSpec
from flexseg.data.sources import Sample
from flexseg.errors import DataError
from flexseg.predict.predictor import Job

SUFFIXES = (".png", ".tif", ".tiff", ".bmp", ".nii.gz", ".nii", ".nrrd", ".mha")


@dataclass
class GivenPredictions:
    """The `Predictor` interface over a folder of predicted masks: `predict_many` gives
    each sample's one-hot class ids read from its file (a sample's slice of a case's volume
    for a 2D run on volumes), at the sample's own size."""

    folder: Path
    spec: ReadSpec
    num_classes: int
    tta: str = "given"
    batch_size: int = 1

    def file_of(self, sample: Sample) -> Path:
        stem = sample.case if sample.volume else sample.name
        for suffix in SUFFIXES:
            path = self.folder / f"{stem}{suffix}"
            if path.is_file():
                return path
        raise DataError(
            f"no prediction for {sample.name} in {self.folder} (looked for {stem}.png, "
            f"{stem}.nii.gz, ...); predict every sample of the split into that folder."
        )

    def ids(self, sample: Sample) -> np.ndarray:
        path = self.file_of(sample)
        if not sample.volume:
            return decode_mask(path, self.num_classes, None, self.spec.max_pixels)[0]
        # a case's slices read its volume once: `volumes.load` keeps what it read
        labels = volumes.load(path, "label", self.spec.max_voxels).voxels
        return labels if sample.whole else volumes.cut(labels, sample.axis, sample.index)

    def predict_many(
        self, images: Iterable[tuple[np.ndarray, Any, Any]]
    ) -> Iterator[tuple[np.ndarray, Job]]:
        for _, _, item in images:
            sample, truth = item
            ids = self.ids(sample)
            if ids.shape != truth.shape:
                raise DataError(
                    f"prediction {self.file_of(sample)} is {list(ids.shape)} where the mask of "
                    f"{sample.name} is {list(truth.shape)}; predict at the images' own size."
                )
            if ids.max(initial=0) >= self.num_classes:
                raise DataError(
                    f"prediction {self.file_of(sample)} holds class {int(ids.max())} of a run "
                    f"of {self.num_classes} classes."
                )
            probs = np.eye(self.num_classes, dtype=np.float32)[ids]
            job = Job(np.zeros((0,)), lambda p: p, lambda mask: mask, item=item)
            yield probs, job
