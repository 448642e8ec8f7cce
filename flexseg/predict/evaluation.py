"""Evaluation of a trained model on a split, at each image's original size.

Reports what the field reports: the micro foreground Dice over all pixels of the split, the
mean Dice per image over images with foreground, the mean and median Dice per volume (the
images of one group, i.e. one patient, pooled: the standard per-patient DSC), per-class Dice
and IoU, pixel accuracy, and the mean HD95 per volume in pixels. And the failures a mean
hides: the volumes with foreground that got no prediction at all, lesion-wise detection
(lesions found, missed and predicted where there is none, and the lesion F1), and the volumes
with the lowest Dice.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import keras
import numpy as np

from flexseg.config.parse import parse
from flexseg.config.schema import SPLITS, DatasetConfig, EvaluateConfig, LabelledDataConfig
from flexseg.data import volumes as volume_files
from flexseg.data.checks import scan_samples
from flexseg.data.masks import ColorMap, decode_sample_mask
from flexseg.data.reading import read_sample, stand_in, stand_in_problem
from flexseg.data.sources import Sample, by_group, folder_samples, natural_key
from flexseg.errors import ConfigError, DataError, PreflightError
from flexseg.from_config import colormap_of, find_samples, read_spec, source_of
from flexseg.losses import build_loss
from flexseg.metrics import (
    counts_np,
    detection_by_size,
    dice_np,
    fg_dice_np,
    hd95,
    iou_np,
    lesion_counts,
    lesion_f1,
    lesion_sizes,
    mean_surface_distance,
)
from flexseg.models.inference import inference_dtype
from flexseg.predict.ensembles import predictor_of, rule_of
from flexseg.predict.given import GivenPredictions
from flexseg.predict.postprocess import NONE, RuleScores, classes, describe, save_rule
from flexseg.predict.predictor import Predictor
from flexseg.predict.reading import grouped_reads
from flexseg.progress import progress_bar
from flexseg.runs import load_runs, results_dir

WORST = 5  # volumes listed by lowest Dice
# A volume's scores from its spacing, and the summary's names for their means over cases.
MM_MEANS = {
    "hd95_mm": "hd95_volume_mean_mm",
    "msd_mm": "msd_volume_mean_mm",
    "fg_ml_true": "fg_ml_true_volume_mean",
    "fg_ml_pred": "fg_ml_pred_volume_mean",
}
# The numbers an evaluation leads with, in the order commands print them.
HEADLINE = (
    "fg_dice",
    "fg_dice_image_mean",
    "fg_dice_volume_mean",
    "fg_dice_volume_median",
    "hd95_volume_mean_px",
    "lesion_f1",
    "pixel_accuracy",
    "loss",
)


def evaluate_samples(
    predictor: Predictor,
    samples: Sequence[Sample],
    class_names: Sequence[str],
    colormap: ColorMap | None,
    others: Mapping[str, Sequence[Sample]] | None = None,
    loss: Callable | None = None,
    loss_batch: int = 8,
    rule: Mapping = NONE,
    observe: Callable[[str, np.ndarray, np.ndarray], None] | None = None,
    stand_in_channel: int | None = None,
) -> tuple[dict, list[dict]]:
    """Predicts each sample and scores it against its mask at the original size.

    Each image and mask is read once; the model sees the images in batches
    (`predictor.batch_size`).

    Args:
        class_names: one name per class, background first.
        others: samples of each group outside `samples`, whose image intensities join the
            group's statistics for `group_zscore` (as in training).
        loss: the run's loss, computed on the model's own outputs (no test-time flip) in
            batches of `loss_batch` model inputs; the summary's `loss` is its mean.
        rule: the post-processing that makes each slice's class ids (`flexseg.predict.postprocess`).
        observe: if given, called with each slice's group, truth (class ids) and class
            probabilities.
        stand_in_channel: replace every channel of each image by this one (as a scan whose
            missing sequences were filled with the one it has).

    Returns:
        The summary (JSON-ready) and one row per image.
    """
    names = list(class_names)
    num_classes = len(names)
    spec = predictor.spec
    total = np.zeros((num_classes, 3), np.int64)
    rows, volumes = [], {}
    ordered = sorted(samples, key=lambda s: natural_key(s.name))

    def read(sample: Sample) -> tuple[np.ndarray, np.ndarray]:
        limits = spec.max_pixels, spec.max_voxels
        truth, _ = decode_sample_mask(sample, num_classes, colormap, *limits)
        raw = read_sample(sample, spec)
        return (raw if stand_in_channel is None else stand_in(raw, stand_in_channel)), truth

    members = by_group(ordered, lambda sample: sample.group)
    reads = grouped_reads(members, read, spec, lambda data: data[0], others)
    items = ((raw, stats, (sample, truth)) for sample, (raw, truth), stats in reads)
    losses = LossMean(loss, num_classes, loss_batch)
    progress = progress_bar(len(ordered), "evaluating")
    for probs, job in predictor.predict_many(items):
        sample, truth = job.item
        losses.add(job.fit_mask(truth), job.outputs)
        if observe is not None:
            observe(sample.group, truth, probs)
        pred = classes(probs, rule)
        counts = counts_np(truth, pred, num_classes)
        total += counts
        # a volume: a case's slices, or a group's 2D images
        volume = volumes.setdefault(
            sample.case or sample.group, {"counts": 0, "truth": [], "pred": [], "sample": sample}
        )
        volume["counts"] = volume["counts"] + counts
        volume["truth"].append(truth)  # class ids
        volume["pred"].append(pred)
        rows.append(
            {
                "image": sample.name,
                "group": sample.group,
                "has_foreground": bool((truth > 0).any()),
                "fg_dice": fg_dice_np(counts),
                "fg_pixels_true": int((truth > 0).sum()),
                "fg_pixels_pred": int((pred > 0).sum()),
                **{f"dice_{n}": float(d) for n, d in zip(names, dice_np(counts), strict=True)},
            }
        )
        progress.add(1)
    order = {s.name: k for k, s in enumerate(ordered)}
    rows.sort(key=lambda r: order[r["image"]])
    per_volume, sized = {}, []
    for group, volume in volumes.items():
        ids = volume["truth"], volume["pred"]
        truth, pred = ([part > 0 for part in parts] for parts in ids)  # the foreground
        whole = volume["sample"].whole  # a 3D model's volume: one sample
        if whole or len({t.shape for t in truth}) == 1:
            # a whole volume, or the slices of one stacked in name order
            stacked = (truth[0], pred[0]) if whole else (np.stack(truth), np.stack(pred))
            labels = tuple(parts[0] if whole else np.stack(parts) for parts in ids)
            distance = hd95(*stacked)
            lesions = lesion_counts(*stacked)
            sized.append(lesion_sizes(*stacked))
        else:  # slices of different sizes: per-slice distances' mean, lesions' sum
            per_slice = np.array([hd95(t, p) for t, p in zip(truth, pred, strict=True)])
            finite = per_slice[np.isfinite(per_slice)]
            distance = float(finite.mean()) if finite.size else math.nan
            lesions = sum(lesion_counts(t, p) for t, p in zip(truth, pred, strict=True))
            sized += [lesion_sizes(t, p) for t, p in zip(truth, pred, strict=True)]
        per_volume[group] = {
            "images": len(truth),
            "fg_dice": fg_dice_np(volume["counts"]),
            **(_in_mm(volume, names, *labels) if volume["sample"].volume else {}),
            "hd95_px": distance,
            "has_foreground": any(t.any() for t in truth),
            "predicted_foreground": any(p.any() for p in pred),
            **dict(
                zip(
                    ("lesions_detected", "lesions_missed", "lesions_false"),
                    map(int, lesions),
                    strict=True,
                )
            ),
            "lesion_f1": lesion_f1(lesions),
        }
    volume_dice = [v["fg_dice"] for v in per_volume.values()]
    in_mm = {}  # of volumes: the means over cases of their scores in mm and mL
    for key, mean in MM_MEANS.items():
        values = [v[key] for v in per_volume.values() if not math.isnan(v.get(key, math.nan))]
        if any(key in v for v in per_volume.values()):
            in_mm[mean] = float(np.mean(values)) if values else float("nan")
    volume_hd = [v["hd95_px"] for v in per_volume.values() if not math.isnan(v["hd95_px"])]
    per_class = {
        n: {"dice": float(d), "iou": float(i), **_class_means(per_volume, n)}
        for n, d, i in zip(names, dice_np(total), iou_np(total), strict=True)
    }
    with_fg = [r["fg_dice"] for r in rows if r["has_foreground"]]
    lesions = np.array(
        [[v[f"lesions_{k}"] for k in ("detected", "missed", "false")] for v in per_volume.values()]
    ).sum(0)
    worst = sorted(per_volume, key=lambda g: (per_volume[g]["fg_dice"], natural_key(g)))
    summary = {
        "loss": losses.mean(),
        "images": len(rows),
        "volumes": len(per_volume),
        "fg_dice": fg_dice_np(total),
        "fg_dice_image_mean": float(np.mean(with_fg)) if with_fg else float("nan"),
        "images_with_foreground": len(with_fg),
        "fg_dice_volume_mean": float(np.mean(volume_dice)),
        "fg_dice_volume_median": float(np.median(volume_dice)),
        "hd95_volume_mean_px": float(np.mean(volume_hd)) if volume_hd else float("nan"),
        **in_mm,
        "hd95_volumes_undefined": len(per_volume) - len(volume_hd),
        "volumes_with_foreground": sum(v["has_foreground"] for v in per_volume.values()),
        # volumes with foreground where the model predicted none at all
        "volumes_missed": sorted(
            (
                g
                for g, v in per_volume.items()
                if v["has_foreground"] and not v["predicted_foreground"]
            ),
            key=natural_key,
        ),
        "lesions_detected": int(lesions[0]),
        "lesions_missed": int(lesions[1]),
        "lesions_false": int(lesions[2]),
        "lesion_f1": lesion_f1(lesions),
        # small lesions are the ones a model misses: detection per lesion size
        "lesions_by_size": detection_by_size(sized),
        "worst_volumes": {g: per_volume[g]["fg_dice"] for g in worst[:WORST]},
        "pixel_accuracy": float(total[:, 0].sum() / max(total[:, [0, 2]].sum(), 1)),
        "per_class": per_class,
        "per_volume": per_volume,
    }
    return summary, rows


def _class_means(per_volume: dict, name: str) -> dict:
    """A class's Dice and HD95 (mm) averaged over the volumes that have them (cases of more
    than one foreground class), as `dice_volume_mean`, `hd95_volume_mean_mm`."""
    means = {}
    for key, mean in (
        (f"dice_{name}", "dice_volume_mean"),
        (f"hd95_mm_{name}", "hd95_volume_mean_mm"),
    ):
        values = [v[key] for v in per_volume.values() if key in v and not math.isnan(v[key])]
        if any(key in v for v in per_volume.values()):
            means[mean] = float(np.mean(values)) if values else float("nan")
    return means


def _in_mm(volume: dict, names: Sequence[str], truth: np.ndarray, pred: np.ndarray) -> dict:
    """A case's scores in millimetres and millilitres, from its spacing: HD95 and mean
    surface distance of the foreground (and, with more than one foreground class, HD95 of
    each), its volume in the truth and the prediction, and the Dice of each class. `truth`,
    `pred` are its class ids, slices stacked (slice axis first)."""
    sample = volume["sample"]
    spacing = volume_files.geometry(sample.image).spacing
    if sample.whole:
        stacked = tuple(spacing)
    else:
        stacked = (spacing[sample.axis], *(s for a, s in enumerate(spacing) if a != sample.axis))
    voxel_ml = float(np.prod(spacing)) / 1000.0
    each = {}
    if len(names) > 2:
        each = {
            f"hd95_mm_{n}": hd95(truth == c, pred == c, stacked)
            for c, n in enumerate(names)
            if c > 0
        }
    truth, pred = truth > 0, pred > 0
    return {
        "hd95_mm": hd95(truth, pred, stacked),
        **each,
        "msd_mm": mean_surface_distance(truth, pred, stacked),
        "fg_ml_true": float(truth.sum()) * voxel_ml,
        "fg_ml_pred": float(pred.sum()) * voxel_ml,
        **{f"dice_{n}": float(d) for n, d in zip(names, dice_np(volume["counts"]), strict=True)},
    }


class LossMean:
    """The mean of a loss over batches of (class ids, model outputs) pairs, as Keras'
    `evaluate` reports it: each batch's loss weighted by its size."""

    def __init__(self, loss: Callable | None, num_classes: int, batch: int):
        self.loss, self.num_classes, self.batch = loss, num_classes, batch
        self.truth: list[np.ndarray] = []
        self.outputs: list[np.ndarray] = []
        self.sum, self.count = 0.0, 0

    def add(self, truth: np.ndarray, outputs: np.ndarray) -> None:
        """Class ids (N, h, w) and the model's outputs (N, h, w, K) on the same pixels."""
        if self.loss is None or outputs is None:  # a 3D model's windows are not kept
            return
        self.truth += list(truth)
        self.outputs += list(outputs)
        while len(self.truth) >= self.batch:
            self._reduce(self.batch)

    def mean(self) -> float:
        while self.truth:
            self._reduce(min(self.batch, len(self.truth)))
        return self.sum / self.count if self.count else float("nan")

    def _reduce(self, count: int) -> None:
        truth = np.eye(self.num_classes, dtype=np.float32)[np.stack(self.truth[:count])]
        value = self.loss(truth, np.stack(self.outputs[:count]))
        self.sum += float(keras.ops.convert_to_numpy(value)) * count
        self.count += count
        del self.truth[:count], self.outputs[:count]


