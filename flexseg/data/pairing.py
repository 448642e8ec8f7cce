"""Pairing images with masks by file name, never by list position."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from flexseg.errors import DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
# Files that operating systems and tools drop into folders; never data.
IGNORED_NAMES = {"Thumbs.db", "desktop.ini"}
MAX_NAMED = 5


@dataclass(frozen=True)
class Pair:
    """An image file and the mask file of the same stem."""

    image: Path
    mask: Path

    @property
    def name(self) -> str:
        return self.image.stem


def list_images(folder: str | Path, what: str = "image") -> list[Path]:
    """Image files of a folder, sorted by name; any other file is an error that names it."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{what} folder {folder} does not exist; check the dataset path.")
    files, strangers = [], []
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.name in IGNORED_NAMES or path.is_dir():
            continue
        (files if path.suffix.lower() in IMAGE_EXTENSIONS else strangers).append(path)
    if strangers:
        raise DataError(
            f"not an image in {what} folder {folder}: {_named(strangers)} "
            f"(expected {', '.join(IMAGE_EXTENSIONS)}); move such files out of the folder."
        )
    if not files:
        raise DataError(f"{what} folder {folder} holds no images ({', '.join(IMAGE_EXTENSIONS)}).")
    return files


def pair_by_name(image_dir: str | Path, mask_dir: str | Path, mask_suffix: str = "") -> list[Pair]:
    """Pairs each image with the mask of the same stem, in name order.

    A mask may have another extension than its image (`a.jpg` with `a.png`) and may carry a
    suffix (`a.png` with `a_mask.png` for `mask_suffix="_mask"`).

    Args:
        image_dir: folder of images.
        mask_dir: folder of masks.
        mask_suffix: text after the image stem in every mask's stem.

    Raises:
        DataError: naming the images without a mask and the masks without an image.
    """
    images = _by_stem(list_images(image_dir, "image"), "", image_dir)
    masks = _by_stem(list_images(mask_dir, "mask"), mask_suffix, mask_dir)
    lonely_images = sorted(images.keys() - masks.keys())
    lonely_masks = sorted(masks.keys() - images.keys())
    problems = []
    if lonely_images:
        problems.append(
            f"{len(lonely_images)} image(s) without a mask in {mask_dir}: "
            f"{_named([images[s] for s in lonely_images])}"
        )
    if lonely_masks:
        problems.append(
            f"{len(lonely_masks)} mask(s) without an image in {image_dir}: "
            f"{_named([masks[s] for s in lonely_masks])}"
        )
    if problems:
        hint = f" (masks are looked up as <image stem>{mask_suffix}.<ext>)"
        raise DataError("; ".join(problems) + hint)
    return [Pair(images[stem], masks[stem]) for stem in sorted(images)]


def _by_stem(files: list[Path], suffix: str, folder) -> dict[str, Path]:
    by_stem: dict[str, Path] = {}
    for path in files:
        stem = path.stem
        if suffix:
            if not stem.endswith(suffix):
                raise DataError(
                    f"mask {path} does not end in the mask suffix {suffix!r}; rename it or set "
                    "dataset.mask_suffix."
                )
            stem = stem[: -len(suffix)]
        if stem in by_stem:
            raise DataError(
                f"{by_stem[stem].name} and {path.name} in {folder} have the same name "
                "apart from the extension; keep one of them."
            )
        by_stem[stem] = path
    return by_stem


def _named(paths: list[Path]) -> str:
    names = ", ".join(p.name for p in paths[:MAX_NAMED])
    more = len(paths) - MAX_NAMED
    return names + (f" and {more} more" if more > 0 else "")
