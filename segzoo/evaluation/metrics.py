"""Segmentation metrics in numpy: pixel metrics from binary masks and instance
metrics (AJI, PQ) from instance label maps.

Aggregates: `micro` sums pixel counts over all images before dividing (the
number the zoo's targets use); `mean` averages the per-image values. Both are
reported. Conventions for empty cases: a ratio whose denominator is 0 is 1.0
when the numerator is also 0 (nothing to find, nothing found), e.g. Dice of two
empty masks is 1.0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PIXEL_METRICS = ("accuracy", "precision", "recall", "dice", "iou")


@dataclass
class PixelCounts:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0

    def __add__(self, other: PixelCounts) -> PixelCounts:
        return PixelCounts(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn, self.tn + other.tn)

    def metrics(self) -> dict[str, float]:
        tp, fp, fn, tn = self.tp, self.fp, self.fn, self.tn
        return {
            "accuracy": _ratio(tp + tn, tp + fp + fn + tn),
            "precision": _ratio(tp, tp + fp),
            "recall": _ratio(tp, tp + fn),
            "dice": _ratio(2 * tp, 2 * tp + fp + fn),
            "iou": _ratio(tp, tp + fp + fn),
        }


def _ratio(num: float, den: float) -> float:
    return 1.0 if den == 0 and num == 0 else float(num) / float(den)


def pixel_counts(pred: np.ndarray, truth: np.ndarray) -> PixelCounts:
    """Confusion counts of two binary masks of the same shape."""
    pred = np.asarray(pred, dtype=bool)
    truth = np.asarray(truth, dtype=bool)
    if pred.shape != truth.shape:
        raise ValueError(f"prediction shape {pred.shape} != ground truth shape {truth.shape}")
    tp = int(np.count_nonzero(pred & truth))
    fp = int(np.count_nonzero(pred & ~truth))
    fn = int(np.count_nonzero(~pred & truth))
    return PixelCounts(tp, fp, fn, pred.size - tp - fp - fn)


def pixel_metrics(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Accuracy, precision, recall, Dice (=F1) and IoU of two binary masks."""
    return pixel_counts(pred, truth).metrics()


def _overlaps(truth: np.ndarray, pred: np.ndarray):
    """Sorted ids, areas and the intersection matrix (len(truth ids) x len(pred ids))."""
    t_ids, t_inv = np.unique(truth, return_inverse=True)
    p_ids, p_inv = np.unique(pred, return_inverse=True)
    t_inv = t_inv.reshape(-1)
    p_inv = p_inv.reshape(-1)
    inter = np.zeros((len(t_ids), len(p_ids)), dtype=np.int64)
    np.add.at(inter, (t_inv, p_inv), 1)
    # Drop background (id 0) rows/columns when present.
    t_keep = t_ids != 0
    p_keep = p_ids != 0
    t_area = inter.sum(axis=1)[t_keep]
    p_area = inter.sum(axis=0)[p_keep]
    return inter[np.ix_(t_keep, p_keep)], t_area, p_area


def aggregated_jaccard_index(truth: np.ndarray, pred: np.ndarray) -> float:
    """AJI (Kumar et al., IEEE TMI 2017) of two instance label maps (0 = background).

    Each ground-truth nucleus is matched to the predicted nucleus of highest IoU;
    intersections and unions of the matches are summed, and every predicted
    nucleus never used as a match adds its area to the union.
    """
    truth = np.asarray(truth)
    pred = np.asarray(pred)
    if truth.shape != pred.shape:
        raise ValueError(f"prediction shape {pred.shape} != ground truth shape {truth.shape}")
    inter, t_area, p_area = _overlaps(truth, pred)
    if len(t_area) == 0:
        return 1.0 if len(p_area) == 0 else 0.0
    if len(p_area) == 0:
        return 0.0
    union = t_area[:, None] + p_area[None, :] - inter
    iou = inter / union
    best = np.argmax(iou, axis=1)
    rows = np.arange(len(t_area))
    matched = inter[rows, best] > 0
    c = int(inter[rows, best][matched].sum())
    u = int(union[rows, best][matched].sum()) + int(t_area[~matched].sum())
    used = np.zeros(len(p_area), dtype=bool)
    used[best[matched]] = True
    u += int(p_area[~used].sum())
    return _ratio(c, u)


