"""Volumes: the NIfTI and ITK readers, one axis order, spacing, labels, normalisation, slices,
and the nnU-Net, Decathlon and flat layouts."""

from __future__ import annotations

import gzip
import json
import sys

import nibabel as nib
import numpy as np
import pytest

from flexseg.data import ReadSpec, Source, SplitRule, find_samples, readers, volumes
from flexseg.data.batches import read_pair
from flexseg.data.layouts import detect
from flexseg.data.reading import read_sample
from flexseg.errors import DataError
from tests.helpers import make_volume_dataset, write_nifti

pytestmark = pytest.mark.once

# RAS -> LPS: the first two axes reversed, as ITK and DICOM store them
LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def test_nifti_is_known_by_its_bytes_and_its_name(tmp_path):
    voxels = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    for name in ("a.nii", "a.nii.gz"):
        path = write_nifti(tmp_path / name, voxels)
        assert readers.reader_for(path.read_bytes()).name == "nifti"
        assert readers.suffix_of(path) == (".nii.gz" if name.endswith("gz") else ".nii")
        assert readers.stem_of(path) == "a" and readers.is_volume(path)
        header = volumes.peek(path)
        assert header.shape == (2, 3, 4) and header.dtype == "int16"
    assert not readers.is_volume("a.png")
    with pytest.raises(DataError, match="it is not a PNG"):  # a gzip of something else
        readers.reader_for(gzip.compress(b"not a volume" * 50))


def test_a_volume_reads_as_float32_in_ras_order_whatever_it_stores(tmp_path):
    ras = np.random.default_rng(0).integers(0, 200, (6, 5, 4)).astype(np.uint8)
    zooms = (0.5, 0.8, 3.0)
    write_nifti(tmp_path / "ras.nii.gz", ras, zooms=zooms)
    # the same scan stored as LPS (axes 0 and 1 reversed) and as int16 with a scale factor
    lps_affine = LPS @ np.diag([*zooms, 1.0])
    lps_affine[:2, 3] = [(6 - 1) * zooms[0], (5 - 1) * zooms[1]]  # the same voxels in space
    image = nib.Nifti1Image(ras[::-1, ::-1].astype(np.int16) * 4, lps_affine)
    image.header.set_slope_inter(0.25, 0.0)
    nib.save(image, tmp_path / "lps.nii.gz")
    a, b = volumes.load(tmp_path / "ras.nii.gz"), volumes.load(tmp_path / "lps.nii.gz")
    assert a.voxels.dtype == np.float32 and a.voxels.shape == (6, 5, 4, 1)
    np.testing.assert_array_equal(a.voxels, b.voxels)
    assert b.geometry.orientation == "LPS" and b.geometry.spacing == pytest.approx(zooms)
    # a file stored z, y, x (axes permuted) keeps its spacing per RAS axis
    permuted = np.zeros((4, 4), float)
    permuted[0, 2], permuted[1, 1], permuted[2, 0], permuted[3, 3] = zooms[0], zooms[1], zooms[2], 1
    write_nifti(tmp_path / "zyx.nii", ras.transpose(2, 1, 0), permuted)
    c = volumes.load(tmp_path / "zyx.nii")
    np.testing.assert_array_equal(c.voxels, a.voxels)
    assert c.geometry.spacing == pytest.approx(zooms) and c.geometry.orientation == "SAR"
    # and back: to_file undoes to_canonical
    np.testing.assert_array_equal(b.geometry.to_file(b.voxels[..., 0]), ras[::-1, ::-1])


