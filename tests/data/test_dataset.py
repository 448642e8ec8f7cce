from __future__ import annotations

import gc
import os
import re
import signal

import numpy as np
import pytest

from flexseg.data import ReadSpec, SegmentationDataset, build_augmentation, find_samples
from flexseg.data.workers import resolve_workers
from flexseg.errors import ConfigError, DataError
from tests.helpers import data_source, make_flat_dataset, write_png

SPLIT = {"groups": {"train": ["p01", "p02"], "test": ["p03"]}}


@pytest.fixture
def samples(tmp_path):
    make_flat_dataset(tmp_path, slices=5, size=(30, 28))
    return find_samples(data_source(tmp_path, split=SPLIT), seed=0)


def test_batches_are_padded_one_hot_and_normalised(samples):
    spec = ReadSpec(size_multiple=16, normalize="scale01")
    ds = SegmentationDataset(samples["train"], 2, 4, spec)
    assert len(ds) == 3
    x, y = ds[0]
    assert x.shape == (4, 32, 32, 1) and y.shape == (4, 32, 32, 2)
    assert x.dtype == np.float32 and x.min() >= 0 and x.max() <= 1
    np.testing.assert_array_equal(y.sum(-1), 1.0)
    assert ds[2][0].shape[0] == 2  # the last batch holds the rest
    with pytest.raises(IndexError):
        ds[3]


def test_resize_keeps_masks_binary(samples):
    spec = ReadSpec(size_policy="resize", image_size=(16, 24))
    x, y = SegmentationDataset(samples["test"], 2, 5, spec)[0]
    assert x.shape == (5, 16, 24, 1)
    assert set(np.unique(y)) == {0.0, 1.0}


# The seeded order of the 10 training samples, the same on every backend.
EXPECTED_ORDER = {0: [4, 6, 2, 7, 3, 5, 9, 0, 8, 1], 1: [5, 1, 6, 3, 4, 8, 9, 7, 2, 0]}


def test_drop_remainder_serves_only_full_batches(samples):
    ds = SegmentationDataset(samples["train"], 2, 4, ReadSpec(size_multiple=4), drop_remainder=True)
    assert len(ds) == 2 and all(ds[i][0].shape[0] == 4 for i in range(2))
    with pytest.raises(DataError, match="no full batch of 16; lower trainer.batch_size"):
        SegmentationDataset(samples["train"], 2, 16, ReadSpec(), drop_remainder=True)


def test_foreground_fraction_oversamples_slices_with_foreground(samples):
    # Empty the masks of 8 of the 10 training slices: 2 with foreground, 8 empty.
    for sample in samples["train"][2:]:
        write_png(sample.mask, np.zeros((30, 28), np.uint8))
    ds = SegmentationDataset(
        samples["train"], 2, 2, ReadSpec(size_multiple=4), shuffle=True, foreground_fraction=0.5
    )
    assert ds.epoch_size == 4 and len(ds) == 2
    orders = [ds.order(epoch) for epoch in range(3)]
    for order in orders:
        assert len(order) == len(set(order.tolist())) == 4
        assert {0, 1} <= set(order.tolist())  # every slice with foreground, every epoch
    assert len({tuple(sorted(o.tolist())) for o in orders}) > 1  # fresh empty slices
    plain = SegmentationDataset(samples["train"], 2, 2, ReadSpec(), foreground_fraction=0.5)
    assert plain.epoch_size == 10  # only a shuffling (training) set is resampled
    for fraction in (0.0, 1.5):
        with pytest.raises(DataError, match="foreground_fraction must be in"):
            SegmentationDataset(
                samples["train"], 2, 2, ReadSpec(), shuffle=True, foreground_fraction=fraction
            )


