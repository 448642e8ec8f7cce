"""Augmentation: albumentations pipelines that move image and mask together."""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import albumentations as A
import numpy as np
from albumentations.core.type_definitions import Targets

from flexseg.errors import ConfigError

# Transforms that swap height and width: only for square images.
SWAPS_AXES = {"RandomRotate90", "Transpose", "D4", "SquareSymmetry"}


class Mirror3D(A.Transform3D):
    """Mirrors a patch along each of `axes` with probability `axis_p`, each axis drawn on
    its own (nnU-Net's mirroring; albumentations' flips act on a patch's (y, z) planes only).

    Args:
        axes: the axes of (x, y, z) that may be mirrored.
        axis_p: the probability of mirroring each of them.
        p: the probability of applying the transform at all.
    """

    _targets = (Targets.VOLUME, Targets.MASK3D)

    def __init__(self, axes: Sequence[int] = (0, 1, 2), axis_p: float = 0.5, p: float = 1.0):
        super().__init__(p=p)
        if not axes or any(a not in (0, 1, 2) for a in axes) or len(set(axes)) < len(axes):
            raise ValueError(f"axes must be distinct axes among 0, 1, 2. Received: {axes}")
        if not 0 <= axis_p <= 1:
            raise ValueError(f"axis_p must be in [0, 1]. Received: {axis_p}")
        self.axes, self.axis_p = tuple(axes), axis_p

    def get_params(self) -> dict[str, Any]:
        return {"flipped": tuple(a for a in self.axes if self.py_random.random() < self.axis_p)}

    def apply_to_volume(self, volume: np.ndarray, flipped: tuple[int, ...], **params: Any):
        return np.flip(volume, flipped) if flipped else volume

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("axes", "axis_p")


# flexseg's own transforms, named in augment.transforms like albumentations' classes
OWN_TRANSFORMS = {"Mirror3D": Mirror3D}


def build_augmentation(
    transforms: Sequence[Mapping] | None, image_size: Sequence[int] | None = None
) -> A.Compose | None:
    """An albumentations `Compose` from a list of `{name: <Transform>, <argument>: ...}`.

    Spatial transforms resample masks with nearest neighbour (albumentations' default for
    `mask_interpolation`), so class ids never blend; pixel-level transforms such as
    `RandomBrightnessContrast` touch the image only. Images reach the pipeline as float32 in
    [0, 1] and masks as uint8 class ids.

    Example:
    >>> build_augmentation([{"name": "HorizontalFlip", "p": 0.5},
    ...                     {"name": "Affine", "rotate": [-15, 15], "p": 0.5}])

    Args:
        transforms: the `augment.transforms` list.
        image_size: (height, width) of the images, or (x, y, z) of 3D training's patches,
            to refuse transforms that would swap the axes of a non-square image or a
            non-cubic patch and break batching (a 2D transform acts on each (y, z) plane of
            a patch, albumentations' (height, width)).

    Returns:
        The pipeline, or None for an empty list (no augmentation).
    """
    if not transforms:
        return None
    steps = []
    for i, spec in enumerate(transforms):
        spec = dict(spec)
        name = spec.pop("name", None)
        transform = None
        if isinstance(name, str):
            transform = OWN_TRANSFORMS.get(name, getattr(A, name, None))
        if not (isinstance(transform, type) and issubclass(transform, A.BasicTransform)):
            raise ConfigError(
                f"augment.transforms[{i}].name={name!r} is not an albumentations transform; "
                "use a class name such as HorizontalFlip, Affine or RandomBrightnessContrast "
                f"(or flexseg's {', '.join(OWN_TRANSFORMS)})."
            )
        if name in OWN_TRANSFORMS and (image_size is None or len(image_size) != 3):
            raise ConfigError(
                f"augment.transforms[{i}] ({name}) acts on 3D patches only; set "
                "dataset.patch_size (3D training) or remove it."
            )
        if image_size is not None and len(image_size) == 3:
            cubic = name == "CubicSymmetry"
            if (cubic and len(set(image_size)) > 1) or (
                name in SWAPS_AXES and image_size[1] != image_size[2]
            ):
                shape = "cubic" if cubic else "with equal y and z"
                raise ConfigError(
                    f"augment.transforms[{i}] ({name}) swaps axes of the patches, but they are "
                    f"{list(image_size)} (x, y, z); use it with a dataset.patch_size {shape} "
                    "only, or remove it."
                )
        elif name in SWAPS_AXES and image_size is not None and image_size[0] != image_size[1]:
            raise ConfigError(
                f"augment.transforms[{i}] ({name}) swaps height and width, but the images are "
                f"{image_size[0]}x{image_size[1]} (height x width); use it with square "
                "dataset.image_size only, or remove it."
            )
        if "mask_interpolation" in spec and spec["mask_interpolation"] != 0:
            raise ConfigError(
                f"augment.transforms[{i}] ({name}): mask_interpolation must stay 0 (nearest) "
                "so that mask class ids are not blended."
            )
        allowed = set(inspect.signature(transform.__init__).parameters) - {"self"}
        unknown = sorted(set(spec) - allowed)
        if unknown:
            raise ConfigError(
                f"augment.transforms[{i}] ({name}): unknown argument(s) {unknown}; "
                f"{name} takes {sorted(allowed - {'args', 'kwargs'})}."
            )
        spec = {k: tuple(v) if isinstance(v, list) else v for k, v in spec.items()}
        try:
            steps.append(transform(**spec))
        except (TypeError, ValueError) as error:
            raise ConfigError(f"augment.transforms[{i}] ({name}): {error}") from error
    return A.Compose(steps, strict=True)
