"""Augmentation: albumentations pipelines that move image and mask together."""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence

import albumentations as A

from flexseg.errors import ConfigError

# Transforms that swap height and width: only for square images.
SWAPS_AXES = {"RandomRotate90", "Transpose", "D4", "SquareSymmetry"}


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
        transform = getattr(A, name, None) if isinstance(name, str) else None
        if not (isinstance(transform, type) and issubclass(transform, A.BasicTransform)):
            raise ConfigError(
                f"augment.transforms[{i}].name={name!r} is not an albumentations transform; "
                "use a class name such as HorizontalFlip, Affine or RandomBrightnessContrast."
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
