from __future__ import annotations

import keras
import numpy as np
import pytest
from scipy import ndimage

from flexseg.metrics import (
    ConfusionMetric,
    counts_np,
    detection_by_size,
    dice_np,
    hd95,
    iou_np,
    lesion_counts,
    lesion_f1,
    lesion_sizes,
    mean_surface_distance,
    segmentation_metrics,
)


def one_hot(ids, k=2):
    return np.eye(k, dtype=np.float32)[np.asarray(ids)]


def scores(ids, k=2):
    return one_hot(ids, k) * 0.8 + 0.1  # class probabilities whose argmax is `ids`


def result(metric) -> float:
    return float(keras.ops.convert_to_numpy(metric.result()))


def test_streaming_dice_is_micro_over_all_pixels():
    truth = np.array([[[1, 1, 0, 0]], [[0, 0, 0, 0]]])
    pred = np.array([[[1, 0, 0, 0]], [[1, 0, 0, 0]]])
    metric = ConfusionMetric(2, "fg_dice")
    metric.update_state(one_hot(truth[:1]), scores(pred[:1]))
    metric.update_state(one_hot(truth[1:]), scores(pred[1:]))
    # tp = 1, fp = 1, fn = 1 over both batches.
    assert result(metric) == pytest.approx(2 * 1 / (2 * 1 + 1 + 1))
    metric.reset_state()
    metric.update_state(one_hot(truth), scores(truth))
    assert result(metric) == pytest.approx(1.0)


def test_pixel_accuracy_is_not_dice():
    truth = np.zeros((1, 10, 10), int)
    truth[0, 0, 0] = 1
    pred = np.zeros_like(truth)  # finds nothing
    accuracy, dice = ConfusionMetric(2, "pixel_accuracy"), ConfusionMetric(2, "fg_dice")
    for metric in (accuracy, dice):
        metric.update_state(one_hot(truth), scores(pred))
    assert result(accuracy) == pytest.approx(0.99)
    assert result(dice) == pytest.approx(0.0)


def test_empty_truth_and_prediction_count_as_perfect():
    empty = np.zeros((1, 4, 4), int)
    metric = ConfusionMetric(2, "fg_dice")
    metric.update_state(one_hot(empty), scores(empty))
    assert result(metric) == 1.0
    np.testing.assert_array_equal(dice_np(counts_np(empty, empty, 2)), [1.0, 1.0])
    # Truth empty but something predicted: 0.
    pred = empty.copy()
    pred[0, 0, 0] = 1
    assert dice_np(counts_np(empty, pred, 2))[1] == 0.0


def test_per_class_dice_and_iou_against_numpy():
    rng = np.random.default_rng(0)
    truth, pred = rng.integers(0, 3, (2, 8, 8)), rng.integers(0, 3, (2, 8, 8))
    counts = counts_np(truth, pred, 3)
    for c in range(3):
        t, p = truth == c, pred == c
        inter = (t & p).sum()
        assert dice_np(counts)[c] == pytest.approx(2 * inter / (t.sum() + p.sum()))
        assert iou_np(counts)[c] == pytest.approx(inter / (t | p).sum())
        for kind, expected in (("dice", dice_np(counts)[c]), ("iou", iou_np(counts)[c])):
            metric = ConfusionMetric(3, kind, class_id=c)
            metric.update_state(one_hot(truth, 3), scores(pred, 3))
            assert result(metric) == pytest.approx(expected, rel=1e-6)
    fg = ConfusionMetric(3, "fg_dice")
    fg.update_state(one_hot(truth, 3), scores(pred, 3))
    assert result(fg) == pytest.approx(dice_np(counts)[1:].mean(), rel=1e-6)


def test_metric_names_say_what_they_are():
    assert [m.name for m in segmentation_metrics(2)] == ["fg_dice", "pixel_accuracy"]
    assert [m.name for m in segmentation_metrics(3)] == [
        "fg_dice",
        "dice_class_1",
        "dice_class_2",
        "pixel_accuracy",
    ]


def test_lesion_counts_on_hand_made_masks():
    truth = np.zeros((2, 12, 12), bool)
    truth[0, 1:3, 1:3] = True  # lesion A: found
    truth[1, 1:3, 1:3] = True  # ... the same lesion on the next slice (a face neighbour)
    truth[0, 8:10, 8:10] = True  # lesion B: missed
    truth[1, 5, 9] = True  # lesion C, one pixel: found by a touch
    pred = np.zeros_like(truth)
    pred[1, 2:4, 2:4] = True  # overlaps A
    pred[1, 5:7, 9] = True  # covers C and goes on
    pred[0, 5:7, 4:6] = True  # touches nothing: false
    pred[1, 10, 1] = True  # touches nothing: false
    assert lesion_counts(truth, pred).tolist() == [2, 1, 2]
    assert lesion_f1(lesion_counts(truth, pred)) == pytest.approx(4 / (4 + 1 + 2))
    # Diagonal neighbours are separate lesions; slices apart count apart in 2-D.
    diagonal = np.zeros((6, 6), bool)
    diagonal[1, 1] = diagonal[2, 2] = True
    assert lesion_counts(diagonal, np.zeros_like(diagonal)).tolist() == [0, 2, 0]
    assert lesion_counts(diagonal, diagonal).tolist() == [2, 0, 0]
    empty = np.zeros((4, 4), bool)
    assert lesion_counts(empty, empty).tolist() == [0, 0, 0] and lesion_f1(np.zeros(3)) == 1.0