def test_slices_with_small_lesions_are_served_more_often(samples):
    # Slice 0 gets a lesion of 6 pixels, slices 1-4 none; 5-9 keep their large ones.
    small = np.zeros((30, 28), np.uint8)
    small[10:12, 10:13] = 255
    write_png(samples["train"][0].mask, small)
    for sample in samples["train"][1:5]:
        write_png(sample.mask, np.zeros((30, 28), np.uint8))
    spec = ReadSpec(size_multiple=4)
    ds = SegmentationDataset(samples["train"], 2, 2, spec, shuffle=True, small_lesions=(10, 3))
    assert ds.epoch_size == 12 and len(ds) == 6
    for epoch in range(2):
        order = ds.order(epoch).tolist()
        assert order.count(0) == 3 and sorted(set(order)) == list(range(10))
    # With foreground_fraction: the small slice three times, every large one once, and as many
    # empty ones as there are slices with foreground (six), or all four there are.
    both = SegmentationDataset(
        samples["train"], 2, 2, spec, shuffle=True, small_lesions=(10, 3), foreground_fraction=0.5
    )
    order = both.order(0).tolist()
    assert both.epoch_size == len(order) == 12 and order.count(0) == 3
    assert set(range(5, 10)) <= set(order) and len(set(order) & {1, 2, 3, 4}) == 4
    # Lesions are counted in the model's pixels: resized to a quarter, 6 become about 2.
    train, halved = samples["train"], ReadSpec(size_policy="resize", image_size=(15, 14))
    resized = SegmentationDataset(train, 2, 2, halved, shuffle=True, small_lesions=(3, 2))
    assert resized.epoch_size == 11
    plain = SegmentationDataset(samples["train"], 2, 2, spec, small_lesions=(10, 3))
    assert plain.epoch_size == 10  # only a shuffling (training) set is resampled


def test_seeded_shuffle_is_the_same_on_every_backend(samples):
    ds = SegmentationDataset(samples["train"], 2, 4, ReadSpec(size_multiple=4), shuffle=True)
    assert {e: ds.order(e).tolist() for e in (0, 1)} == EXPECTED_ORDER


def test_same_seed_same_augmented_batches_any_worker_count(samples):
    aug = build_augmentation([{"name": "Affine", "rotate": [-30, 30], "p": 1.0}])
    spec = ReadSpec(size_multiple=4, normalize="zscore")
    one = SegmentationDataset(samples["train"], 2, 4, spec, augment=aug, shuffle=True, seed=5)
    two = SegmentationDataset(
        samples["train"], 2, 4, spec, augment=aug, shuffle=True, seed=5, workers=2
    )
    other = SegmentationDataset(samples["train"], 2, 4, spec, augment=aug, shuffle=True, seed=6)
    for ds in (one, two, other):
        ds.on_epoch_end()  # epoch 1
    for i in reversed(range(len(one))):  # any order of batch requests
        for a, b in zip(one[i], two[i], strict=True):
            np.testing.assert_array_equal(a, b)
    assert not np.array_equal(one[0][0], other[0][0])


def test_group_zscore_uses_each_groups_statistics(tmp_path):
    make_flat_dataset(tmp_path, groups=("p01", "p02"), slices=2, size=(16, 16))
    # Make p02 twice as bright: group z-scoring must undo that.
    for path in (tmp_path / "images").glob("p02_*.png"):
        image = np.asarray(__import__("PIL.Image").Image.open(path)) // 2
        write_png(path, image)
    found = find_samples(data_source(tmp_path, split={"fractions": {"train": 1}}), seed=0)
    spec = ReadSpec(normalize="group_zscore", ignore_zero=False)
    ds = SegmentationDataset(found["train"], 2, 4, spec)
    x, _ = ds[0]
    for group in ("p01", "p02"):
        picked = x[[i for i, s in enumerate(ds.samples) if s.group == group]]
        assert abs(picked.mean()) < 0.1 and abs(picked.std() - 1) < 0.1