def test_labels_are_integers_and_fractions_are_refused_by_name(tmp_path):
    whole = np.zeros((4, 4, 3), np.float32)
    whole[1, 1, 1] = 2.0
    write_nifti(tmp_path / "whole.nii.gz", whole)
    labels = volumes.load(tmp_path / "whole.nii.gz", "label").voxels
    assert labels.dtype == np.uint8 and labels.max() == 2
    whole[2, 2, 2] = 0.5
    write_nifti(tmp_path / "half.nii.gz", whole)
    with pytest.raises(DataError, match=r"half\.nii\.gz holds values that are not whole.*0\.5"):
        volumes.load(tmp_path / "half.nii.gz", "label")
    write_nifti(tmp_path / "four.nii.gz", np.zeros((4, 4, 3, 2), np.uint8))
    with pytest.raises(DataError, match=r"four\.nii\.gz has 4 axes.*a label volume has three"):
        volumes.load(tmp_path / "four.nii.gz", "label")


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda data: data[: len(data) // 2], "truncated: its gzip stream ends early"),
        (lambda data: data[:-8] + bytes(8), "corrupt: its gzip stream does not decode"),
    ],
)
def test_a_cut_or_corrupt_gzip_is_refused_by_name(tmp_path, damage, message):
    path = write_nifti(tmp_path / "v.nii.gz", np.random.default_rng(0).random((8, 8, 8)))
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(DataError, match=rf"v\.nii\.gz: it is {message}"):
        volumes.load(path)


def test_the_header_is_checked_before_any_voxel_is_read(tmp_path):
    header = nib.Nifti1Header()
    header.set_data_shape((4096, 4096, 4096))
    header.set_data_dtype(np.float32)
    path = tmp_path / "huge.nii.gz"
    path.write_bytes(gzip.compress(header.binaryblock + b"\0" * 4))  # the header alone
    with pytest.raises(DataError, match=r"huge\.nii\.gz is 4096 x 4096 x 4096 voxels.*max_voxels"):
        volumes.load(path)
    raw = tmp_path / "short.nii"
    raw.write_bytes(header.binaryblock + b"\0" * 4 + b"\0" * 100)
    with pytest.raises(DataError, match=r"short\.nii: it is truncated: its voxels need"):
        volumes.peek(raw, max_voxels=2**40)
    nan = np.ones((4, 4, 4), np.float32)
    nan[0, 0, 0] = np.nan
    write_nifti(tmp_path / "nan.nii.gz", nan)
    with pytest.raises(DataError, match=r"nan\.nii\.gz has 1 NaN or infinite voxel"):
        volumes.load(tmp_path / "nan.nii.gz")


def test_volume_zscore_standardises_each_channel_over_its_non_zero_voxels(tmp_path):
    rng = np.random.default_rng(1)
    voxels = rng.normal(500, 80, (10, 10, 10)).astype(np.float32)
    voxels[:3] = 0  # outside the brain
    write_nifti(tmp_path / "v.nii.gz", voxels)
    out = volumes.normalized(tmp_path / "v.nii.gz", "volume_zscore", None, True)[..., 0]
    inside = voxels != 0
    assert np.all(out[~inside] == 0)
    assert out[inside].mean() == pytest.approx(0, abs=1e-5)
    assert out[inside].std() == pytest.approx(1, abs=1e-4)
    whole = volumes.normalized(tmp_path / "v.nii.gz", "volume_zscore", None, False)[..., 0]
    assert whole.mean() == pytest.approx(0, abs=1e-5) and whole[0, 0, 0] < -1
    clipped = volumes.normalized(tmp_path / "v.nii.gz", "volume_zscore", (5, 95), True)[..., 0]
    assert clipped[inside].max() < out[inside].max()


def test_slices_and_their_neighbours_as_channels():
    voxels = np.arange(3 * 4 * 5 * 2, dtype=np.float32).reshape(3, 4, 5, 2)
    np.testing.assert_array_equal(volumes.cut(voxels, 2, 1), voxels[:, :, 1])
    with_context = volumes.cut(voxels, 2, 0, context=1)  # the first slice repeated before it
    assert with_context.shape == (3, 4, 6)
    np.testing.assert_array_equal(with_context[..., 0:2], voxels[:, :, 0])
    np.testing.assert_array_equal(with_context[..., 4:6], voxels[:, :, 1])
    assert volumes.slice_axis("auto", [(1, 1, 1)]) == 2  # isotropic: axial
    assert volumes.slice_axis("auto", [(0.7, 5.0, 0.7), (0.8, 5.0, 0.8)]) == 1
    assert volumes.slice_axis("sagittal", []) == 0 and volumes.slice_axis("1", []) == 1


