"""Metrics against hand-computed cases."""

import numpy as np
import pytest

from segzoo.metrics import aggregated_jaccard_index, panoptic_quality, pixel_counts, pixel_metrics


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