def test_memory_and_disk_caches_serve_the_same_augmented_batches(samples, tmp_path):
    aug = build_augmentation([{"name": "Affine", "rotate": [-30, 30], "p": 1.0}])
    args = dict(spec=ReadSpec(size_multiple=4), augment=aug, shuffle=True, seed=2)
    plain = SegmentationDataset(samples["train"], 2, 4, **args)
    memory = SegmentationDataset(samples["train"], 2, 4, cache="memory", **args)
    disk = SegmentationDataset(
        samples["train"], 2, 4, cache="disk", cache_dir=tmp_path / "cache", **args
    )
    for ds in (plain, memory, disk):
        ds.on_epoch_end()
    for i in range(len(plain)):
        for a, b, c in zip(plain[i], memory[i], disk[i], strict=True):
            np.testing.assert_array_equal(a, b)
            np.testing.assert_array_equal(a, c)
    assert not disk.cache.reused and memory.cache.folder.is_dir()
    assert memory.cache.nbytes >= 10 * 32 * 28  # ten padded images and masks
    folder = memory.cache.folder
    del memory, args
    gc.collect()
    assert not folder.exists()  # the shared memory is freed with its dataset


def test_a_disk_cache_is_reused_until_a_file_or_setting_changes(samples, tmp_path):
    def cached(spec):
        return SegmentationDataset(
            samples["test"], 2, 5, spec, cache="disk", cache_dir=tmp_path
        ).cache

    first = cached(ReadSpec(size_multiple=4))
    again = cached(ReadSpec(size_multiple=4))
    assert again.reused and again.folder == first.folder
    other_setting = cached(ReadSpec(size_multiple=8))
    assert not other_setting.reused and other_setting.folder != first.folder
    image = samples["test"][0].image
    write_png(image, np.full((30, 28), 7, np.uint8))
    os.utime(image, ns=(1, 1))  # another size or time: another file
    changed = cached(ReadSpec(size_multiple=4))
    assert not changed.reused and changed.folder != first.folder
    assert changed.get(0)[0].max() == 7  # the new file, not the cached one


def test_worker_processes_name_a_file_damaged_after_the_start(samples):
    ds = SegmentationDataset(samples["test"], 2, 1, ReadSpec(size_multiple=4), workers=1)
    ds[0]  # the worker runs
    victim = ds.samples[3].image
    victim.write_bytes(victim.read_bytes()[:40])
    with pytest.raises(DataError, match=re.escape(str(victim))):
        ds[3]
    assert ds.read_error is not None


def test_a_killed_worker_process_stops_the_loader_with_its_reason(samples):
    ds = SegmentationDataset(samples["test"], 2, 1, ReadSpec(size_multiple=4), workers=1)
    ds[0]
    os.kill(ds.pool._processes[0].pid, signal.SIGKILL)
    with pytest.raises(DataError, match="loader worker 1 of 1 stopped with signal SIGKILL"):
        for epoch in range(3):  # until the batches queued before the kill are used up
            ds.epoch = epoch
            for i in range(len(ds)):
                ds[i]


def test_processes_share_each_batch_in_one_process_order(samples):
    """Each process of a training loads its consecutive part of every batch; together they
    load what one process loads, in its order, also when the last batch is too small."""
    spec, light = (
        ReadSpec(image_size=(32, 32)),
        build_augmentation([{"name": "HorizontalFlip", "p": 0.5}], (32, 32)),
    )

    def dataset(shard):
        return SegmentationDataset(
            samples["train"], 2, 4, spec, augment=light, shuffle=True, seed=3, shard=shard
        )

    one = dataset((0, 1))
    parts = [dataset((rank, 3)) for rank in range(3)]
    assert len(one.samples) % 4 == 2  # the last batch's 2 samples: for processes 0 and 1
    assert [len(p) for p in parts] == [len(one), len(one), len(one) - 1]
    for index in range(len(one)):
        images, masks = one.batches.batch(2, index)
        shared = [p.batches.batch(2, index) for p in parts if index < len(p)]
        np.testing.assert_array_equal(np.concatenate([i for i, _ in shared]), images)
        np.testing.assert_array_equal(np.concatenate([m for _, m in shared]), masks)
    assert [len(p.batches.batch(2, 0)[0]) for p in parts] == [2, 1, 1]
    # JAX's processes need parts of one size: the last batch leaves out what does not split.
    even = [
        SegmentationDataset(samples["train"], 2, 4, spec, shard=(r, 3), equal_parts=True)
        for r in range(3)
    ]
    assert [len(p) for p in even] == [len(one) - 1] * 3  # a last batch of 2: none left
    even = [
        SegmentationDataset(samples["train"], 2, 4, spec, shard=(r, 2), equal_parts=True)
        for r in range(2)
    ]
    assert [len(p.batches.batch(0, len(p) - 1)[0]) for p in even] == [1, 1]


