"""Metrics against hand-computed cases."""

import numpy as np
import pytest

from segzoo.evaluation.metrics import (
    aggregated_jaccard_index,
    instance_error_rates,
    instance_errors,
    panoptic_quality,
    pixel_counts,
    pixel_metrics,
)


def test_pixel_metrics_hand_computed():
    truth = np.array([[1, 1, 0, 0], [1, 1, 0, 0]], bool)
    pred = np.array([[1, 0, 1, 0], [1, 0, 0, 0]], bool)
    # tp=2 fp=1 fn=2 tn=3
    m = pixel_metrics(pred, truth)
    assert m["accuracy"] == pytest.approx(5 / 8)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 4)
    assert m["dice"] == pytest.approx(4 / 7)
    assert m["iou"] == pytest.approx(2 / 5)


def test_empty_masks_and_micro_aggregation():
    empty = np.zeros((3, 3), bool)
    assert pixel_metrics(empty, empty)["dice"] == 1.0
    a = pixel_counts(np.ones((2, 2), bool), np.ones((2, 2), bool))
    b = pixel_counts(np.zeros((2, 2), bool), np.ones((2, 2), bool))
    assert (a + b).metrics()["dice"] == pytest.approx(8 / 12)  # micro, not mean of 1.0 and 0.0


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="shape"):
        pixel_metrics(np.zeros((2, 2)), np.zeros((2, 3)))


def test_aji_hand_computed():
    truth = np.zeros((4, 6), int)
    truth[:, 0:2] = 1  # 8 px
    truth[:, 3:5] = 2  # 8 px
    pred = np.zeros((4, 6), int)
    pred[:, 0:3] = 5  # overlaps truth 1 in 8 px, union 12
    pred[0:2, 3:5] = 7  # overlaps truth 2 in 4 px, union 8
    pred[3, 5] = 9  # unmatched false positive, 1 px
    # C = 8 + 4 = 12; U = 12 + 8 + 1 = 21
    assert aggregated_jaccard_index(truth, pred) == pytest.approx(12 / 21)
    assert aggregated_jaccard_index(truth, truth) == 1.0
    assert aggregated_jaccard_index(truth, np.zeros_like(truth)) == 0.0


def test_aji_missed_nucleus_counts_in_union():
    truth = np.zeros((2, 4), int)
    truth[:, :2] = 1
    truth[:, 2:] = 2
    pred = np.zeros((2, 4), int)
    pred[:, :2] = 1
    assert aggregated_jaccard_index(truth, pred) == pytest.approx(4 / 8)


def test_pq_hand_computed():
    truth = np.zeros((4, 6), int)
    truth[:, 0:2] = 1
    truth[:, 3:5] = 2
    pred = np.zeros((4, 6), int)
    pred[:, 0:3] = 5  # IoU 8/12 > 0.5: match
    pred[0:2, 3:5] = 7  # IoU 4/8 = 0.5: not a match (needs > 0.5)
    r = panoptic_quality(truth, pred)
    assert (r["tp"], r["fp"], r["fn"]) == (1, 1, 1)
    assert r["sq"] == pytest.approx(8 / 12)
    assert r["dq"] == pytest.approx(1 / 2)
    assert r["pq"] == pytest.approx(8 / 12 / 2)
    assert panoptic_quality(truth, truth)["pq"] == 1.0


def test_instance_errors_split_merge_unmatched_hand_built():
    truth = np.zeros((20, 40), np.int32)
    truth[2:12, 2:12] = 1      # cut in two by the prediction
    truth[2:12, 20:25] = 2     # merged with 3 by one prediction
    truth[2:12, 25:30] = 3
    truth[14:18, 2:6] = 4      # found as it is
    pred = np.zeros_like(truth)
    pred[2:12, 2:7] = 1
    pred[2:12, 7:12] = 2
    pred[2:12, 20:30] = 3
    pred[14:18, 2:6] = 4
    pred[15:18, 34:38] = 5     # touches no annotated nucleus
    pred[0:2, 2:4] = 6         # touches nucleus 1 only outside it: not unmatched, not a piece
    pred[1:3, 2:4] = 6
    counts = instance_errors(truth, pred)
    assert counts == {"truth": 4, "pred": 6, "split": 1, "merged": 1, "unmatched": 1}
    rates = instance_error_rates(counts)
    assert rates == {"split_rate": 0.25, "merge_rate": 1 / 6, "unmatched_rate": 1 / 6}


def test_instance_errors_thresholds_and_empty_cases():
    truth = np.zeros((10, 10), np.int32)
    truth[0:10, 0:10] = 1
    pred = np.zeros_like(truth)
    pred[0:10, 0:1] = 1        # 10% of the nucleus: too small to count as a piece
    pred[0:10, 1:10] = 2
    assert instance_errors(truth, pred)["split"] == 0
    empty = np.zeros_like(truth)
    assert instance_errors(empty, empty) == {"truth": 0, "pred": 0, "split": 0, "merged": 0, "unmatched": 0}
    assert instance_errors(empty, pred)["unmatched"] == 2
    assert instance_error_rates(instance_errors(truth, empty)) == {
        "split_rate": 0.0, "merge_rate": 0.0, "unmatched_rate": 0.0}
