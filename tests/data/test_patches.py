"""3D training batches: whole-volume samples, random patches, foreground centring, padding,
determinism and volume augmentation."""

from __future__ import annotations

import albumentations as A
import numpy as np
import pytest

from flexseg.data import ReadSpec, Source, SplitRule, find_samples
from flexseg.data.patches import PatchBatches, class_locations, pad_to, patch_corner
from flexseg.errors import DataError
from tests.helpers import make_volume_dataset, write_nifti

pytestmark = pytest.mark.once

SPEC = ReadSpec(channels=2, normalize="volume_zscore")


@pytest.fixture
def cases(tmp_path):
    make_volume_dataset(tmp_path, cases=("p01", "p02", "p03", "p04"), shape=(20, 18, 10))
    source = Source(tmp_path, split=SplitRule(fractions={"train": 1.0}), whole_volumes=True)
    return find_samples(source, seed=0)["train"]


def test_a_case_is_one_whole_volume_sample(cases):
    assert len(cases) == 4 and all(s.whole and s.volume for s in cases)
    assert [s.name for s in cases] == ["p01", "p02", "p03", "p04"]
    batches = PatchBatches(cases, 2, 2, SPEC, (8, 8, 8))
    image, labels = batches.read(0)
    assert image.shape == (20, 18, 10, 2) and image.dtype == np.float32
    assert labels.shape == (20, 18, 10) and labels.max() == 1


def test_batches_hold_patches_and_one_hot_labels(cases):
    batches = PatchBatches(cases, 2, 3, SPEC, (8, 8, 4), shuffle=True, patches_per_epoch=7)
    assert len(batches) == 3 and batches.epoch_size == 7
    images, labels = batches.batch(0, 0)
    assert images.shape == (3, 8, 8, 4, 2) and labels.shape == (3, 8, 8, 4, 2)
    np.testing.assert_array_equal(labels.sum(-1), 1)
    assert batches.batch(0, 2)[0].shape[0] == 1  # 7 patches: 3 + 3 + 1
    assert batches.batch_nbytes() == 3 * 8 * 8 * 4 * (2 + 2) * 4
    with pytest.raises(IndexError):
        batches.batch(0, 3)
    # every case once per pass over the cases, in a fresh order each epoch
    first, second = batches.order(0), batches.order(1)
    assert sorted(first[:4]) == [0, 1, 2, 3] and not np.array_equal(first, second)


def test_the_last_share_of_a_batch_is_centred_on_foreground(cases):
    batches = PatchBatches(cases, 2, 6, SPEC, (4, 4, 4), shuffle=True, foreground_share=0.5)
    for epoch in range(3):
        _, labels = batches.batch(epoch, 0)
        fg = labels[..., 1].reshape(len(labels), -1).sum(1)
        assert (fg[3:] > 0).all()  # the last half: each holds the box
    none = PatchBatches(cases, 2, 4, SPEC, (4, 4, 4), shuffle=True, foreground_share=0.0)
    everywhere = [none.batch(e, 0)[1][..., 1].sum() for e in range(6)]
    assert min(everywhere) < np.mean([batches.batch(e, 0)[1][..., 1].sum() for e in range(6)])


def test_the_same_seed_gives_the_same_patches_in_any_process(cases):
    def make(seed, shard=(0, 1)):
        pipeline = A.Compose([A.CoarseDropout3D(p=0.5), A.CubicSymmetry(p=0.5)])
        return PatchBatches(cases, 2, 4, SPEC, (8, 8, 8), pipeline, True, seed, shard=shard)

    one, again, other = make(3), make(3), make(4)
    a, b = one.batch(1, 0), again.batch(1, 0)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], other.batch(1, 0)[0])
    # two processes serve consecutive halves of the same batch
    halves = [make(3, (rank, 2)).batch(1, 0) for rank in (0, 1)]
    np.testing.assert_array_equal(np.concatenate([h[0] for h in halves]), a[0])


def test_validation_patches_are_the_centre_of_each_volume_every_epoch(cases):
    batches = PatchBatches(cases, 2, 2, SPEC, (8, 8, 8))
    np.testing.assert_array_equal(batches.batch(0, 1)[0], batches.batch(5, 1)[0])
    image, _ = batches.read(2)
    np.testing.assert_array_equal(batches.batch(0, 1)[0][0], image[6:14, 5:13, 1:9])


def test_a_volume_smaller_than_the_patch_is_padded(tmp_path):
    make_volume_dataset(tmp_path, cases=("p01",), shape=(6, 10, 5), channels=1)
    source = Source(tmp_path, split=SplitRule(fractions={"train": 1.0}), whole_volumes=True)
    [case] = find_samples(source, seed=0)["train"]
    spec = ReadSpec(channels=1, normalize="volume_zscore")
    images, labels = PatchBatches([case], 2, 1, spec, (8, 8, 8), shuffle=True).batch(0, 0)
    assert images.shape == (1, 8, 8, 8, 1)
    image, padded = pad_to(np.ones((6, 10, 5, 1), np.float32), np.ones((6, 10, 5)), (8, 8, 8))
    assert image.shape == (8, 10, 8, 1) and image[0].sum() == 0 and image[1].sum() > 0
    assert padded.shape == (8, 10, 8) and padded[:, :, 7].sum() == 0  # 3 added: 1 before


def test_corners_stay_inside_and_centre_where_asked():
    rng = np.random.default_rng(0)
    for _ in range(50):
        corner = patch_corner((20, 9, 8), (8, 8, 8), rng)
        assert 0 <= corner[0] <= 12 and 0 <= corner[1] <= 1 and corner[2] == 0
    assert patch_corner((20, 20, 20), (8, 8, 8), rng, centre=(10, 2, 19)) == (6, 0, 12)


def test_class_locations_per_class_and_bounded():
    labels = np.zeros((30, 30, 30), np.uint8)
    labels[:25] = 1
    labels[0, 0, 0] = 2
    found = class_locations(labels, [0])
    assert set(found) == {1, 2} and len(found[1]) == 10_000
    np.testing.assert_array_equal(found[2], [[0, 0, 0]])
    assert (labels[tuple(found[1].T)] == 1).all()


def test_a_case_of_other_image_and_label_shapes_is_named(tmp_path):
    make_volume_dataset(tmp_path, cases=("p01",), shape=(8, 8, 8), channels=1)
    write_nifti(tmp_path / "labelsTr" / "p01.nii.gz", np.zeros((8, 8, 6), np.uint8))
    source = Source(tmp_path, split=SplitRule(fractions={"train": 1.0}), whole_volumes=True)
    [case] = find_samples(source, seed=0)["train"]
    batches = PatchBatches([case], 2, 1, ReadSpec(normalize="volume_zscore"), (4, 4, 4))
    with pytest.raises(DataError, match="p01.nii.gz"):
        batches.batch(0, 0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(batch_size=0), "batch_size"),
        (dict(foreground_share=1.5), "foreground_share"),
        (dict(patch_size=(8, 8)), "patch_size"),
    ],
)
def test_bad_settings_are_refused(cases, kwargs, message):
    settings = {"batch_size": 2, "patch_size": (8, 8, 8), **kwargs}
    with pytest.raises(DataError, match=message):
        PatchBatches(cases, 2, spec=SPEC, **settings)