def test_a_channel_stands_in_for_the_others_in_a_seeded_share_of_images(tmp_path):
    make_flat_dataset(tmp_path, slices=20, size=(16, 16))
    rng = np.random.default_rng(0)
    for path in (tmp_path / "images").iterdir():  # three different channels
        write_png(path, rng.integers(0, 255, (16, 16, 3), dtype=np.uint8))
    found = find_samples(data_source(tmp_path, split=SPLIT), seed=0)["train"]
    spec = ReadSpec(channels=3, image_size=(16, 16))

    def substituted(p, epoch=0):
        ds = SegmentationDataset(found, 2, 4, spec, stand_in=(1, p), seed=5)
        images = [ds.batches.read(i)[0] for i in range(len(found))]
        loaded = [ds.load(i, epoch)[0] for i in range(len(found))]
        same = [bool(np.allclose(x[..., 0], x[..., 2])) for x in loaded]
        return same, images

    every, _ = substituted(1.0)
    assert all(every)
    some, _ = substituted(0.5)
    assert 0 < sum(some) < len(some) and substituted(0.5)[0] == some  # seeded
    assert substituted(0.5, epoch=1)[0] != some  # a new draw each epoch
    assert not any(substituted(0.0)[0])


def test_workers_auto_leaves_one_core_to_training(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    assert resolve_workers("auto") == 3 and resolve_workers(0) == 0
    assert resolve_workers("auto", sharing=2) == 1  # two training processes on these cores
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert resolve_workers("auto") == 0  # one core: load in the training process


def test_image_and_mask_of_different_sizes(tmp_path):
    write_png(tmp_path / "images" / "p01_a.png", np.zeros((8, 8), np.uint8))
    write_png(tmp_path / "masks" / "p01_a.png", np.zeros((8, 6), np.uint8))
    found = find_samples(data_source(tmp_path, split={"fractions": {"train": 1}}), seed=0)
    with pytest.raises(DataError, match=r"p01_a.png is 8x8 but its mask .* is 6x8"):
        SegmentationDataset(found["train"], 2, 1, ReadSpec())[0]


def test_images_of_different_sizes_in_one_batch_name_both_and_the_setting(tmp_path):
    for name, size in (("p01_a", (8, 8)), ("p01_b", (10, 6))):
        write_png(tmp_path / "images" / f"{name}.png", np.zeros(size, np.uint8))
        write_png(tmp_path / "masks" / f"{name}.png", np.zeros(size, np.uint8))
    found = find_samples(data_source(tmp_path, split={"fractions": {"train": 1}}), seed=0)
    message = r"p01_a \(.*p01_a.png\) is \(8, 8\) and p01_b .* is \(10, 6\).*image_size"
    with pytest.raises(DataError, match=message):
        SegmentationDataset(found["train"], 2, 2, ReadSpec())[0]
    x, _ = SegmentationDataset(found["train"], 2, 2, ReadSpec(image_size=(12, 8)))[0]
    assert x.shape == (2, 12, 8, 1)  # one size: both padded to it


def test_too_little_shared_memory_is_one_clear_error(samples, monkeypatch):
    class Full:
        f_bavail, f_frsize = 10, 4096  # 40 KiB free everywhere

    monkeypatch.setattr(os, "statvfs", lambda path: Full)
    ds = SegmentationDataset(samples["test"], 2, 4, ReadSpec(image_size=(256, 256)), workers=1)
    with pytest.raises(ConfigError, match=r"needs 6.0 MiB of shared memory .* free.* --shm-size"):
        ds[0]
    with pytest.raises(ConfigError, match="for its cache"):
        SegmentationDataset(samples["test"], 2, 4, ReadSpec(image_size=(512, 512)), cache="memory")
