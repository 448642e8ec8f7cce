"""Ensembles: several runs' predictors as one, their post-processing, and the predictor of a
run or of several."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from flexseg.data.reading import IntensityStats, ReadSpec
from flexseg.models.inference import inference_model
from flexseg.predict.postprocess import NONE, pooled, read_rule, read_scores
from flexseg.predict.predictor import Job, Predictor, volume_jobs
from flexseg.runs import Run


class Ensemble:
    """The mean of the class probabilities of several predictors of one way of reading images
    (the runs of a cross-validation, say), with `Predictor.predict_many`'s interface.

    The members read images alike (`flexseg.runs.load_runs` checks it), so the model inputs
    of `batch_size` images are made once and each member runs its model over them; the jobs
    yielded hold the last member's outputs.
    """

    def __init__(self, predictors: Sequence[Predictor]):
        self.predictors = list(predictors)
        first = self.predictors[0]
        self.spec, self.tta, self.batch_size = first.spec, first.tta, first.batch_size
        self.spatial_dims, self.input_size = first.spatial_dims, first.input_size
        self.overlap = first.overlap
        self.members = len(self.predictors)  # a volume's windows run once by each

    def predict_volume(
        self, volume: np.ndarray, stats: IntensityStats | None = None, progress=None
    ) -> np.ndarray:
        """The members' mean probabilities (X, Y, Z, K) for one volume (3D models), each by
        its own sliding windows (`Predictor.predict_volume`)."""
        each = [p.predict_volume(volume, stats, progress) for p in self.predictors]
        return np.mean(each, axis=0)

    def predict_many(
        self, images: Iterable[tuple[np.ndarray, IntensityStats | None, Any]]
    ) -> Iterator[tuple[np.ndarray, Job]]:
        if self.spatial_dims == 3:  # whole volumes, one at a time
            yield from volume_jobs(self.predict_volume, images)
            return
        chunk = []
        for image in images:
            chunk.append(image)
            if len(chunk) == self.batch_size:
                yield from self._mean(chunk)
                chunk = []
        yield from self._mean(chunk)

    def _mean(self, chunk: list) -> Iterator[tuple[np.ndarray, Job]]:
        jobs = []
        for image, stats, item in chunk:
            job = self.predictors[0].job(image, stats)
            job.item = item
            jobs.append(job)
        each = []
        for predictor in self.predictors:
            predictor.run(jobs)
            each.append([job.finish(job.probabilities) for job in jobs])
        for job, probs in zip(jobs, zip(*each, strict=True), strict=True):
            yield np.mean(probs, axis=0), job


def rule_of(runs: Sequence[Run]) -> dict:
    """The post-processing of one run (its `postprocessing.json`). For an ensemble of folds of
    one cross-validation, the rule chosen on the folds' validation splits together
    (`flexseg.predict.postprocess.pooled`); none for another ensemble, or when a fold chose
    nothing."""
    if len(runs) == 1:
        return read_rule(runs[0].run_dir)
    if not folds_of_one_cross_validation(runs):
        return dict(NONE)
    chosen = []
    for run in runs:
        scores = read_scores(run.run_dir)
        # choosing also wrote the validation split's evaluation: its number of volumes
        scored = run.run_dir / "evaluation" / "valid" / "evaluation.json"
        try:
            volumes = int(json.loads(scored.read_text())["volumes"])
        except (OSError, ValueError, KeyError, TypeError):
            volumes = 0
        if scores is None or volumes < 1:
            return dict(NONE)
        chosen.append((scores, volumes))
    return pooled(chosen)[0]


def folds_of_one_cross_validation(runs: Sequence[Run]) -> bool:
    """Whether the runs are different folds of one cross-validation (the same split of the
    same data but for `dataset.split.fold`), so that their validation splits do not overlap."""

    def rule(run: Run) -> tuple:
        split = run.cfg.dataset.split
        seed = run.cfg.seed if split.seed is None else split.seed
        return replace(split, fold=0, seed=seed), run.cfg.dataset.root, run.cfg.dataset.name

    first = rule(runs[0])
    folds = {run.cfg.dataset.split.fold for run in runs}
    return (
        bool(runs[0].cfg.dataset.split.folds)
        and len(folds) == len(runs)
        and all(rule(run) == first for run in runs)
    )


def predictor_of(
    runs: Sequence[Run], spec: ReadSpec, tta: str, batch_size: int, dtype: str = "float32"
):
    """A `Predictor` of one run, or the `Ensemble` of several, each predicting with its model
    rebuilt for inference in `dtype` (`flexseg.models.inference`)."""
    predictors = [
        Predictor(
            inference_model(run.model, dtype),
            spec,
            tta,
            batch_size=batch_size,
            from_logits=run.cfg.model.from_logits,
        )
        for run in runs
    ]
    return predictors[0] if len(predictors) == 1 else Ensemble(predictors)
