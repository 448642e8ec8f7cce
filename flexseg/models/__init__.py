"""Segmentation models written with keras.layers and keras.ops only.

The option lists here are read by the config schema before Keras starts (the commands set the
process up first), so the models themselves are imported on first use.
"""

import importlib

# The models a config can name, by their option in conf/model/; `_target_` picks the class.
MODELS = {"flex_unet": "flexseg.models.FlexUNet"}
INFERENCE_DTYPES = ("float32", "bfloat16", "float16")
# what evaluate and infer predict in; auto: 16 bits where trainer.precision=auto trains in them
INFERENCE_PRECISIONS = (*INFERENCE_DTYPES, "auto")

_LAZY = {"FlexUNet": "flex_unet", "forward_flops": "flops"}


def register_models() -> None:
    """Imports every model of `MODELS`, which registers it with Keras: a checkpoint that names
    one then loads."""
    for target in MODELS.values():
        module, _, name = target.rpartition(".")
        getattr(importlib.import_module(module), name)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f"flexseg.models.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'flexseg.models' has no attribute {name!r}")


__all__ = [
    "INFERENCE_DTYPES",
    "INFERENCE_PRECISIONS",
    "MODELS",
    "FlexUNet",
    "forward_flops",
    "register_models",
]
