"""`infer(cfg)`: a training run's predictions for new images, written beside each other."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from flexseg.config.parse import parse
from flexseg.config.schema import InferConfig
from flexseg.data import readers, volumes
from flexseg.data.checks import input_problems
from flexseg.data.masks import ColorMap
from flexseg.data.splits import group_of
from flexseg.errors import DataError, PreflightError
from flexseg.from_config import colormap_of, read_spec
from flexseg.models.inference import inference_dtype
from flexseg.predict.ensembles import predictor_of, rule_of
from flexseg.predict.outputs import OutputFolder, identity_of
from flexseg.predict.reading import find_inputs
from flexseg.predict.volumes import input_cases, predict_volumes
from flexseg.predict.writers import predict_files
from flexseg.runs import load_runs, results_dir


def infer(cfg: InferConfig | Mapping) -> list[dict[str, Path]]:
    """Predicts `cfg.input` (a folder, an image, a list file or a list of images) with a
    training run's checkpoint (`cfg.checkpoint`, default the run's choice) into `cfg.output`
    (default `<run_dir>/predictions`), with the run's post-processing (`postprocessing.json`,
    `flexseg.predict.evaluation.choose_postprocessing`). Several runs (`run_dir` a list, or a sweep
    folder) predict as an ensemble: the mean of their probabilities (default output
    `<their folder>/ensemble/predictions`).

    Images of one group (the dataset's `group_regex` on the file name) share intensity
    statistics, as in training; `overwrite`, `tta`, `batch_size` and `save_probabilities`
    apply. Volumes (NIfTI, NRRD, MetaImage; a case's channel files named `<case>_0000`,
    `<case>_0001`, ...) are predicted slice by slice along the run's slice axis into
    `<output>/<case>.nii.gz` on each case's own grid (`flexseg.predict.volumes`).

    Args:
        cfg: an `InferConfig`, or a dict of the same keys.
    """
    cfg = parse(InferConfig, cfg)
    runs = load_runs(cfg.run_dir, cfg.checkpoint)
    run = runs[0]
    dataset = run.cfg.dataset
    spec = read_spec(dataset, run.model.size_multiple)
    images = find_inputs(cfg.input)
    predictor = predictor_of(runs, spec, cfg.tta, cfg.batch_size, inference_dtype(cfg.precision))
    output = Path(cfg.output) if cfg.output else results_dir(runs) / "predictions"
    identity = identity_of(
        runs, tta=cfg.tta, precision=cfg.precision, rule=rule_of(runs),
        save_probabilities=cfg.save_probabilities,
    )  # fmt: skip
    out = OutputFolder(
        output, identity, dataset_folders(runs), {p.parent for p in images}, cfg.overwrite
    )
    if any(readers.is_volume(path) for path in images):
        cases = input_cases(images, dataset.channels)
        problems = input_problems([p for case in cases for p in case.images], spec)
        if problems:
            raise PreflightError(problems, "nothing was predicted")
        axis = volumes.slice_axis(
            dataset.slice_axis, [volumes.geometry(case.images[0]).spacing for case in cases]
        )
        with out:
            return predict_volumes(
                predictor, cases, out, axis, cfg.save_probabilities, rule_of(runs)
            )
    problems = input_problems(images, spec)
    if problems:
        raise PreflightError(problems, "nothing was predicted")
    groups: dict[Path, str] = {}
    for path in images:
        try:
            groups[path] = (
                group_of(path.stem, dataset.group_regex) if dataset.group_regex else path.stem
            )
        except DataError:
            groups[path] = path.stem  # a file of no known group is its own group
    colormap = colormap_of(dataset) or ColorMap.default(dataset.num_classes)
    with out:
        return predict_files(
            predictor,
            images,
            out,
            colormap,
            groups,
            save_probabilities=cfg.save_probabilities,
            rule=rule_of(runs),
        )


def dataset_folders(runs) -> set[Path]:
    """The image and mask folders of each run's data set (its split folders' too), which
    predictions must stay out of."""
    folders = set()
    for run in runs:
        dataset = run.cfg.dataset
        root = Path(dataset.root).expanduser()
        for base in (root, *(root / split for split in ("train", "valid", "test"))):
            folders |= {base / dataset.images_dir, base / dataset.masks_dir}
        folders |= {root / name for name in ("imagesTr", "labelsTr", "imagesTs", "labelsTs")}
    return folders
