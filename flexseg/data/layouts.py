"""The volume layouts: nnU-Net v2's raw folder and the Medical Segmentation Decathlon's, read
into cases (a case's channel files and its label volume), and `auto`, which tells the
layout of a folder.

nnU-Net v2 (`imagesTr/<case>_0000.nii.gz`, `_0001`, ... one file per channel,
`labelsTr/<case>.nii.gz`, `dataset.json` with `channel_names`, `labels`, `file_ending`);
the Decathlon (`dataset.json` whose `training` lists `{"image": ..., "label": ...}` pairs,
an image's channels on its fourth axis, `modality` naming them).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from flexseg.data import readers
from flexseg.data.files import file_kind
from flexseg.data.pairing import named
from flexseg.errors import DataError

MANIFEST = "dataset.json"
# an nnU-Net channel file's name without its ending: <case>_<4-digit channel>
CHANNEL_FILE = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


@dataclass(frozen=True)
class Case:
    """One scan: its channel files in channel order (one file holding every channel, or one
    file each), its label volume (None where there is none) and its name."""

    name: str
    images: tuple[Path, ...]
    label: Path | None


def detect(root: Path) -> str:
    """The layout of a folder: "nnunet" or "msd" by its `dataset.json`, "splits" when it has
    `train/`, else "flat"."""
    manifest = root / MANIFEST
    if manifest.is_file():
        described = read_manifest(root)
        return "msd" if "training" in described else "nnunet"
    return "splits" if (root / "train").is_dir() and not (root / "images").is_dir() else "flat"


def read_manifest(root: Path) -> dict:
    """The `dataset.json` of a folder, or an error naming it."""
    path = root / MANIFEST
    if file_kind(path) != "file":
        raise DataError(
            f"{path} is {file_kind(path)}; the nnU-Net and Decathlon layouts describe the data "
            "set there (channel names, labels, and for the Decathlon the list of pairs)."
        )
    try:
        described = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DataError(f"{path} is not valid JSON ({error}); fix or replace it.") from None
    if not isinstance(described, dict):
        raise DataError(f"{path} holds {type(described).__name__}, not a JSON object.")
    return described


def label_names(root: Path) -> list[str] | None:
    """The class names `dataset.json` gives, in class id order, or None."""
    labels = read_manifest(root).get("labels")
    if not isinstance(labels, dict):
        return None
    try:
        if all(isinstance(v, int) for v in labels.values()):  # nnU-Net: {name: id}
            by_id = {int(v): str(k) for k, v in labels.items()}
        else:  # the Decathlon: {"0": name}
            by_id = {int(k): str(v) for k, v in labels.items()}
    except (TypeError, ValueError):
        return None
    return [by_id[i] for i in sorted(by_id)]


def channel_names(root: Path) -> list[str]:
    """The channel (modality) names of `dataset.json`, in channel order."""
    described = read_manifest(root)
    names = described.get("channel_names", described.get("modality")) or {"0": "image"}
    return [str(names[k]) for k in sorted(names, key=int)]


def by_channel(files: Mapping[str, Path]) -> tuple[dict[str, dict[int, Path]], list[Path]]:
    """nnU-Net's channel files by case, from `{name without its ending: path}`: `{case:
    {channel: path}}` of the names `<case>_<4-digit channel>`, and the paths of the others."""
    found: dict[str, dict[int, Path]] = {}
    strangers = []
    for stem, path in files.items():
        match = CHANNEL_FILE.match(stem)
        if match is None:
            strangers.append(path)
        else:
            found.setdefault(match["case"], {})[int(match["channel"])] = path
    return found, strangers


def nnunet_cases(root: Path, images_dir: str, labels_dir: str, problems: list[str]) -> list[Case]:
    """The cases of an nnU-Net v2 raw folder: each `<labels_dir>/<case><ending>` with its
    channel files `<images_dir>/<case>_0000<ending>` ...; a case without all its channels,
    a channel file without a label and a label without images are problems."""
    described = read_manifest(root)
    channels = len(channel_names(root))
    ending = str(described.get("file_ending") or ".nii.gz")
    labels = _listed(root / labels_dir, ending, "label", problems)
    found, strangers = by_channel(_listed(root / images_dir, ending, "image", problems))
    if strangers:
        problems.append(
            f"image file(s) in {root / images_dir} not named <case>_<4-digit channel>{ending}: "
            f"{named(strangers)}; rename them as nnU-Net does (p01_0000{ending})."
        )
    cases = []
    for name in sorted(found.keys() | labels.keys()):
        files = found.get(name, {})
        missing = [c for c in range(channels) if c not in files]
        extra = sorted(set(files) - set(range(channels)))
        if name not in labels:
            problems.append(
                f"case {name} has image(s) in {root / images_dir} but no label "
                f"{root / labels_dir / (name + ending)}; add it or move the images out."
            )
        elif not files:
            problems.append(
                f"label {labels[name]} has no image {root / images_dir / (name + '_0000' + ending)}"
                "; add the case's images or move the label out."
            )
        elif missing or extra:
            problems.append(
                f"case {name} has channel file(s) {sorted(files)} but {root / MANIFEST} names "
                f"{channels} channel(s) (0..{channels - 1}); "
                + (f"add {name}_{missing[0]:04d}{ending}" if missing else "remove the extra files")
                + " or fix channel_names."
            )
        else:
            cases.append(Case(name, tuple(files[c] for c in range(channels)), labels[name]))
    return cases


def msd_cases(root: Path, problems: list[str]) -> list[Case]:
    """The cases `dataset.json`'s `training` list names (paths relative to the folder)."""
    described = read_manifest(root)
    listed = described.get("training")
    if not isinstance(listed, list):
        raise DataError(f"{root / MANIFEST} has no `training` list of image/label pairs.")
    cases, missing = [], []
    for k, entry in enumerate(listed):
        if not (isinstance(entry, dict) and {"image", "label"} <= entry.keys()):
            problems.append(
                f"entry {k} of `training` in {root / MANIFEST} is not "
                '{"image": ..., "label": ...}; fix it.'
            )
            continue
        image, label = root / str(entry["image"]), root / str(entry["label"])
        absent = [p for p in (image, label) if file_kind(p) != "file"]
        if absent:
            missing += absent
            continue
        cases.append(Case(readers.stem_of(image), (image,), label))
    if missing:
        problems.append(
            f"{len(missing)} file(s) that {root / MANIFEST} lists are missing or no regular "
            f"file: {named(missing)}; add them or remove their entries."
        )
    return cases


def _listed(folder: Path, ending: str, what: str, problems: list[str]) -> dict[str, Path]:
    """`{name without ending: path}` of a folder's files ending in `ending`; other entries
    (hidden files and folders apart) are a problem."""
    if not folder.is_dir():
        problems.append(f"{what} folder {folder} does not exist; check dataset.root.")
        return {}
    files, strangers = {}, []
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.is_dir():
            continue
        if path.name.endswith(ending) and file_kind(path) == "file":
            files[path.name[: -len(ending)]] = path
        else:
            strangers.append(path)
    if strangers:
        problems.append(
            f"{what} folder {folder} holds {named(strangers)}, which are no {ending} files; "
            "move them out (file_ending in dataset.json says which files are read)."
        )
    return files