def panoptic_quality(truth: np.ndarray, pred: np.ndarray, iou_threshold: float = 0.5) -> dict[str, float]:
    """PQ = DQ x SQ (Kirillov et al. 2019) for one class; matches need IoU > 0.5,
    which makes them unique."""
    truth = np.asarray(truth)
    pred = np.asarray(pred)
    if truth.shape != pred.shape:
        raise ValueError(f"prediction shape {pred.shape} != ground truth shape {truth.shape}")
    inter, t_area, p_area = _overlaps(truth, pred)
    if len(t_area) == 0 and len(p_area) == 0:
        return {"pq": 1.0, "dq": 1.0, "sq": 1.0, "tp": 0, "fp": 0, "fn": 0}
    if len(t_area) and len(p_area):
        iou = inter / (t_area[:, None] + p_area[None, :] - inter)
        matches = iou > iou_threshold
    else:
        iou = np.zeros((len(t_area), len(p_area)))
        matches = iou > iou_threshold
    tp = int(matches.sum())
    fn = len(t_area) - tp
    fp = len(p_area) - tp
    sq = float(iou[matches].sum() / tp) if tp else 0.0
    dq = tp / (tp + 0.5 * fp + 0.5 * fn)
    return {"pq": dq * sq, "dq": dq, "sq": sq, "tp": tp, "fp": fp, "fn": fn}


def instance_errors(truth: np.ndarray, pred: np.ndarray) -> dict[str, int]:
    """Counts of the three instance errors of a prediction against annotated nuclei.

    - split: annotated nuclei covered >= 20% each by two or more predicted nuclei that
      lie >= 50% inside them (one nucleus cut into pieces);
    - merged: predicted nuclei covering >= 50% of each of two or more annotated nuclei
      (several nuclei reported as one);
    - unmatched: predicted nuclei touching no annotated nucleus (false detections);
    with the totals `truth` and `pred` they are counted against (labels 0 = background).
    """
    truth = np.asarray(truth)
    pred = np.asarray(pred)
    if truth.shape != pred.shape:
        raise ValueError(f"prediction shape {pred.shape} != ground truth shape {truth.shape}")
    inter, t_area, p_area = _overlaps(truth, pred)
    counts = {"truth": len(t_area), "pred": len(p_area), "split": 0, "merged": 0, "unmatched": 0}
    if len(p_area) == 0:
        return counts
    if len(t_area) == 0:
        counts["unmatched"] = len(p_area)
        return counts
    of_truth = inter / t_area[:, None]  # share of each annotated nucleus a prediction covers
    of_pred = inter / p_area[None, :]   # share of each prediction inside an annotated nucleus
    pieces = (of_truth >= 0.2) & (of_pred >= 0.5)
    counts["split"] = int(np.count_nonzero(pieces.sum(axis=1) >= 2))
    counts["merged"] = int(np.count_nonzero((of_truth >= 0.5).sum(axis=0) >= 2))
    counts["unmatched"] = int(np.count_nonzero(inter.sum(axis=0) == 0))
    return counts


def instance_error_rates(counts: dict[str, int]) -> dict[str, float]:
    """split_rate (of annotated nuclei), merge_rate and unmatched_rate (of predicted nuclei)
    from instance_errors() counts, or their sums over several images."""
    return {"split_rate": counts["split"] / counts["truth"] if counts["truth"] else 0.0,
            "merge_rate": counts["merged"] / counts["pred"] if counts["pred"] else 0.0,
            "unmatched_rate": counts["unmatched"] / counts["pred"] if counts["pred"] else 0.0}