def test_the_nnunet_layout_gives_slices_of_cases_with_their_channels(tmp_path):
    make_volume_dataset(tmp_path, shape=(12, 10, 6))
    assert detect(tmp_path) == "nnunet"
    rule = SplitRule(groups={"train": ["p01", "p02"], "test": ["p03"]})
    splits = find_samples(Source(tmp_path, split=rule), seed=0)
    assert [len(splits[s]) for s in ("train", "valid", "test")] == [12, 0, 6]
    sample = splits["train"][7]
    assert sample.name == "p02_z001" and sample.case == "p02" and sample.axis == 2
    assert [p.name for p in sample.images] == ["p02_0000.nii.gz", "p02_0001.nii.gz"]
    spec = ReadSpec(channels=2, normalize="volume_zscore", size_multiple=4)
    image, mask = read_pair(sample, 2, spec)
    assert image.shape == (12, 12, 2) and mask.shape == (12, 12)  # padded to 4s
    truth = np.asarray(nib.load(tmp_path / "labelsTr" / "p02.nii.gz").dataobj)[:, :, 1]
    np.testing.assert_array_equal(mask[:, 1:11], truth)  # the width padded by 1 each side
    context = read_sample(sample, ReadSpec(channels=2, normalize="volume_zscore", context_slices=1))
    assert context.shape == (12, 10, 6)
    with pytest.raises(DataError, match=r"case p02 has 2 channel\(s\).*dataset.channels=1"):
        read_sample(sample, ReadSpec(channels=1, normalize="volume_zscore"))
    with pytest.raises(DataError, match=r"dataset.normalize=scale01 is for 2D images"):
        read_sample(sample, ReadSpec(channels=2))


def test_nnunet_cases_missing_a_channel_or_a_label_are_named(tmp_path):
    make_volume_dataset(tmp_path, shape=(8, 8, 4))
    (tmp_path / "imagesTr" / "p02_0001.nii.gz").unlink()
    (tmp_path / "labelsTr" / "p03.nii.gz").unlink()
    (tmp_path / "imagesTr" / "notes.txt").write_text("x")
    problems = []
    find_samples(Source(tmp_path, split=SplitRule(fractions={"train": 1.0})), 0, problems)
    text = "\n".join(problems)
    assert "case p02 has channel file(s) [0]" in text and "add p02_0001.nii.gz" in text
    assert "case p03 has image(s)" in text and "no label" in text
    assert "notes.txt" in text


def test_the_decathlon_layout_reads_its_list_and_flat_folders_hold_volumes(tmp_path):
    msd = tmp_path / "msd"
    pairs = []
    for k in range(3):
        write_nifti(msd / "imagesTr" / f"c_{k:03d}.nii.gz", np.full((6, 6, 3), k + 1, np.float32))
        write_nifti(msd / "labelsTr" / f"c_{k:03d}.nii.gz", np.zeros((6, 6, 3), np.float32))
        pairs.append(
            {"image": f"./imagesTr/c_{k:03d}.nii.gz", "label": f"./labelsTr/c_{k:03d}.nii.gz"}
        )
    (msd / "dataset.json").write_text(json.dumps({"modality": {"0": "MRI"}, "training": pairs}))
    assert detect(msd) == "msd"
    splits = find_samples(Source(msd, split=SplitRule(fractions={"train": 1.0})), 0)
    assert sorted({s.case for s in splits["train"]}) == ["c_000", "c_001", "c_002"]
    flat = tmp_path / "flat"
    for k in range(2):
        write_nifti(flat / "images" / f"v{k}.nii.gz", np.ones((6, 6, 3), np.float32))
        write_nifti(flat / "masks" / f"v{k}.nii.gz", np.zeros((6, 6, 3), np.uint8))
    assert detect(flat) == "flat"
    splits = find_samples(
        Source(flat, split=SplitRule(groups={"train": ["v0"], "test": ["v1"]})), 0
    )
    assert [s.name for s in splits["test"]] == ["v1_z000", "v1_z001", "v1_z002"]


