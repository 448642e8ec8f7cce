"""Makes the built-in volume sample, flexseg/sample_data/ms-lesjak-nifti, from the whole MS
volumes (nnU-Net raw layout): each case cropped to the brain's box in x and y and to a slab
of axial slices through the lesions, intensities stored as int16 with a NIfTI scale of 0.1
(read back as float32), the label as uint8, the affine moved with the crop.

    python scripts/make_volume_sample.py <folder of the whole volumes> [<output folder>]
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

CASES = ("p07", "p19", "p26")
SLAB = (62, 106)  # axial slices kept (axis 2 of the LAS volumes): 44 through the lesions
SCALE = 0.1  # stored int16 * SCALE = intensity


def crop_box(root: Path) -> tuple[slice, slice]:
    """The x and y box holding every case's brain (both channels)."""
    low, high = np.full(2, 10**6), np.zeros(2, int)
    for case in CASES:
        for channel in (0, 1):
            voxels = np.asarray(
                nib.load(root / "imagesTr" / f"{case}_{channel:04d}.nii.gz").dataobj
            )
            inside = np.argwhere(voxels[..., SLAB[0] : SLAB[1]] != 0)[:, :2]
            low, high = np.minimum(low, inside.min(0)), np.maximum(high, inside.max(0) + 1)
    return slice(low[0], high[0]), slice(low[1], high[1])


def save(source: Path, target: Path, box: tuple[slice, slice], label: bool) -> None:
    image = nib.load(source)
    voxels = np.asarray(image.dataobj)[box[0], box[1], SLAB[0] : SLAB[1]]
    start = np.array([box[0].start, box[1].start, SLAB[0], 1.0])
    affine = image.affine.copy()
    affine[:, 3] = image.affine @ start  # the crop's first voxel where it was
    header = image.header.copy()
    if label:
        header.set_data_dtype(np.uint8)
        out = nib.Nifti1Image(voxels.astype(np.uint8), affine, header)
    else:
        header.set_data_dtype(np.int16)
        out = nib.Nifti1Image(np.round(voxels / SCALE).astype(np.int16), affine, header)
        out.header.set_slope_inter(SCALE, 0.0)
    out.set_qform(affine, code=1)
    out.set_sform(affine, code=1)
    nib.save(out, target)


def main(source: str, output: str = "flexseg/sample_data/ms-lesjak-nifti") -> None:
    root, out = Path(source), Path(output)
    (out / "imagesTr").mkdir(parents=True, exist_ok=True)
    (out / "labelsTr").mkdir(parents=True, exist_ok=True)
    box = crop_box(root)
    for case in CASES:
        for channel in (0, 1):
            name = f"{case}_{channel:04d}.nii.gz"
            save(root / "imagesTr" / name, out / "imagesTr" / name, box, label=False)
        save(root / "labelsTr" / f"{case}.nii.gz", out / "labelsTr" / f"{case}.nii.gz", box, True)
    described = json.loads((root / "dataset.json").read_text())
    (out / "dataset.json").write_text(json.dumps(described, indent=2) + "\n")
    shutil.copy(root / "LICENSE.txt", out / "LICENSE.txt")


if __name__ == "__main__":
    main(*sys.argv[1:])
