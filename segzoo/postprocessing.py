"""Probabilities -> binary mask -> nuclei instance labels (numpy/scipy/scikit-image).

Shared by evaluation and every runtime; does not import Keras.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.feature import peak_local_max
from skimage.segmentation import watershed

from segzoo.config import Postprocessing


def label_sizes(labels: np.ndarray, count: int, block_rows: int = 1024) -> np.ndarray:
    """Pixel count per label 0..count, in row blocks (np.bincount copies its input to int64)."""
    sizes = np.zeros(count + 1, dtype=np.int64)
    for start in range(0, labels.shape[0], block_rows):
        sizes += np.bincount(labels[start:start + block_rows].ravel(), minlength=count + 1)
    return sizes


def _drop_small_components(mask: np.ndarray, min_size: int) -> np.ndarray:
    """`mask` without its 8-connected components smaller than `min_size` pixels (in place).

    Uses int32 labels (4 bytes/pixel); scikit-image's remove_small_objects labels
    in int64, which doubles peak memory on large images.
    """
    labels, count = ndi.label(mask, structure=np.ones((3, 3), bool))
    if count:
        small = label_sizes(labels, count) < min_size
        small[0] = False
        mask[small[labels]] = False
    return mask


def probabilities_to_mask(prob: np.ndarray, post: Postprocessing) -> np.ndarray:
    """Threshold, fill holes smaller than fill_holes_size, drop objects below min_object_size."""
    mask = np.asarray(prob) >= post.threshold
    if post.fill_holes_size > 1:
        holes = ~mask
        _drop_small_components(holes, post.fill_holes_size)  # keeps only the large background regions
        np.logical_not(holes, out=holes)
        mask = holes
    if post.min_object_size > 1:
        _drop_small_components(mask, post.min_object_size)
    return mask


def mask_to_instances(mask: np.ndarray, post: Postprocessing) -> np.ndarray:
    """int32 instance labels: connected components, each split by a watershed on its
    (smoothed) distance transform, with markers at distance maxima at least
    watershed_min_distance apart. Components are processed one bounding box at a
    time, so memory stays proportional to the largest nucleus cluster, not the image."""
    mask = np.asarray(mask, dtype=bool)
    components, count = ndi.label(mask)
    components = components.astype(np.int32, copy=False)
    if count == 0 or not post.watershed:
        return components
    labels = np.zeros_like(components)
    next_id = 1
    min_distance = max(int(post.watershed_min_distance), 1)
    for index, box in enumerate(ndi.find_objects(components), start=1):
        if box is None:
            continue
        region = components[box] == index
        target = labels[box]
        if region.sum() < 4 * min_distance * min_distance:  # too small to hold two nuclei
            target[region] = next_id
            next_id += 1
            continue
        distance = ndi.distance_transform_edt(np.pad(region, 1))[1:-1, 1:-1].astype(np.float32)
        # Smooth so that ragged outlines do not create spurious maxima.
        smoothed = ndi.gaussian_filter(distance, sigma=1.0, output=np.float32)
        peaks = peak_local_max(smoothed, min_distance=min_distance, labels=region.astype(np.int32),
                               exclude_border=False)
        if len(peaks) <= 1:
            target[region] = next_id
            next_id += 1
            continue
        markers = np.zeros(region.shape, dtype=np.int32)
        markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1, dtype=np.int32)
        split = watershed(-smoothed, markers, mask=region)
        target[region] = split[region] + (next_id - 1)
        next_id += len(peaks)
    return labels


def probabilities_to_instances(prob: np.ndarray, post: Postprocessing) -> tuple[np.ndarray, np.ndarray]:
    """(mask, labels) from a probability map with the config's post-processing."""
    mask = probabilities_to_mask(prob, post)
    labels = mask_to_instances(mask, post)
    if post.min_object_size > 0 and labels.max() > 0:
        sizes = label_sizes(labels, int(labels.max()))
        small = sizes < post.min_object_size
        small[0] = False
        if small.any():
            labels[small[labels]] = 0
    return mask, labels