def test_nrrd_and_metaimage_read_like_nifti_and_their_extra_is_named(tmp_path, monkeypatch):
    sitk = pytest.importorskip("SimpleITK", reason="the volumes extra is part of flexseg[all]")
    voxels = np.random.default_rng(2).random((5, 4, 3)).astype(np.float32)  # (x, y, z)
    image = sitk.GetImageFromArray(voxels.transpose(2, 1, 0))  # ITK arrays are (z, y, x)
    image.SetSpacing((0.5, 1.0, 2.0))
    write_nifti(tmp_path / "same.nii.gz", voxels, LPS @ np.diag([0.5, 1.0, 2.0, 1.0]))
    expected = volumes.load(tmp_path / "same.nii.gz").voxels
    for name in ("v.nrrd", "v.mha"):
        sitk.WriteImage(image, str(tmp_path / name))
        assert readers.reader_for((tmp_path / name).read_bytes()[:4096]).suffixes[0] in (
            ".nrrd",
            ".mha",
        )
        loaded = volumes.load(tmp_path / name)
        np.testing.assert_allclose(loaded.voxels, expected)
        assert loaded.geometry.spacing == pytest.approx((0.5, 1.0, 2.0))
        assert loaded.geometry.orientation == "LPS"
    monkeypatch.setitem(sys.modules, "SimpleITK", None)  # as if it were not installed
    (tmp_path / "w.nrrd").write_bytes((tmp_path / "v.nrrd").read_bytes())
    with pytest.raises(DataError, match=r"w\.nrrd is a NRRD volume.*flexseg\[volumes\]"):
        volumes.load(tmp_path / "w.nrrd")


def test_a_label_volume_is_written_on_the_grid_it_came_from(tmp_path):
    affine = LPS @ np.diag([0.9, 0.9, 2.5, 1.0])
    affine[:3, 3] = [10.0, -20.0, 5.0]
    write_nifti(tmp_path / "in.nii.gz", np.random.default_rng(3).random((7, 6, 5)), affine)
    place = volumes.geometry(tmp_path / "in.nii.gz")
    labels = np.zeros(place.shape, np.uint8)
    labels[1, 2, 3] = 1  # RAS order
    volumes.write_labels(tmp_path / "out.nii.gz", labels, tmp_path / "in.nii.gz")
    written = nib.load(tmp_path / "out.nii.gz")
    assert written.shape == (7, 6, 5) and np.allclose(written.affine, affine)
    assert written.get_data_dtype() == np.uint8
    assert volumes.load(tmp_path / "out.nii.gz", "label").voxels[1, 2, 3] == 1


def test_dataset_zscore_clips_and_standardises_with_the_given_statistics(tmp_path):
    voxels = np.array([-1000.0, 0.0, 40.0, 80.0, 3000.0], np.float32).reshape(5, 1, 1)
    write_nifti(tmp_path / "ct.nii.gz", voxels)
    out = volumes.normalized(
        tmp_path / "ct.nii.gz", "dataset_zscore", None, False, stats=[[0, 100, 40, 20]]
    )
    np.testing.assert_allclose(out.ravel(), [-2.0, -2.0, 0.0, 2.0, 3.0])
    with pytest.raises(DataError, match=r"dataset_zscore needs dataset.intensity_stats"):
        volumes.normalized(tmp_path / "ct.nii.gz", "dataset_zscore", None, False, stats=None)


@pytest.mark.parametrize("normalize", ["volume_zscore", "dataset_zscore"])
def test_a_volume_normalisation_on_a_2d_image_is_refused(tmp_path, normalize):
    from flexseg.data import Sample
    from tests.helpers import write_png

    write_png(tmp_path / "a.png", np.full((8, 8), 100, np.uint8))
    sample = Sample(tmp_path / "a.png", None, "a")
    with pytest.raises(DataError, match=rf"normalize={normalize} standardises volumes.*a\.png"):
        read_sample(sample, ReadSpec(normalize=normalize))
