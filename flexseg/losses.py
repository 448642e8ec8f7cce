"""Segmentation losses: a pure function in keras.ops and a thin Loss class per loss, by name.

All functions take one-hot targets `y_true` and class probabilities `y_pred`, both
(B, H, W, K), and every parameter explicitly: the defaults are those of the classes, which
are the config's; set `from_logits=True` on the classes for models with `output="logits"`.
Soft Dice and Tversky are computed over the whole batch per class ("batch Dice"), which is
stable when many images hold no foreground.

Adding a loss is one function, one class registered under a name, and
`conf/loss/<name>.yaml`: the class's constructor arguments are its config keys, their
defaults the defaults.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence

import keras
from keras import ops

from flexseg.errors import ConfigError

EPSILON = 1e-7
LOSSES: dict[str, type[SegmentationLoss]] = {}


def categorical_crossentropy(y_true, y_pred, class_weights: Sequence[float] | None = None):
    """Pixel-wise cross-entropy, optionally weighted per class; (B,) mean over pixels.

    With class weights each pixel's term is multiplied by the weight of its true class.
    """
    y_true, y_pred = _tensors(y_true, y_pred)
    y_pred = ops.clip(y_pred, EPSILON, 1.0 - EPSILON)
    per_class = -y_true * ops.log(y_pred)  # (B, H, W, K)
    if class_weights is not None:
        per_class = per_class * ops.convert_to_tensor(class_weights, dtype=y_pred.dtype)
    return ops.mean(ops.sum(per_class, axis=-1), axis=_space(y_true))


def focal_crossentropy(y_true, y_pred, gamma: float):
    """Focal loss: cross-entropy scaled by (1 - p_true)**gamma; (B,) mean over pixels."""
    y_true, y_pred = _tensors(y_true, y_pred)
    y_pred = ops.clip(y_pred, EPSILON, 1.0 - EPSILON)
    p_true = ops.sum(y_true * y_pred, axis=-1)  # (B, H, W) or (B, X, Y, Z)
    return ops.mean(-((1.0 - p_true) ** gamma) * ops.log(p_true), axis=_space(y_true))


def soft_dice_loss(y_true, y_pred, include_background: bool, smooth: float):
    """1 - mean soft Dice over classes (foreground only by default); a scalar."""
    y_true, y_pred = _tensors(y_true, y_pred)
    tp, fp, fn = _class_sums(y_true, y_pred)
    dice = (2.0 * tp + smooth) / (2.0 * tp + fp + fn + smooth)
    return 1.0 - ops.mean(_select(dice, include_background))


def tversky_loss(
    y_true, y_pred, alpha: float, beta: float, include_background: bool, smooth: float
):
    """1 - mean Tversky index; `alpha` weighs false positives, `beta` false negatives."""
    y_true, y_pred = _tensors(y_true, y_pred)
    tp, fp, fn = _class_sums(y_true, y_pred)
    index = (tp + smooth) / (tp + alpha * fp + beta * fn + smooth)
    return 1.0 - ops.mean(_select(index, include_background))


def ce_dice_loss(
    y_true,
    y_pred,
    class_weights: Sequence[float] | None,
    dice_weight: float,
    include_background: bool,
    smooth: float,
):
    """Cross-entropy per image plus `dice_weight` x the batch's soft Dice loss; (B,)."""
    dice = soft_dice_loss(y_true, y_pred, include_background, smooth)
    ce = categorical_crossentropy(y_true, y_pred, class_weights)
    return ce + dice_weight * dice * _ones(y_true)


def _tensors(y_true, y_pred):
    return ops.convert_to_tensor(y_true, "float32"), ops.convert_to_tensor(y_pred, "float32")


def _space(y_true) -> tuple[int, ...]:
    """The spatial axes of (B, *space, K) one-hot labels: 2 of images, 3 of volumes."""
    return tuple(range(1, len(y_true.shape) - 1))


def _class_sums(y_true, y_pred):
    axes = (0, *_space(y_true))  # batch and space: one value per class
    tp = ops.sum(y_true * y_pred, axis=axes)
    fp = ops.sum((1.0 - y_true) * y_pred, axis=axes)
    fn = ops.sum(y_true * (1.0 - y_pred), axis=axes)
    return tp, fp, fn


def _select(per_class, include_background: bool):
    return per_class if include_background else per_class[1:]


def _ones(y_true):
    """(B,) ones: spreads a batch-level term over the per-image losses."""
    return ops.ones(ops.shape(y_true)[:1], dtype="float32")


def register_loss(name: str) -> Callable[[type], type]:
    """Class decorator: makes a loss serializable and known to configs as `loss=<name>`."""

    def register(cls: type[SegmentationLoss]) -> type[SegmentationLoss]:
        cls.loss_name = name
        LOSSES[name] = keras.saving.register_keras_serializable(package="flexseg")(cls)
        return cls

    return register


def loss_class(name: str) -> type[SegmentationLoss]:
    """The loss class registered as `name`."""
    if name not in LOSSES:
        raise ConfigError(f"loss.name must be one of {tuple(LOSSES)}. Received: {name!r}")
    return LOSSES[name]


