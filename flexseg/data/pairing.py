"""Pairing images with masks by file name, never by list position."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from flexseg.data import readers
from flexseg.data.files import file_kind
from flexseg.errors import DataError

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
        return readers.stem_of(self.image)


def list_images(folder: str | Path, what: str = "image") -> list[Path]:
    """Image files of a folder, sorted by name; anything else in it is an error that names it."""
    files, problems = scan_folder(folder, what)
    if problems:
        raise DataError("; ".join(problems))
    return files


def scan_folder(folder: str | Path, what: str = "image") -> tuple[list[Path], list[str]]:
    """The image files of a folder, sorted by name, and one line per entry that is none.

    Hidden files, files tools drop (Thumbs.db) and subfolders are passed over; a file of
    another extension, or an entry named like an image that is no regular file (a folder,
    a broken link, a pipe), is a problem that names it.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return [], [f"{what} folder {folder} does not exist; check the dataset path."]
    files, strangers, problems = [], [], []
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.name in IGNORED_NAMES:
            continue
        is_image = readers.suffix_of(path) is not None
        kind = file_kind(path)
        if is_image and kind != "file":
            problems.append(f"{what} {path} is {kind}; put the {what} file there or remove it.")
        elif is_image:
            files.append(path)
        elif kind != "a folder, not a file":
            strangers.append(path)
    if strangers:
        problems.append(
            f"not an image in {what} folder {folder}: {named(strangers)} "
            f"(expected {', '.join(readers.suffixes())}); move such files out of the folder."
        )
    if not files and not problems:
        problems.append(
            f"{what} folder {folder} holds no images ({', '.join(readers.suffixes())})."
        )
    return files, problems


def pair_by_name(image_dir: str | Path, mask_dir: str | Path, mask_suffix: str = "") -> list[Pair]:
    """Pairs each image with the mask of the same stem, in name order.

    A mask may have another extension than its image (`a.jpg` with `a.png`) and may carry a
    suffix (`a.png` with `a_mask.png` for `mask_suffix="_mask"`).

    Args:
        image_dir: folder of images.
        mask_dir: folder of masks.
        mask_suffix: text after the image stem in every mask's stem.

    Raises:
        DataError: naming the images without a mask, the masks without an image, and every
            entry of the folders that is no image file (`find_pairs` lists them instead).
    """
    pairs, problems = find_pairs(image_dir, mask_dir, mask_suffix)
    if problems:
        raise DataError("; ".join(problems))
    return pairs


def find_pairs(
    image_dir: str | Path, mask_dir: str | Path, mask_suffix: str = ""
) -> tuple[list[Pair], list[str]]:
    """The pairs `pair_by_name` makes, and one line per problem instead of an error, so that
    the files that do pair can still be checked."""
    image_files, problems = scan_folder(image_dir, "image")
    mask_files, mask_problems = scan_folder(mask_dir, "mask")
    problems += mask_problems
    images = _by_stem(image_files, "", image_dir, problems)
    masks = _by_stem(mask_files, mask_suffix, mask_dir, problems)
    lonely_images = sorted(images.keys() - masks.keys())
    lonely_masks = sorted(masks.keys() - images.keys())
    hint = f" (masks are looked up as <image stem>{mask_suffix}.<ext>)"
    if lonely_images and mask_files:
        problems.append(
            f"{len(lonely_images)} image(s) without a mask in {mask_dir}: "
            f"{named([images[s] for s in lonely_images])}{hint}"
        )
    if lonely_masks and image_files:
        problems.append(
            f"{len(lonely_masks)} mask(s) without an image in {image_dir}: "
            f"{named([masks[s] for s in lonely_masks])}{hint}"
        )
    pairs = [Pair(images[stem], masks[stem]) for stem in sorted(images.keys() & masks.keys())]
    return pairs, problems


def _by_stem(files: list[Path], suffix: str, folder, problems: list[str]) -> dict[str, Path]:
    by_stem: dict[str, Path] = {}
    for path in files:
        stem = readers.stem_of(path)
        if suffix:
            if not stem.endswith(suffix):
                problems.append(
                    f"mask {path} does not end in the mask suffix {suffix!r}; rename it or set "
                    "dataset.mask_suffix."
                )
                continue
            stem = stem[: -len(suffix)]
        if stem in by_stem:
            problems.append(
                f"{by_stem[stem].name} and {path.name} in {folder} have the same name "
                "apart from the extension; keep one of them."
            )
            continue
        by_stem[stem] = path
    return by_stem


def named(paths: list[Path]) -> str:
    """The first `MAX_NAMED` file names of a list, and how many more there are."""
    names = ", ".join(p.name for p in paths[:MAX_NAMED])
    more = len(paths) - MAX_NAMED
    return names + (f" and {more} more" if more > 0 else "")
