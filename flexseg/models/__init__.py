"""Segmentation models written with keras.layers and keras.ops only."""

from flexseg.models.flex_unet import FlexUNet
from flexseg.models.flops import forward_flops

__all__ = ["FlexUNet", "forward_flops"]