class SegmentationLoss(keras.losses.Loss):
    """Base of flexseg's losses: float32 maths, softmax for logit models, `compute` per loss.

    Args:
        from_logits: the model outputs logits, not probabilities.
        **kwargs: `name`, `reduction` and the rest of `keras.losses.Loss`.
    """

    loss_name = ""

    def __init__(self, from_logits: bool = False, **kwargs):
        kwargs.setdefault("reduction", "sum_over_batch_size")
        kwargs.setdefault("name", self.loss_name)
        super().__init__(**kwargs)
        self.from_logits = from_logits

    def call(self, y_true, y_pred):
        y_pred = ops.cast(y_pred, "float32")
        y_true = ops.cast(y_true, "float32")
        if self.from_logits:
            y_pred = ops.softmax(y_pred, axis=-1)
        return self.compute(y_true, y_pred)

    def compute(self, y_true, y_pred):
        """The (B,) loss of probabilities `y_pred` against one-hot `y_true`."""
        raise NotImplementedError

    def arguments(self) -> dict:
        """The loss's own constructor arguments (its config keys) and their values."""
        names = inspect.signature(type(self).__init__).parameters
        return {n: getattr(self, n) for n in names if n not in ("self", "kwargs")}

    def get_config(self) -> dict:
        return {**super().get_config(), "from_logits": self.from_logits, **self.arguments()}


@register_loss("ce")
class CrossEntropy(SegmentationLoss):
    """Categorical cross-entropy; `class_weights` scales each pixel by its true class.

    Args:
        class_weights: one weight per class scaling each pixel's cross-entropy by its true
            class (e.g. `[1.0, 3.0]`); `None`: equal weights.
    """

    def __init__(self, class_weights: list[float] | None = None, **kwargs):
        super().__init__(**kwargs)
        self.class_weights = list(class_weights) if class_weights is not None else None

    def compute(self, y_true, y_pred):
        return categorical_crossentropy(y_true, y_pred, self.class_weights)


@register_loss("dice")
class DiceLoss(SegmentationLoss):
    """Soft Dice over the batch; `include_background` counts class 0.

    Args:
        include_background: count class 0 in the Dice term too.
        smooth: added to the numerator and denominator of the soft Dice (empty masks score 1).
    """

    def __init__(self, include_background: bool = False, smooth: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.include_background = include_background
        self.smooth = smooth

    def compute(self, y_true, y_pred):
        return _ones(y_true) * soft_dice_loss(y_true, y_pred, self.include_background, self.smooth)


@register_loss("ce_dice")
class CrossEntropyDice(SegmentationLoss):
    """Cross-entropy plus `dice_weight` x soft Dice over the foreground classes.

    Args:
        class_weights: one weight per class scaling each pixel's cross-entropy by its true
            class (e.g. `[1.0, 3.0]`); `None`: equal weights.
        dice_weight: the weight of the soft Dice term beside the cross-entropy.
        include_background: count class 0 in the Dice term too.
        smooth: added to the numerator and denominator of the soft Dice (empty masks score 1).
    """

    def __init__(
        self,
        class_weights: list[float] | None = None,
        dice_weight: float = 1.0,
        include_background: bool = False,
        smooth: float = 1.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.class_weights = list(class_weights) if class_weights is not None else None
        self.dice_weight = dice_weight
        self.include_background = include_background
        self.smooth = smooth

    def compute(self, y_true, y_pred):
        return ce_dice_loss(
            y_true,
            y_pred,
            self.class_weights,
            self.dice_weight,
            self.include_background,
            self.smooth,
        )


@register_loss("focal")
class FocalLoss(SegmentationLoss):
    """Focal cross-entropy: easy pixels down-weighted by (1 - p)**gamma.

    Args:
        gamma: the focusing exponent; 0 is plain cross-entropy.
    """

    def __init__(self, gamma: float = 2.0, **kwargs):
        super().__init__(**kwargs)
        self.gamma = gamma

    def compute(self, y_true, y_pred):
        return focal_crossentropy(y_true, y_pred, self.gamma)


@register_loss("tversky")
class TverskyLoss(SegmentationLoss):
    """Tversky: Dice with `alpha` weighing false positives and `beta` false negatives.

    Args:
        alpha: the weight of false positives.
        beta: the weight of false negatives (above alpha: a missed pixel costs more).
        include_background: count class 0 too.
        smooth: added to the numerator and denominator of the soft Dice (empty masks score 1).
    """

    def __init__(
        self,
        alpha: float = 0.3,
        beta: float = 0.7,
        include_background: bool = False,
        smooth: float = 1.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.alpha = alpha
        self.beta = beta
        self.include_background = include_background
        self.smooth = smooth

    def compute(self, y_true, y_pred):
        index = tversky_loss(
            y_true, y_pred, self.alpha, self.beta, self.include_background, self.smooth
        )
        return _ones(y_true) * index


def build_loss(loss, num_classes: int, from_logits: bool = False) -> SegmentationLoss:
    """The loss a `loss` config section describes (`flexseg.config.loss_schema`).

    Raises:
        ConfigError: class weights that do not give one weight per class.
    """
    arguments = loss.arguments()
    weights = arguments.get("class_weights")
    if weights is not None and len(weights) != num_classes:
        raise ConfigError(
            f"loss.class_weights has {len(weights)} values but there are {num_classes} classes."
        )
    return loss_class(loss.name)(from_logits=from_logits, **arguments)
