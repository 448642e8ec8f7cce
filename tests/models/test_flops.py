from __future__ import annotations

import pytest

from flexseg.models import FlexUNet, forward_flops


def test_forward_flops_matches_a_hand_count():
    # 8x8x1 input, base 2 filters, 3x3 kernels, 2 levels, 3 classes.
    model = FlexUNet(input_shape=(8, 8, 1), num_classes=3, base_filters=2, num_layers=2)
    hand = (
        64 * 9 * 1 * 2  # enc0_conv1: 8x8 positions, 3x3 kernel, 1 -> 2 channels
        + 64 * 9 * 2 * 2  # enc0_conv2
        + 16 * 9 * 2 * 4  # enc1_conv1 at 4x4: 2 -> 4
        + 16 * 9 * 4 * 4  # enc1_conv2
        + 16 * 4 * 4 * 2  # dec0_up: each of 4x4 inputs, 2x2 kernel, 4 -> 2
        + 64 * 9 * 4 * 2  # dec0_conv1 on the concatenation: 4 -> 2
        + 64 * 9 * 2 * 2  # dec0_conv2
        + 64 * 1 * 2 * 3  # head
    )
    assert forward_flops(model) == 2 * hand


def test_forward_flops_needs_a_fixed_size():
    with pytest.raises(ValueError, match="fixed input size"):
        forward_flops(FlexUNet(input_shape=(None, None, 1), num_layers=2, base_filters=2))
