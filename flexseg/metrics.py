"""Segmentation metrics: statistics first (per-class TP, FP, FN), then Dice, IoU, accuracy.

Streaming Keras metrics accumulate the counts over every pixel seen (micro averages); the
numpy functions serve evaluation per image and per volume.

What Dice means when a class is absent: if neither the truth nor the prediction holds a
class, its Dice and IoU are 1.0 (nothing to find, nothing found); if only one of them holds
it, they are 0.0. `fg_dice` is the mean of the foreground classes' Dice (class 0 is the
background). Pixel accuracy is reported as `pixel_accuracy` and never called Dice: on a
slice that is 99% background it is 0.99 for a model that finds nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import keras
import numpy as np
from keras import ops
from scipy import ndimage

KINDS = ("fg_dice", "dice", "iou", "pixel_accuracy")


def confusion_counts(y_true, y_pred, num_classes: int):
    """Per-class (tp, fp, fn) of one-hot truth and class scores (B, H, W, K) or
    (B, X, Y, Z, K), in keras.ops."""
    true_1h = ops.cast(y_true, "float32")  # already one-hot
    pred_1h = ops.one_hot(ops.argmax(y_pred, axis=-1), num_classes, dtype="float32")
    axes = tuple(range(len(true_1h.shape) - 1))  # batch and space
    tp = ops.sum(true_1h * pred_1h, axis=axes)
    return tp, ops.sum(pred_1h, axis=axes) - tp, ops.sum(true_1h, axis=axes) - tp


def dice_from_counts(tp, fp, fn):
    """Dice per class from counts (keras.ops or numpy); 1.0 where truth and prediction are empty."""
    denominator = 2.0 * tp + fp + fn
    return ops.where(denominator > 0, 2.0 * tp / ops.maximum(denominator, 1.0), 1.0)


def iou_from_counts(tp, fp, fn):
    """IoU per class from counts; 1.0 where truth and prediction are empty."""
    denominator = tp + fp + fn
    return ops.where(denominator > 0, tp / ops.maximum(denominator, 1.0), 1.0)


@keras.saving.register_keras_serializable(package="flexseg")
class ConfusionMetric(keras.metrics.Metric):
    """A metric derived from per-class TP/FP/FN accumulated over every pixel seen.

    Args:
        num_classes: classes of the one-hot targets.
        kind: `"fg_dice"` (mean Dice of classes 1..K-1), `"dice"` or `"iou"` of `class_id`,
            or `"pixel_accuracy"`.
        class_id: the class for `"dice"` and `"iou"`.
        name: defaults to `fg_dice`, `dice_class_<id>`, `iou_class_<id>`, `pixel_accuracy`.
    """

    def __init__(
        self,
        num_classes: int,
        kind: str = "fg_dice",
        class_id: int | None = None,
        name: str | None = None,
        **kwargs,
    ):
        if kind not in KINDS:
            raise ValueError(f"`kind` must be one of {KINDS}. Received: kind={kind!r}")
        if kind in ("dice", "iou") and not (
            isinstance(class_id, int) and 0 <= class_id < num_classes
        ):
            raise ValueError(
                f"`class_id` must be in 0..{num_classes - 1} for kind={kind!r}. "
                f"Received: class_id={class_id!r}"
            )
        default = f"{kind}_class_{class_id}" if kind in ("dice", "iou") else kind
        super().__init__(name=name or default, **kwargs)
        self.num_classes = num_classes
        self.kind = kind
        self.class_id = class_id
        shape = (num_classes,)
        self.tp = self.add_variable(shape=shape, initializer="zeros", name="tp")
        self.fp = self.add_variable(shape=shape, initializer="zeros", name="fp")
        self.fn = self.add_variable(shape=shape, initializer="zeros", name="fn")

    def update_state(self, y_true, y_pred, sample_weight=None):
        tp, fp, fn = confusion_counts(y_true, y_pred, self.num_classes)
        self.tp.assign_add(tp)
        self.fp.assign_add(fp)
        self.fn.assign_add(fn)

    def result(self):
        tp, fp, fn = self.tp.value, self.fp.value, self.fn.value
        if self.kind == "pixel_accuracy":
            # Every pixel is a TP of its true class or an FN of it: the sum is the total.
            return ops.sum(tp) / ops.maximum(ops.sum(tp) + ops.sum(fn), 1.0)
        if self.kind == "iou":
            return iou_from_counts(tp, fp, fn)[self.class_id]
        dice = dice_from_counts(tp, fp, fn)
        if self.kind == "dice":
            return dice[self.class_id]
        return ops.mean(dice[1:])

    def reset_state(self):
        for variable in (self.tp, self.fp, self.fn):
            variable.assign(ops.zeros_like(variable.value))

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "kind": self.kind,
            "class_id": self.class_id,
        }


def segmentation_metrics(num_classes: int) -> list[ConfusionMetric]:
    """The metrics flexseg trains with: fg_dice, the Dice of each foreground class when there
    are several, and pixel accuracy. (IoU and the rest come with evaluation: every metric
    costs an argmax over the batch, about 3% of a training step each on CPU.)"""
    metrics = [ConfusionMetric(num_classes, "fg_dice")]
    if num_classes > 2:
        metrics += [ConfusionMetric(num_classes, "dice", c) for c in range(1, num_classes)]
    return metrics + [ConfusionMetric(num_classes, "pixel_accuracy")]


# numpy, for evaluation ------------------------------------------------------------------


def counts_np(truth: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """(K, 3) array of tp, fp, fn per class for two index masks of the same shape."""
    truth, pred = truth.ravel().astype(np.int64), pred.ravel().astype(np.int64)
    joint = np.bincount(truth * num_classes + pred, minlength=num_classes**2)
    matrix = joint.reshape(num_classes, num_classes)  # rows: truth, columns: prediction
    tp = np.diag(matrix)
    return np.stack([tp, matrix.sum(0) - tp, matrix.sum(1) - tp], axis=1)


def dice_np(counts: np.ndarray) -> np.ndarray:
    """Dice per class from (K, 3) counts; 1.0 where truth and prediction are both empty."""
    tp, fp, fn = counts[:, 0], counts[:, 1], counts[:, 2]
    denominator = 2 * tp + fp + fn
    return np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1), 1.0)


def fg_dice_np(counts: np.ndarray) -> float:
    """`fg_dice` from (K, 3) counts: the mean Dice of the foreground classes."""
    return float(dice_np(counts)[1:].mean())


def iou_np(counts: np.ndarray) -> np.ndarray:
    """IoU per class from (K, 3) counts; 1.0 where truth and prediction are both empty."""
    tp, fp, fn = counts[:, 0], counts[:, 1], counts[:, 2]
    denominator = tp + fp + fn
    return np.where(denominator > 0, tp / np.maximum(denominator, 1), 1.0)


def surface_distances(
    truth: np.ndarray, pred: np.ndarray, spacing: Sequence[float] | None = None
) -> np.ndarray:
    """Distances from each boundary pixel of either mask to the other's boundary: in pixels,
    or in millimetres given `spacing`, the size of a pixel (voxel) along each axis.

    Both masks are boolean arrays of the same shape, 2-D (a slice) or 3-D (a volume of
    stacked slices; without `spacing` the slice step counts as one pixel), and non-empty. A
    boundary pixel is one of the mask with a face neighbour outside it.
    """

    def boundary(mask):
        return mask & ~ndimage.binary_erosion(mask, border_value=0)

    # Only the box around both masks (one pixel wider) matters: every boundary pixel lies in
    # it, so the distances within it are exact, and a small lesion costs little in a volume.
    either = np.argwhere(truth | pred)
    low, high = np.maximum(either.min(0) - 1, 0), either.max(0) + 2
    box = tuple(slice(a, b) for a, b in zip(low, high, strict=True))
    truth, pred = truth[box], pred[box]

    bt, bp = boundary(truth), boundary(pred)
    to_truth = ndimage.distance_transform_edt(~bt, sampling=spacing)
    to_pred = ndimage.distance_transform_edt(~bp, sampling=spacing)
    return np.concatenate([to_truth[bp], to_pred[bt]])


def lesion_counts(truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Lesion-wise detection: [detected, missed, false] for two boolean masks of one shape.

    A lesion is a connected component of the truth (its pixels touch by a face: 4 neighbours
    in a 2-D slice, 6 in a 3-D volume of stacked slices). It is detected when the prediction
    covers any of its pixels, else missed; a connected component of the prediction that
    touches no lesion is a false one.
    """
    if not truth.any() and not pred.any():
        return np.zeros(3, np.int64)
    either = np.argwhere(truth | pred)  # only the box around both masks matters
    box = tuple(slice(a, b + 1) for a, b in zip(either.min(0), either.max(0), strict=True))
    truth, pred = truth[box], pred[box]
    lesions, found = ndimage.label(truth)
    blobs, predicted = ndimage.label(pred)
    overlap = truth & pred
    detected = np.count_nonzero(np.unique(lesions[overlap]))
    touching = np.count_nonzero(np.unique(blobs[overlap]))
    return np.array([detected, found - detected, predicted - touching], np.int64)


