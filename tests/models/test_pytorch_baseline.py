"""The hand-written PyTorch baseline of the benchmark is the same network as FlexUNet."""

from __future__ import annotations

import pytest

from benchmarks.pytorch_flexunet import TorchFlexUNet
from flexseg.models import FlexUNet

PRESETS = [(128, 3, 5), (64, 9, 4)]  # (size, base_kernels, num_layers); "medium" is (256, 9, 6)


@pytest.mark.parametrize(("size", "kernels", "layers"), PRESETS)
def test_same_parameter_count_and_output_shape(size, kernels, layers):
    import torch

    keras_model = FlexUNet((size, size, 3), 2, 16, kernels, layers, normalization="none")
    torch_model = TorchFlexUNet(3, 2, 16, kernels, layers)
    assert sum(p.numel() for p in torch_model.parameters()) == keras_model.count_params()
    out = torch_model(torch.zeros(1, 3, size, size))
    assert tuple(out.shape) == (1, 2, size, size)


def test_small_preset_has_the_published_parameter_count():
    assert sum(p.numel() for p in TorchFlexUNet(3, 2, 16, 3, 5).parameters()) == 1_941_122


@pytest.mark.once
def test_the_3d_baseline_is_the_3d_flexunet_of_the_hippocampus_recipe():
    import torch

    from benchmarks.pytorch_unet3d import TorchUNet3D

    keras_model = FlexUNet(
        (40, 56, 40, 1), 3, 16, num_layers=4, normalization="instance", spatial_dims=3
    )
    torch_model = TorchUNet3D(1, 3, 16, 4)
    assert sum(p.numel() for p in torch_model.parameters()) == keras_model.count_params()
    assert keras_model.count_params() == 1_401_299  # the recipe's model, as trained
    assert tuple(torch_model(torch.zeros(1, 1, 16, 16, 8)).shape) == (1, 3, 16, 16, 8)
