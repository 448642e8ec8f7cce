"""A 3D U-Net written by hand in PyTorch: what a user would write instead of a 3D FlexUNet.

The architecture of `flexseg.models.FlexUNet(spatial_dims=3, normalization="instance")`:
two 3x3x3 convolutions a level (no bias), each followed by instance normalisation (a scale
and a shift per channel) and ReLU, 2x2x2 max-pooling, 2x2x2 stride-2 transposed
convolutions, skip concatenation, a 1x1x1 head; the parameter counts are equal (the benchmark
checks it).
"""

from __future__ import annotations

import torch
from torch import nn


def conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    layers = []
    for channels in (in_channels, out_channels):
        layers += [
            nn.Conv3d(channels, out_channels, 3, padding=1, bias=False),
            nn.InstanceNorm3d(out_channels, affine=True),
            nn.ReLU(inplace=True),
        ]
    return nn.Sequential(*layers)


class TorchUNet3D(nn.Module):
    def __init__(self, channels=1, num_classes=3, base_filters=16, num_layers=4):
        super().__init__()
        filters = [base_filters * 2**i for i in range(num_layers)]
        self.encoders = nn.ModuleList()
        previous = channels
        for f in filters:
            self.encoders.append(conv_block(previous, f))
            previous = f
        self.ups = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for level in range(num_layers - 2, -1, -1):
            self.ups.append(nn.ConvTranspose3d(filters[level + 1], filters[level], 2, stride=2))
            self.decoders.append(conv_block(2 * filters[level], filters[level]))
        self.head = nn.Conv3d(filters[0], num_classes, 1)
        self.pool = nn.MaxPool3d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for level, encoder in enumerate(self.encoders):
            if level > 0:
                x = self.pool(x)
            x = encoder(x)
            skips.append(x)
        for up, decoder, skip in zip(self.ups, self.decoders, reversed(skips[:-1]), strict=True):
            x = decoder(torch.cat([up(x), skip], dim=1))
        return self.head(x)  # logits (B, K, X, Y, Z)


def ce_dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy plus soft Dice over the foreground classes, as flexseg's ce_dice."""
    ce = nn.functional.cross_entropy(logits, target)
    probs = logits.softmax(1)[:, 1:]
    onehot = nn.functional.one_hot(target, logits.shape[1]).permute(0, 4, 1, 2, 3)[:, 1:]
    axes = (0, 2, 3, 4)
    inter = (probs * onehot).sum(axes)
    total = probs.sum(axes) + onehot.sum(axes)
    dice = (2 * inter + 1.0) / (total + 1.0)
    return ce + (1 - dice).mean()
