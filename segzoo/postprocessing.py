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
    """int32 instance labels: connected components, split by a distance-transform
    watershed whose markers are distance maxima at least watershed_min_distance apart."""
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return np.zeros(mask.shape, dtype=np.int32)
    components, _ = ndi.label(mask)
    if not post.watershed:
        return components.astype(np.int32)
    distance = ndi.distance_transform_edt(mask)
    # Smooth the distance map so ragged outlines do not create spurious maxima.
    smoothed = ndi.gaussian_filter(distance, sigma=1.0)
    peaks = peak_local_max(smoothed, min_distance=max(int(post.watershed_min_distance), 1),
                           labels=components, exclude_border=False)
    markers = np.zeros(mask.shape, dtype=np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1, dtype=np.int32)
    # Components without a peak (tiny or flat) keep one marker of their own.
    missing = np.setdiff1d(np.unique(components[mask]), np.unique(components[markers > 0]))
    if missing.size:
        start = len(peaks) + 1
        for offset, comp in enumerate(missing):
            coords = np.argwhere(components == comp)
            markers[tuple(coords[len(coords) // 2])] = start + offset
    labels = watershed(-smoothed, markers, mask=mask)
    return labels.astype(np.int32)


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
