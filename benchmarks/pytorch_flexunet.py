"""FlexUNet written by hand in PyTorch: what a user would write instead of using flexseg.

The same architecture as `flexseg.models.FlexUNet` (normalization "none": convolutions with
bias, ReLU, 2x2 max-pooling, 2x2 stride-2 transposed convolutions, skip concatenation, a 1x1
head), so the parameter counts are equal; the benchmark checks that they are.
"""

from __future__ import annotations

import torch
from torch import nn


def level_kernel(base_kernels: int, level: int) -> int:
    return max(3, base_kernels - 2 * level)


def conv_block(in_channels: int, out_channels: int, kernel: int) -> nn.Sequential:
    pad = (kernel - 1) // 2
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel, padding=pad),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, kernel, padding=pad),
        nn.ReLU(inplace=True),
    )


class TorchFlexUNet(nn.Module):
    def __init__(self, channels=3, num_classes=2, base_filters=16, base_kernels=3, num_layers=5):
        super().__init__()
        filters = [base_filters * 2**i for i in range(num_layers)]
        self.encoders = nn.ModuleList()
        previous = channels
        for level, f in enumerate(filters):
            self.encoders.append(conv_block(previous, f, level_kernel(base_kernels, level)))
            previous = f
        self.ups = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for level in range(num_layers - 2, -1, -1):
            self.ups.append(nn.ConvTranspose2d(filters[level + 1], filters[level], 2, stride=2))
            self.decoders.append(
                conv_block(2 * filters[level], filters[level], level_kernel(base_kernels, level))
            )
        self.head = nn.Conv2d(filters[0], num_classes, 1)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for level, encoder in enumerate(self.encoders):
            if level > 0:
                x = self.pool(x)
            x = encoder(x)
            skips.append(x)
        for up, decoder, skip in zip(self.ups, self.decoders, reversed(skips[:-1]), strict=True):
            x = decoder(torch.cat([up(x), skip], dim=1))
        return self.head(x)  # logits (B, K, H, W)


def ce_dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy plus soft Dice over the foreground classes, as flexseg's default loss."""
    ce = nn.functional.cross_entropy(logits, target)
    probs = logits.softmax(1)[:, 1:]
    onehot = nn.functional.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2)[:, 1:]
    inter = (probs * onehot).sum((0, 2, 3))
    total = probs.sum((0, 2, 3)) + onehot.sum((0, 2, 3))
    dice = (2 * inter + 1.0) / (total + 1.0)
    return ce + (1 - dice).mean()
