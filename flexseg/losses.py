"""Segmentation losses: pure functions in keras.ops, and thin serializable Loss classes.

All functions take one-hot targets `y_true` and class probabilities `y_pred`, both
(B, H, W, K); set `from_logits=True` on the classes for models with `output="logits"`.
Soft Dice and Tversky are computed over the whole batch per class ("batch Dice"), which is
stable when many images hold no foreground.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import keras
from keras import ops

from flexseg.errors import ConfigError

EPSILON = 1e-7
LOSSES = ("ce", "dice", "ce_dice", "focal", "tversky")


def categorical_crossentropy(y_true, y_pred, class_weights: Sequence[float] | None = None):
    """Pixel-wise cross-entropy, optionally weighted per class; (B,) mean over pixels.

    With class weights each pixel's term is multiplied by the weight of its true class.
    """
    y_true, y_pred = _tensors(y_true, y_pred)
    y_pred = ops.clip(y_pred, EPSILON, 1.0 - EPSILON)
    per_class = -y_true * ops.log(y_pred)  # (B, H, W, K)
    if class_weights is not None:
        per_class = per_class * ops.convert_to_tensor(class_weights, dtype=y_pred.dtype)
    return ops.mean(ops.sum(per_class, axis=-1), axis=(1, 2))


def focal_crossentropy(y_true, y_pred, gamma: float = 2.0):
    """Focal loss: cross-entropy scaled by (1 - p_true)**gamma; (B,) mean over pixels."""
    y_true, y_pred = _tensors(y_true, y_pred)
    y_pred = ops.clip(y_pred, EPSILON, 1.0 - EPSILON)
    p_true = ops.sum(y_true * y_pred, axis=-1)  # (B, H, W)
    return ops.mean(-((1.0 - p_true) ** gamma) * ops.log(p_true), axis=(1, 2))


def _tensors(y_true, y_pred):
    return ops.convert_to_tensor(y_true, "float32"), ops.convert_to_tensor(y_pred, "float32")


def _class_sums(y_true, y_pred):
    axes = (0, 1, 2)  # batch and space: one value per class
    tp = ops.sum(y_true * y_pred, axis=axes)
    fp = ops.sum((1.0 - y_true) * y_pred, axis=axes)
    fn = ops.sum(y_true * (1.0 - y_pred), axis=axes)
    return tp, fp, fn


def _select(per_class, include_background: bool):
    return per_class if include_background else per_class[1:]


def soft_dice_loss(y_true, y_pred, include_background: bool = False, smooth: float = 1.0):
    """1 - mean soft Dice over classes (foreground only by default); a scalar."""
    y_true, y_pred = _tensors(y_true, y_pred)
    tp, fp, fn = _class_sums(y_true, y_pred)
    dice = (2.0 * tp + smooth) / (2.0 * tp + fp + fn + smooth)
    return 1.0 - ops.mean(_select(dice, include_background))


def tversky_loss(
    y_true,
    y_pred,
    alpha: float = 0.3,
    beta: float = 0.7,
    include_background: bool = False,
    smooth: float = 1.0,
):
    """1 - mean Tversky index; `alpha` weighs false positives, `beta` false negatives."""
    y_true, y_pred = _tensors(y_true, y_pred)
    tp, fp, fn = _class_sums(y_true, y_pred)
    index = (tp + smooth) / (tp + alpha * fp + beta * fn + smooth)
    return 1.0 - ops.mean(_select(index, include_background))


@keras.saving.register_keras_serializable(package="flexseg")
class SegmentationLoss(keras.losses.Loss):
    """One of flexseg's losses by name, serializable with the model.

    Args:
        kind: `"ce"`, `"dice"`, `"ce_dice"` (CE + `dice_weight` x Dice), `"focal"`,
            `"tversky"`.
        from_logits: the model outputs logits, not probabilities.
        class_weights: per-class weights of the cross-entropy term.
        include_background: count class 0 in Dice and Tversky.
        dice_weight: weight of the Dice term in `"ce_dice"`.
        gamma: focal exponent. alpha, beta: Tversky weights of FP and FN.
        smooth: added to numerator and denominator of Dice and Tversky.
    """

    def __init__(
        self,
        kind: str = "ce_dice",
        from_logits: bool = False,
        class_weights: Sequence[float] | None = None,
        include_background: bool = False,
        dice_weight: float = 1.0,
        gamma: float = 2.0,
        alpha: float = 0.3,
        beta: float = 0.7,
        smooth: float = 1.0,
        name: str | None = None,
        **kwargs,
    ):
        if kind not in LOSSES:
            raise ConfigError(f"`loss.name` must be one of {LOSSES}. Received: {kind!r}")
        kwargs.setdefault("reduction", "sum_over_batch_size")
        super().__init__(name=name or kind, **kwargs)
        self.kind = kind
        self.from_logits = from_logits
        self.class_weights = list(class_weights) if class_weights is not None else None
        self.include_background = include_background
        self.dice_weight = dice_weight
        self.gamma = gamma
        self.alpha = alpha
        self.beta = beta
        self.smooth = smooth

    def call(self, y_true, y_pred):
        y_pred = ops.cast(y_pred, "float32")
        y_true = ops.cast(y_true, "float32")
        if self.from_logits:
            y_pred = ops.softmax(y_pred, axis=-1)
        if self.kind == "focal":
            return focal_crossentropy(y_true, y_pred, self.gamma)
        if self.kind == "ce":
            return categorical_crossentropy(y_true, y_pred, self.class_weights)
        # Batch-level terms, spread over the (B,) per-sample losses.
        ones = ops.ones(ops.shape(y_true)[:1], dtype="float32")
        if self.kind == "tversky":
            return ones * tversky_loss(
                y_true, y_pred, self.alpha, self.beta, self.include_background, self.smooth
            )
        dice = soft_dice_loss(y_true, y_pred, self.include_background, self.smooth)
        if self.kind == "dice":
            return ones * dice
        ce = categorical_crossentropy(y_true, y_pred, self.class_weights)
        return ce + self.dice_weight * dice * ones

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "kind": self.kind,
            "from_logits": self.from_logits,
            "class_weights": self.class_weights,
            "include_background": self.include_background,
            "dice_weight": self.dice_weight,
            "gamma": self.gamma,
            "alpha": self.alpha,
            "beta": self.beta,
            "smooth": self.smooth,
        }


def build_loss(loss: Mapping, num_classes: int, from_logits: bool = False) -> SegmentationLoss:
    """The loss a `loss` config describes."""
    weights = loss.get("class_weights")
    if weights is not None and len(weights) != num_classes:
        raise ConfigError(
            f"loss.class_weights has {len(weights)} values but there are {num_classes} classes."
        )
    return SegmentationLoss(
        kind=loss.get("name", "ce_dice"),
        from_logits=from_logits,
        class_weights=weights,
        include_background=loss.get("include_background", False),
        dice_weight=loss.get("dice_weight", 1.0),
        gamma=loss.get("gamma", 2.0),
        alpha=loss.get("alpha", 0.3),
        beta=loss.get("beta", 0.7),
        smooth=loss.get("smooth", 1.0),
    )