def test_lesions_are_found_by_size():
    truth = np.zeros((40, 40), bool)
    truth[0:10, 0:10] = True  # 100 px: found
    truth[20:22, 20:22] = True  # 4 px: missed
    truth[30, 30] = True  # 1 px: found
    truth[12:20, 25:40] = True  # 120 px: missed
    pred = np.zeros_like(truth)
    pred[5, 5] = pred[30, 30] = True
    sizes, detected = lesion_sizes(truth, pred)
    found = sorted(zip(sizes.tolist(), detected.tolist(), strict=True))
    assert found == [(1, True), (4, False), (100, True), (120, False)]
    assert detected.sum() == lesion_counts(truth, pred)[0]
    by_size = detection_by_size([(sizes, detected), (np.array([10**5]), np.array([True]))])
    assert by_size == {
        "1-99 px": {"lesions": 2, "detected": 1},
        "100-999 px": {"lesions": 2, "detected": 1},
        "1000-9999 px": {"lesions": 0, "detected": 0},
        ">=10000 px": {"lesions": 1, "detected": 1},
    }
    assert sum(n["lesions"] for n in detection_by_size([]).values()) == 0


def test_hd95_of_a_shifted_square_and_empty_cases():
    truth = np.zeros((20, 20), bool)
    truth[5:10, 5:10] = True
    shifted = np.roll(truth, 3, axis=1)
    assert hd95(truth, shifted) == pytest.approx(3.0)
    assert hd95(truth, truth) == 0.0
    assert hd95(np.zeros_like(truth), np.zeros_like(truth)) == 0.0
    assert np.isnan(hd95(truth, np.zeros_like(truth)))


def test_hd95_of_a_small_lesion_in_a_large_volume_is_exact():
    """Distances are computed in the box around both masks: the same as in the whole volume."""
    rng = np.random.default_rng(0)
    truth = np.zeros((6, 200, 200), bool)
    truth[2:4, 50:58, 120:131] = rng.random((2, 8, 11)) < 0.8
    pred = np.zeros_like(truth)
    pred[1:4, 52:61, 118:128] = rng.random((3, 9, 10)) < 0.8
    pred[5, 199, 0] = True  # a far false positive at the volume's edge
    bt = truth & ~ndimage.binary_erosion(truth, border_value=0)
    bp = pred & ~ndimage.binary_erosion(pred, border_value=0)
    whole = np.concatenate(
        [ndimage.distance_transform_edt(~bt)[bp], ndimage.distance_transform_edt(~bp)[bt]]
    )
    assert hd95(truth, pred) == pytest.approx(np.percentile(whole, 95))


def test_hd95_and_surface_distance_in_mm_with_anisotropic_spacing():
    """Against a reference from first principles: every boundary voxel's distance, in mm, to
    the nearest boundary voxel of the other mask, by brute force over voxel centres."""
    from scipy.spatial.distance import cdist

    rng = np.random.default_rng(4)
    spacing = (3.0, 0.7, 1.3)  # a thick-slice scan: slices 3 mm apart
    truth = np.zeros((9, 24, 20), bool)
    truth[2:6, 4:15, 5:14] = True
    pred = ndimage.binary_dilation(truth, iterations=2) & (rng.random(truth.shape) > 0.2)
    pred[7, 20:23, 15:18] = True  # a false blob far away

    def boundary(mask):
        eroded = ndimage.binary_erosion(mask, ndimage.generate_binary_structure(3, 1))
        return np.argwhere(mask & ~eroded) * np.array(spacing)

    apart = cdist(boundary(truth), boundary(pred))
    both = np.concatenate([apart.min(axis=1), apart.min(axis=0)])
    assert hd95(truth, pred, spacing) == pytest.approx(np.percentile(both, 95), abs=1e-3)
    assert mean_surface_distance(truth, pred, spacing) == pytest.approx(both.mean(), abs=1e-3)
    # in voxels when no spacing is given, and the mm figure is not that one
    assert hd95(truth, pred) != pytest.approx(hd95(truth, pred, spacing))
    assert np.isnan(mean_surface_distance(truth, np.zeros_like(truth), spacing))


def test_bad_metric_arguments():
    with pytest.raises(ValueError, match="class_id"):
        ConfusionMetric(2, "dice", class_id=2)
    with pytest.raises(ValueError, match="kind"):
        ConfusionMetric(2, "accuracy")
