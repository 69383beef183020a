"""Tissue detection on a low-resolution thumbnail, so a slide's glass background can be skipped.

Method (`tissue_mask`), on an RGB thumbnail of about 8 um/px:
1. Saturation S = (max - min) / max of each pixel (HSV, as skimage.color.rgb2hsv). Stained tissue
   (eosin pink S ~0.2-0.4, haematoxylin purple ~0.5) is saturated; glass is grey-white (S < 0.03).
2. Candidate pixels exclude no-data black (every channel <= 20, e.g. outside a scanned area)
   and near-white glass (every channel >= 235).
3. Threshold: Otsu's threshold (skimage.filters.threshold_otsu) of S over the candidates,
   clipped to [0.05, 0.15]. The lower bound means a blank (all glass) slide gives no tissue
   whatever its noise; the upper bound keeps pale pink tissue when a slide is all tissue (Otsu
   would then split pink from purple).
4. Clean-up, sizes in microns converted with the thumbnail's mpp: binary closing with a disk of
   radius 20 um (joins tissue torn by cracks), enclosed holes under 1 mm^2 filled (lumens, fat), objects
   under 0.01 mm^2 removed (dust, debris).

`slide_thumbnail` reads the thumbnail from the coarsest pyramid level fine enough for it, in
blocks, so a 100k px slide's level 0 is never read when the slide has a pyramid.
"""

from __future__ import annotations

import math

import numpy as np

from segzoo.slides.readers.base import Slide
from segzoo.slides.readers.resolution import LEVEL_TOLERANCE, read_scaled

THUMBNAIL_MPP = 8.0          # default thumbnail resolution, um/px
THUMBNAIL_MAX_SIDE = 2048    # and its largest side
READ_BLOCK = 4096            # slide_thumbnail reads the level in blocks of about this many pixels a side
SATURATION_BOUNDS = (0.05, 0.15)
NODATA_MAX = 20              # every channel <= this: black no-data
WHITE_MIN = 235              # every channel >= this: glass
CLOSING_UM = 20.0
MAX_HOLE_MM2 = 1.0
MIN_OBJECT_MM2 = 0.01


def slide_thumbnail(slide: Slide, target_mpp: float = THUMBNAIL_MPP,
                    max_side: int = THUMBNAIL_MAX_SIDE) -> tuple[np.ndarray, float]:
    """(thumbnail HxWx3 uint8, downsample): the slide at `target_mpp` um/px, or smaller so its
    largest side is at most `max_side` (also the rule when the slide's mpp is unknown).

    `downsample` is level-0 pixels per thumbnail pixel: thumbnail pixel (r, c) covers level-0
    [c * d, (c + 1) * d) x [r * d, (r + 1) * d); the thumbnail is ceil(W0 / d) x ceil(H0 / d).
    It is read from the coarsest level whose downsample is at most d * 1.1, resampled with
    `read_scaled` (antialiased) in blocks of about 4096 x 4096 level pixels, so memory stays
    bounded; a slide without a pyramid is read whole at level 0 this way (slow for a large slide).
    """
    if max_side < 1:
        raise ValueError(f"max_side must be >= 1, got {max_side}")
    w0, h0 = slide.level_dimensions[0]
    downsample = 1.0
    if slide.mpp is not None:
        downsample = target_mpp / slide.mpp
    downsample = max(downsample, max(w0, h0) / max_side, 1.0)
    level = 0
    for i, ds in enumerate(slide.level_downsamples):
        if ds <= downsample * LEVEL_TOLERANCE and ds >= slide.level_downsamples[level]:
            level = i
    scale = slide.level_downsamples[level] / downsample
    width, height = math.ceil(w0 / downsample), math.ceil(h0 / downsample)
    out = np.empty((height, width, 3), dtype=np.uint8)
    # blocks of thumbnail pixels whose level region is at most about 4096 x 4096 pixels
    block = max(8, int(READ_BLOCK * min(scale, 1.0)))
    for y in range(0, height, block):
        for x in range(0, width, block):
            h, w = min(block, height - y), min(block, width - x)
            out[y:y + h, x:x + w] = read_scaled(slide, level, scale, x, y, w, h)
    return out, float(downsample)


def tissue_mask(thumbnail: np.ndarray, mpp: float = THUMBNAIL_MPP) -> np.ndarray:
    """Bool HxW mask of tissue in an RGB uint8 thumbnail of `mpp` um/px (method: module docstring).

    A blank (glass or no-data) thumbnail gives an all-False mask.
    """
    from scipy import ndimage
    from skimage import filters, morphology

    rgb = np.asarray(thumbnail)
    if rgb.ndim != 3 or rgb.shape[2] < 3 or rgb.dtype != np.uint8:
        raise ValueError(f"thumbnail must be HxWx3 uint8, got shape {rgb.shape} dtype {rgb.dtype}")
    if not (math.isfinite(mpp) and mpp > 0):
        raise ValueError(f"mpp must be a positive number of microns per pixel, got {mpp!r}")
    rgb = rgb[..., :3]
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    hi = np.maximum(np.maximum(r, g), b)  # faster than reducing over the last axis of 3
    lo = np.minimum(np.minimum(r, g), b)
    saturation = (hi.astype(np.float32) - lo) / np.maximum(hi, 1).astype(np.float32)
    candidate = (hi > NODATA_MAX) & (lo < WHITE_MIN)
    if not candidate.any():
        return np.zeros(rgb.shape[:2], dtype=bool)
    values = saturation[candidate]
    threshold = SATURATION_BOUNDS[1]
    if values.min() < values.max():
        threshold = float(np.clip(filters.threshold_otsu(values), *SATURATION_BOUNDS))
    mask = candidate & (saturation > threshold)
    if not mask.any():
        return mask
    px_per_um = 1.0 / mpp
    radius = max(1, round(CLOSING_UM * px_per_um))
    # closing with a Euclidean disk via distance transforms (time independent of the radius);
    # padding keeps it from eroding tissue that touches the border
    padded = np.pad(mask, radius + 1)
    dilated = ndimage.distance_transform_edt(~padded) <= radius
    closed = ndimage.distance_transform_edt(dilated) > radius
    mask = closed[radius + 1:-radius - 1, radius + 1:-radius - 1]
    max_hole = int(MAX_HOLE_MM2 * 1e6 * px_per_um**2)
    min_object = int(MIN_OBJECT_MM2 * 1e6 * px_per_um**2)
    if max_hole >= 1:  # fill enclosed background components (not touching the border) under 1 mm^2
        holes = ndimage.binary_fill_holes(mask) & ~mask
        labels, n = ndimage.label(holes)
        if n:
            sizes = np.bincount(labels.ravel())
            small = sizes <= max_hole
            small[0] = False
            mask = mask | small[labels]
    if min_object >= 1:
        mask = morphology.remove_small_objects(mask, max_size=min_object)
    return mask