# Lesion sizes by which detection is reported, in pixels (voxels of a stacked volume): a
# bin runs from one bound up to the next.
LESION_SIZE_BOUNDS = (1, 100, 1000, 10000)


def lesion_sizes(truth: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each lesion's size in pixels and whether it is detected, lesions and detection as in
    `lesion_counts`: (sizes, detected), both of shape (lesions,)."""
    lesions, found = ndimage.label(truth)
    sizes = np.bincount(lesions.ravel(), minlength=found + 1)[1:]
    detected = np.zeros(found + 1, bool)
    detected[lesions[truth & pred]] = True
    return sizes.astype(np.int64), detected[1:]


def detection_by_size(
    found: Iterable[tuple[np.ndarray, np.ndarray]],
) -> dict[str, dict[str, int]]:
    """{"1-99 px": {"lesions": n, "detected": d}, ...}: the lesions of every (sizes, detected)
    pair of `lesion_sizes` and the detected ones, per size bin of `LESION_SIZE_BOUNDS` (the
    last bin open), every bin present."""
    sizes, detected = np.zeros(0, np.int64), np.zeros(0, bool)
    for s, d in found:
        sizes, detected = np.concatenate([sizes, s]), np.concatenate([detected, d])
    bins = np.searchsorted(LESION_SIZE_BOUNDS, sizes, side="right") - 1
    out = {}
    for k, low in enumerate(LESION_SIZE_BOUNDS):
        high = LESION_SIZE_BOUNDS[k + 1] - 1 if k + 1 < len(LESION_SIZE_BOUNDS) else None
        name = f"{low}-{high} px" if high else f">={low} px"
        out[name] = {"lesions": int((bins == k).sum()), "detected": int(detected[bins == k].sum())}
    return out


def lesion_f1(counts: np.ndarray) -> float:
    """F1 of lesion detection from [detected, missed, false]; 1.0 with no lesion and no
    false one."""
    detected, missed, false = (int(c) for c in counts)
    if detected + missed + false == 0:
        return 1.0
    return 2 * detected / (2 * detected + missed + false)


def hd95(truth: np.ndarray, pred: np.ndarray, spacing: Sequence[float] | None = None) -> float:
    """95th percentile symmetric Hausdorff distance of two boolean masks: the 95th
    percentile of `surface_distances` (both directions pooled), in pixels, or in millimetres
    given `spacing`.

    0.0 when truth and prediction are both empty; NaN when only one of them is (undefined,
    and left out of means).
    """
    if not truth.any() and not pred.any():
        return 0.0
    if not truth.any() or not pred.any():
        return float("nan")
    return float(np.percentile(surface_distances(truth, pred, spacing), 95))


def mean_surface_distance(
    truth: np.ndarray, pred: np.ndarray, spacing: Sequence[float] | None = None
) -> float:
    """The mean of `surface_distances` (both directions pooled; the average symmetric
    surface distance), in pixels or, given `spacing`, millimetres; empty masks as `hd95`."""
    if not truth.any() and not pred.any():
        return 0.0
    if not truth.any() or not pred.any():
        return float("nan")
    return float(surface_distances(truth, pred, spacing).mean())
