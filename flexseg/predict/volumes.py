"""Predictions of volumes: each case's slices predicted by a 2D model and stacked (or its
whole volume by a 3D model's sliding windows), written as a NIfTI label volume on the case's
own grid (its axis order, affine and header)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from flexseg.data import readers, volumes
from flexseg.data.layouts import Case, by_channel
from flexseg.data.reading import read_sample
from flexseg.data.sources import Sample
from flexseg.errors import DataError
from flexseg.models.windows import window_count
from flexseg.predict.outputs import OutputFolder
from flexseg.predict.postprocess import NONE, classes
from flexseg.predict.predictor import Predictor
from flexseg.predict.reading import read_ahead
from flexseg.progress import progress_bar


def input_cases(paths: Sequence[Path], channels: int) -> list[Case]:
    """The cases of inference input volumes: with one channel each file (named `<case>` or
    nnU-Net's `<case>_0000`), with several the files `<case>_0000`, `<case>_0001`, ...

    Raises:
        DataError: a case without all its channel files, or a file of no case, named.
    """
    by_case, strays = by_channel({readers.stem_of(path): path for path in paths})
    if channels == 1:  # a file not named as a channel is a case of its own
        by_case.update({readers.stem_of(path): {0: path} for path in strays})
        strays = []
    problems = []
    if strays:
        problems.append(
            f"input volume(s) {', '.join(p.name for p in strays[:5])} are not named "
            f"<case>_<4-digit channel> (e.g. p01_0000.nii.gz), and the model reads {channels} "
            "channel files per case; rename them as nnU-Net does."
        )
    cases = []
    for name in sorted(by_case):
        files = by_case[name]
        if sorted(files) != list(range(channels)):
            problems.append(
                f"case {name} has channel file(s) {sorted(files)} but the model reads "
                f"{channels} (0..{channels - 1}); give every channel file of the case."
            )
            continue
        cases.append(Case(name, tuple(files[c] for c in range(channels)), None))
    if problems:
        raise DataError("; ".join(problems))
    return cases


def output_paths(case: str, output: Path, save_probabilities: bool) -> dict[str, Path]:
    """Where a case's label volume (and probabilities) go."""
    paths = {"mask": output / f"{case}.nii.gz"}
    if save_probabilities:
        paths["probabilities"] = output / "probabilities" / f"{case}.nii.gz"
    return paths


def predict_volumes(
    predictor: Predictor,
    cases: Sequence[Case],
    out: OutputFolder,
    axis: int,
    save_probabilities: bool = False,
    rule: Mapping = NONE,
) -> list[dict[str, Path]]:
    """Predicts each case slice by slice along `axis` (of RAS order) and writes
    `<output>/<case>.nii.gz`, class ids as uint8 on the case's grid; with
    `save_probabilities` also `<output>/probabilities/<case>.nii.gz`, (X, Y, Z, K) float32 as
    predicted (before the post-processing `rule`, which makes each slice's class ids).

    Memory holds one case's class ids (and probabilities when saved) and the slices in
    flight. The files go into the output folder `out` (`flexseg.predict.outputs`: only its
    own files replaced, each whole or not at all, a rerun finishing an interrupted one).
    """
    plan = {case.name: output_paths(case.name, out.folder, save_probabilities) for case in cases}
    todo = set(out.plan(plan))
    if out.skipped:
        print(f"{out.skipped} of {len(plan)} case(s) were predicted before: the rest follow")
    every = list(plan.values())
    cases = [case for case in cases if case.name in todo]
    if predictor.spatial_dims == 3:
        _predict_whole(predictor, cases, plan, out, save_probabilities, rule)
        return every
    spec = predictor.spec
    shapes = {
        case.name: volumes.geometry(case.images[0], "image", spec.max_voxels).shape
        for case in cases
    }
    progress = progress_bar(sum(shape[axis] for shape in shapes.values()), "predicting")
    with ThreadPoolExecutor(1) as writer:
        pending = []
        for case in cases:
            shape = shapes[case.name]
            image, *channels = case.images
            slices = [
                Sample(image, None, case.name, index, axis, case.name, tuple(channels))
                for index in range(shape[axis])
            ]
            labels = np.zeros(shape, np.uint8)
            probs_volume = None
            items = (
                (raw, None, sample)
                for sample, raw in zip(
                    slices, read_ahead(lambda s: read_sample(s, spec), slices), strict=True
                )
            )
            for probs, job in predictor.predict_many(items):
                index = job.item.index
                _place(labels, axis, index, classes(probs, rule))
                if save_probabilities:
                    if probs_volume is None:
                        probs_volume = np.zeros((*shape, probs.shape[-1]), np.float32)
                    _place(probs_volume, axis, index, probs)
                progress.add(1)
            pending.append(writer.submit(_write, out, plan[case.name], labels, probs_volume, image))
        for future in pending:
            future.result()
    return every


def _predict_whole(
    predictor: Predictor,
    cases: Sequence[Case],
    plan: Mapping[str, dict[str, Path]],
    out: OutputFolder,
    save_probabilities: bool,
    rule: Mapping,
) -> None:
    """A 3D model's predictions: each case's whole volume by sliding windows."""
    samples = [
        Sample(case.images[0], None, case.name, None, None, case.name, tuple(case.images[1:]))
        for case in cases
    ]
    spec, window = predictor.spec, predictor.input_size
    windows = sum(
        window_count(
            volumes.geometry(s.image, "image", spec.max_voxels).shape, window, predictor.overlap
        )
        for s in samples
    )
    windows *= getattr(predictor, "members", 1)  # an ensemble runs each window per member
    progress = progress_bar(windows, "predicting", unit="window")
    with ThreadPoolExecutor(1) as writer:
        pending = []
        reads = read_ahead(lambda s: read_sample(s, spec), samples)
        for sample, raw in zip(samples, reads, strict=True):
            probs = predictor.predict_volume(raw, progress=progress)
            labels = classes(probs, rule).astype(np.uint8)
            kept = probs if save_probabilities else None
            pending.append(
                writer.submit(_write, out, plan[sample.case], labels, kept, sample.image)
            )
        for future in pending:
            future.result()


def _place(volume: np.ndarray, axis: int, index: int, values: np.ndarray) -> None:
    where = [slice(None)] * volume.ndim
    where[axis] = index
    volume[tuple(where)] = values


def _write(out: OutputFolder, paths: dict[str, Path], labels: np.ndarray, probs, like: Path):
    out.write(paths["mask"], lambda tmp: volumes.write_labels(tmp, labels, like))
    if probs is not None:
        out.write(
            paths["probabilities"],
            lambda tmp: volumes.write_labels(tmp, probs, like, probabilities=True),
        )
