"""Probabilities -> binary mask -> nuclei instance labels (numpy/scipy/scikit-image).

Shared by evaluation and every runtime; does not import Keras.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.feature import peak_local_max
from skimage.morphology import remove_small_holes, remove_small_objects
from skimage.segmentation import watershed

from segzoo.config import Postprocessing


def probabilities_to_mask(prob: np.ndarray, post: Postprocessing) -> np.ndarray:
    """Threshold, drop objects below min_object_size, fill small holes."""
    mask = np.asarray(prob) >= post.threshold
    if post.min_object_size > 1:
        mask = remove_small_objects(mask, max_size=post.min_object_size - 1)
    if post.fill_holes_size > 1:
        mask = remove_small_holes(mask, max_size=post.fill_holes_size - 1)
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
        distance = ndi.distance_transform_edt(np.pad(region, 1))[1:-1, 1:-1]
        # Smooth so that ragged outlines do not create spurious maxima.
        smoothed = ndi.gaussian_filter(distance, sigma=1.0)
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
        sizes = np.bincount(labels.ravel())
        small = sizes < post.min_object_size
        small[0] = False
        if small.any():
            labels[small[labels]] = 0
    return mask, labels
