from __future__ import annotations

import keras
import numpy as np
import pytest

from flexseg.config import loss_schema
from flexseg.errors import ConfigError
from flexseg.losses import (
    LOSSES,
    CrossEntropyDice,
    TverskyLoss,
    build_loss,
    categorical_crossentropy,
    ce_dice_loss,
    focal_crossentropy,
    loss_class,
    soft_dice_loss,
    tversky_loss,
)
from tests.helpers import gradient, numeric_gradient

# One image of 1 x 2 pixels, 2 classes: pixel 0 is background, pixel 1 is foreground.
Y_TRUE = np.array([[[[1.0, 0.0], [0.0, 1.0]]]], np.float32)  # (1, 1, 2, 2)
Y_PRED = np.array([[[[0.8, 0.2], [0.4, 0.6]]]], np.float32)


def value(x) -> float:
    return float(np.mean(keras.ops.convert_to_numpy(x)))


def test_crossentropy_value():
    expected = -(np.log(0.8) + np.log(0.6)) / 2
    assert value(categorical_crossentropy(Y_TRUE, Y_PRED)) == pytest.approx(expected, rel=1e-5)


def test_class_weights_scale_each_pixel_by_its_true_class():
    expected = -(1.0 * np.log(0.8) + 3.0 * np.log(0.6)) / 2
    got = value(categorical_crossentropy(Y_TRUE, Y_PRED, [1.0, 3.0]))
    assert got == pytest.approx(expected, rel=1e-5)


def test_soft_dice_over_foreground_only_and_with_background():
    # Foreground: tp = 0.6, fp = 0.2, fn = 0.4.
    fg = 1 - (2 * 0.6 + 1) / (2 * 0.6 + 0.2 + 0.4 + 1)
    assert value(soft_dice_loss(Y_TRUE, Y_PRED, False, 1.0)) == pytest.approx(fg, rel=1e-5)
    # Background: tp = 0.8, fp = 0.4, fn = 0.2.
    bg = 1 - (2 * 0.8 + 1) / (2 * 0.8 + 0.4 + 0.2 + 1)
    both = value(soft_dice_loss(Y_TRUE, Y_PRED, include_background=True, smooth=1.0))
    assert both == pytest.approx((fg + bg) / 2, rel=1e-5)


def test_tversky_weights_false_negatives():
    expected = 1 - (0.6 + 1) / (0.6 + 0.3 * 0.2 + 0.7 * 0.4 + 1)
    assert value(tversky_loss(Y_TRUE, Y_PRED, 0.3, 0.7, False, 1.0)) == pytest.approx(
        expected, rel=1e-5
    )
    # With alpha = beta = 0.5 (and no smoothing), Tversky is Dice.
    assert value(tversky_loss(Y_TRUE, Y_PRED, 0.5, 0.5, False, smooth=1e-7)) == pytest.approx(
        value(soft_dice_loss(Y_TRUE, Y_PRED, False, smooth=1e-7)), rel=1e-4
    )


def test_focal_down_weights_easy_pixels():
    expected = -(0.2**2 * np.log(0.8) + 0.4**2 * np.log(0.6)) / 2
    assert value(focal_crossentropy(Y_TRUE, Y_PRED, 2.0)) == pytest.approx(expected, rel=1e-5)
    assert value(focal_crossentropy(Y_TRUE, Y_PRED, 0.0)) == pytest.approx(
        value(categorical_crossentropy(Y_TRUE, Y_PRED)), rel=1e-5
    )


def test_ce_dice_is_the_sum_and_logits_match_probabilities():
    total = CrossEntropyDice()(Y_TRUE, Y_PRED)
    dice = value(soft_dice_loss(Y_TRUE, Y_PRED, False, 1.0))
    parts = value(categorical_crossentropy(Y_TRUE, Y_PRED)) + dice
    assert value(total) == pytest.approx(parts, rel=1e-5)
    assert value(ce_dice_loss(Y_TRUE, Y_PRED, None, 1.0, False, 1.0)) == pytest.approx(parts)
    logits = np.log(Y_PRED)
    from_logits = CrossEntropyDice(from_logits=True)(Y_TRUE, logits)
    assert value(from_logits) == pytest.approx(value(total), rel=1e-4)


@pytest.mark.parametrize("kind", sorted(LOSSES))
def test_gradients_match_finite_differences(kind):
    loss = loss_class(kind)(from_logits=True)
    rng = np.random.default_rng(0)
    y_true = np.eye(2, dtype=np.float32)[rng.integers(0, 2, (2, 3, 3))]
    logits = rng.normal(size=(2, 3, 3, 2)).astype(np.float32)

    def fn(x):
        return loss(y_true, x)

    analytic = gradient(fn, logits)
    numeric = numeric_gradient(fn, logits.astype(np.float64).astype(np.float32), eps=1e-2)
    np.testing.assert_allclose(analytic, numeric, atol=2e-3)
    # Raising the true class's logit lowers every loss.
    assert np.all(np.sum(analytic * y_true, axis=-1) <= 1e-6)


def test_perfect_prediction_has_zero_dice_loss():
    assert value(soft_dice_loss(Y_TRUE, Y_TRUE, False, smooth=1e-6)) == pytest.approx(0.0, abs=1e-5)


def test_a_loss_is_built_from_its_config_and_round_trips():
    loss = build_loss(loss_schema("tversky")(alpha=0.2, beta=0.8), 2, from_logits=True)
    assert isinstance(loss, TverskyLoss) and (loss.alpha, loss.beta) == (0.2, 0.8)
    assert loss.name == "tversky" and loss.from_logits
    revived = TverskyLoss.from_config(loss.get_config())
    assert revived.get_config() == loss.get_config()


def test_bad_loss_configs_name_the_key():
    with pytest.raises(ConfigError, match="loss.name must be one of .*'ce_dice'"):
        loss_class("dcie")
    with pytest.raises(ConfigError, match="loss.class_weights has 1 values but there are 2"):
        build_loss(loss_schema("ce")(class_weights=[1.0]), 2)
