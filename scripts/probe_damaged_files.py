"""Probe `flexseg-check` with a new user's messy folder: real pairs and damaged files.

    python scripts/probe_damaged_files.py                  # the built-in sample's slices
    python scripts/probe_damaged_files.py --source /data/lgg-flair-80 --pairs 40

Copies real image/mask pairs into a fresh folder, adds damaged and odd files of every class
(cut at many lengths, random bytes, a wrong signature, headers declaring huge sizes in every
format, corrupt chunks, a mask drawn in other class colours, non-files, unpaired files), runs
`python -m flexseg check` on it once, and prints which damaged files the report names, which
it misses, and whether anything but the report (a traceback) came out. Kept apart from the
tests: it is a look at the command as a user meets it, on real files.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.helpers import huge_header  # noqa: E402

SAMPLE = ROOT / "flexseg" / "sample_data" / "ms-lesjak-flair"


def build(folder: Path, source: Path, pairs: int, seed: int) -> dict[str, str]:
    """The probe folder; returns {damaged file: what was done to it}."""
    rng = random.Random(seed)
    names = sorted(p.name for p in (source / "images").glob("*.png"))
    chosen = rng.sample(names, min(pairs, len(names)))
    for sub in ("images", "masks"):
        (folder / sub).mkdir(parents=True)
        for name in chosen:
            shutil.copy(source / sub / name, folder / sub / name)
    image = (source / "images" / chosen[0]).read_bytes()
    mask = (source / "masks" / chosen[0]).read_bytes()
    damaged: dict[str, str] = {}

    def put(relative: str, data: bytes | None, what: str, pair: bool = True) -> None:
        path = folder / relative
        if data is not None:
            path.write_bytes(data)
        damaged[str(path)] = what
        if pair:  # its partner, valid, so that only the damage is to blame
            other = "masks" if relative.startswith("images") else "images"
            partner = folder / other / Path(relative).with_suffix(".png").name
            if not partner.exists():
                partner.write_bytes(mask if other == "masks" else image)

    for i, cut in enumerate([0, 8, 20, 33, 60, len(image) // 2, len(image) - 12, len(image) - 1]):
        put(f"images/probe_cut{i}.png", image[:cut], f"image cut to {cut} bytes")
    for i, cut in enumerate([30, len(mask) // 2, len(mask) - 12, len(mask) - 1]):
        put(f"masks/probe_maskcut{i}.png", mask[:cut], f"mask cut to {cut} bytes")
    put("images/probe_random.png", os.urandom(500), "random bytes")
    put("images/probe_magic.png", b"GIF89a" + image[6:], "a wrong signature")
    flipped = bytearray(image)
    flipped[len(image) // 2] ^= 0xFF
    put("images/probe_flip.png", bytes(flipped), "a changed byte (PNG checksum)")
    for extension in ("png", "jpg", "tif", "bmp"):
        put(f"images/probe_huge_{extension}.{extension}", huge_header(extension, 60_000, 60_000),
            f"a {extension} header declaring 60000 x 60000")  # fmt: skip
    three = np.zeros((218, 182), np.uint8)
    three[40:90, 40:90], three[120:170, 60:110] = 100, 200
    buffer = Path(folder / "masks" / "probe_three.png")
    Image.fromarray(three).save(buffer)
    put("masks/probe_three.png", None, "a 0/100/200 mask read with a 0/255 map")
    (folder / "masks" / "probe_dir.png").mkdir()
    put("masks/probe_dir.png", None, "a folder named like a mask")
    (folder / "images" / "probe_link.png").symlink_to(folder / "nowhere.png")
    put("images/probe_link.png", None, "a broken link")
    put("images/probe_alone.png", image, "an image without a mask", pair=False)
    return damaged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=SAMPLE, help="images/ + masks/ of PNGs")
    parser.add_argument("--pairs", type=int, default=20, help="real pairs copied in")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "probe"
        damaged = build(folder, args.source, args.pairs, args.seed)
        result = subprocess.run(
            [sys.executable, "-m", "flexseg", "check", f"dataset.root={folder}",
             "dataset.group_regex='^([a-z]+\\d*)'", "dataset.split.groups=null",
             "++dataset.split.fractions={train:1.0}", "dataset.split.holdout_fraction=0",
             "dataset.image_size=[224,192]", "dataset.normalize=scale01",
             f"hydra.run.dir={tmp}/run"],
            capture_output=True, text=True, cwd=tmp, timeout=900,
        )  # fmt: skip
        report = result.stderr
        # Unpaired files are named by their file name, in a line about their folder.
        missed = {p: what for p, what in damaged.items() if Path(p).name not in report}
        print(json.dumps({
            "exit_code": result.returncode,
            "traceback": "Traceback" in report,
            "damaged": len(damaged),
            "named": len(damaged) - len(missed),
            "missed": {Path(p).name: w for p, w in missed.items()},
            "report": report.splitlines(),
        }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