def write_evaluation(out_dir: str | Path, summary: dict, rows: list[dict]) -> list[Path]:
    """Writes `evaluation.json`, `evaluation.csv` (metric, value) and `evaluation_images.csv`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "evaluation.json"
    json_path.write_text(json.dumps(summary, indent=2))
    # lists (the missed volumes' names) as their length; the names are in the JSON
    flat = {k: len(v) if isinstance(v, list) else v for k, v in summary.items()}
    flat = {k: v for k, v in flat.items() if not isinstance(v, dict)}
    for name, values in summary["per_class"].items():
        flat.update({f"{key}_{name}": value for key, value in values.items()})
    csv_path = out_dir / "evaluation.csv"
    with csv_path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["metric", "value"])
        writer.writerows(flat.items())
    rows_path = out_dir / "evaluation_images.csv"
    with rows_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["image"])
        writer.writeheader()
        writer.writerows(rows)
    return [json_path, csv_path, rows_path]


def choose_postprocessing(run_dir: str | Path, batch_size: int = 16, tta: str = "none") -> dict:
    """Chooses the run's post-processing on its validation split and records it in the run
    (`postprocessing.json`, which evaluate and infer then apply): a rule is kept only when it
    raises the mean per-volume Dice over no rule (`flexseg.predict.postprocess.RuleScores`).

    Predicts with the test-time augmentation `tta` (choose with the one you will evaluate
    and infer with: a threshold is chosen on its probabilities). Also writes the validation
    split's evaluation without post-processing (`evaluation/valid/`). Returns
    `{"rule": ..., "fg_dice_volume_mean": {candidate: ...}}`.
    """
    cfg = EvaluateConfig(run_dir=str(run_dir), split="valid", batch_size=batch_size, tta=tta)
    candidates = RuleScores()
    _evaluate(cfg, NONE, candidates.add)
    rule, scores = candidates.choice()
    save_rule(run_dir, rule, scores, tta)
    return {"rule": rule, "fg_dice_volume_mean": scores}


def evaluate(cfg: EvaluateConfig | Mapping) -> dict:
    """Evaluates a training run (`cfg.run_dir`) on one of its splits (`cfg.split`), or on new
    labelled data (`cfg.data.root`: all its images as one split).

    Uses the run's own config, preprocessing and colour map, and its checkpoint
    (`cfg.checkpoint`, default the run's `trainer.select_checkpoint`); writes
    `evaluation/<split>/` in the run (`<split>_<checkpoint>` for the checkpoint the run did not
    select), or `evaluation/<data.name>/` for new data. Several runs (`run_dir` a list, or a
    sweep folder) are scored as an ensemble, the mean of their probabilities, into
    `<their folder>/ensemble/evaluation/<split>/`; they must read images alike and predict
    the same classes, and, for a split, hold the same images in it.

    Args:
        cfg: an `EvaluateConfig`, or a dict of the same keys.

    Returns:
        The summary, with the loss and the folder it was written to.
    """
    cfg = parse(EvaluateConfig, cfg)
    return _evaluate(cfg)


def _evaluate(
    cfg: EvaluateConfig, rule: Mapping | None = None, observe: Callable | None = None
) -> dict:
    """`evaluate`, with the post-processing `rule` (default: the run's own; none for an
    ensemble) and `observe` as in `evaluate_samples`."""
    runs = load_runs(cfg.run_dir, cfg.checkpoint)
    run = runs[0]
    problems: list[str] = []  # every problem of the files in one report
    if cfg.data.root is None:
        dataset, name = run.cfg.dataset, cfg.split
        splits = find_samples(dataset, run.cfg.seed, problems)
        samples = splits.get(cfg.split, [])
        for other in runs[1:]:
            theirs = find_samples(other.cfg.dataset, other.cfg.seed).get(cfg.split, [])
            if {s.image for s in theirs} != {s.image for s in samples}:
                raise ConfigError(
                    f"the {cfg.split} split of {other.run_dir} holds other images than that of "
                    f"{run.run_dir}; an ensemble is scored on one split of the same images "
                    "(runs of one cross-validation share theirs), or on data.root=<folder>."
                )
        if not samples and not problems:
            raise DataError(f"split {cfg.split!r} of dataset {dataset.name} has no images")
    else:
        dataset, name = labelled_data(run.cfg.dataset, cfg.data), labelled_name(cfg.data)
        samples = folder_samples(
            source_of(dataset), Path(dataset.root), problems, "data.group_regex"
        )
        splits = {name: samples}
        if not samples and not problems:
            raise DataError(
                f"data.root {dataset.root} holds no image/mask pairs in {dataset.images_dir}/ "
                f"and {dataset.masks_dir}/; set data.images_dir and data.masks_dir."
            )
    problem = stand_in_problem("stand_in_channel", cfg.stand_in_channel, dataset.channels)
    if problem:
        raise ConfigError(problem)
    colormap = colormap_of(dataset)
    spec = read_spec(dataset, run.model.size_multiple)
    problems += scan_samples(samples, dataset.num_classes, spec, colormap)[1]
    if problems:
        raise PreflightError(problems, "nothing was evaluated")
    # Intensity statistics of a group come from all its images, in whichever split they are.
    wanted = set(samples)
    groups = {s.group for s in samples}
    others: dict[str, list[Sample]] = {}
    for sample in (s for split in splits.values() for s in split):
        if sample.group in groups and sample not in wanted:
            others.setdefault(sample.group, []).append(sample)
    dtype = inference_dtype(cfg.precision)
    given = _given_predictions(cfg, dataset, spec)
    loss = None
    if given is not None:  # masks made elsewhere: scored as they are
        predictor, rule = given, NONE
    else:
        predictor = predictor_of(runs, spec, cfg.tta, cfg.batch_size, dtype)
        # The run's own loss; an ensemble's mean probabilities are no one model's output.
        if len(runs) == 1:
            loss = build_loss(run.cfg.loss, dataset.num_classes, run.cfg.model.from_logits)
    if rule is None:
        rule = rule_of(runs)
    summary, rows = evaluate_samples(
        predictor, samples, dataset.names, colormap, others, loss, run.cfg.trainer.batch_size,
        rule, observe, cfg.stand_in_channel,
    )  # fmt: skip
    summary = {
        "split": name, "checkpoint": run.checkpoint, "tta": predictor.tta,
        "precision": dtype,
        "postprocessing": describe(rule), **summary,
    }  # fmt: skip
    if len(runs) > 1:
        summary["runs"] = [str(r.run_dir) for r in runs]
    if cfg.data.root is not None:
        summary["data_root"] = str(dataset.root)
    elif not run.selected:
        name = f"{name}_{run.checkpoint}"
    if cfg.stand_in_channel is not None:
        summary["stand_in_channel"] = cfg.stand_in_channel
        name = f"{name}_channel{cfg.stand_in_channel}_only"
    if given is not None:
        summary.update(checkpoint=None, precision=None, predictions=str(given.folder))
        name = f"{name}_given_{given.folder.name}"
    out_dir = results_dir(runs) / "evaluation" / name
    write_evaluation(out_dir, summary, rows)
    summary["written_to"] = str(out_dir)
    return summary


def _given_predictions(
    cfg: EvaluateConfig, dataset: DatasetConfig, spec
) -> GivenPredictions | None:
    if cfg.predictions is None:
        return None
    folder = Path(cfg.predictions).expanduser()
    if not folder.is_dir():
        raise ConfigError(
            f"predictions={cfg.predictions}: no such folder; give the folder of predicted masks."
        )
    if cfg.tta != "none" or cfg.stand_in_channel is not None:
        raise ConfigError(
            "predictions=<folder> scores masks made elsewhere: tta and stand_in_channel "
            "change a model's predictions; leave them unset."
        )
    return GivenPredictions(folder.resolve(), spec, dataset.num_classes)


def labelled_data(dataset: DatasetConfig, data: LabelledDataConfig) -> DatasetConfig:
    """The run's dataset config over new labelled files: its classes, colours and reading,
    the new folder's layout."""
    root = Path(data.root).expanduser()
    if not root.is_dir():
        raise DataError(f"data.root {root} is not a folder; give a folder of images/ and masks/.")
    return replace(
        dataset,
        root=str(root),
        layout="flat",
        images_dir=data.images_dir,
        masks_dir=data.masks_dir,
        mask_suffix=data.mask_suffix,
        group_regex=data.group_regex or dataset.group_regex,
    )


def labelled_name(data: LabelledDataConfig) -> str:
    """The folder name of an evaluation of new data; never one of the run's own splits."""
    name = data.name or Path(data.root).expanduser().resolve().name
    if name in SPLITS or not name or "/" in name:
        raise ConfigError(
            f"data.name={name!r} would mix new data with the run's own evaluations; "
            f"set data.name to another folder name (not one of {', '.join(SPLITS)})."
        )
    return name
