"""Probabilities -> binary mask -> nuclei instance labels (numpy/scipy/scikit-image), the
no-data mask, and the nucleus count of a label image.

Shared by evaluation, training and every runtime; does not import Keras.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import watershed

from segzoo.config import ModelConfig, Postprocessing


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


NO_DATA_DARK_MAX = 10
"""A pixel is no-data black when each of R, G, B is <= this (uint8). Haematoxylin-stained
nuclei are never this dark: the darkest pixel of the 44 MoNuSeg tiles has max(R, G, B) = 17."""
NO_DATA_WIDTH = 5
"""No-data regions are opened by a NO_DATA_WIDTH x NO_DATA_WIDTH square: lines and specks
narrower than that are not no-data."""
NO_DATA_MIN_AREA = 1024
"""...and no-data regions smaller than this many pixels (a 32x32 square, larger than a nucleus
at 40x) are not no-data either, so a dark or saturated speck inside tissue is left alone."""


def no_data_mask(image: np.ndarray) -> np.ndarray:
    """bool HxW, True where a uint8 RGB (HxWx3) image holds no tissue.

    Rule: a pixel is a no-data candidate when it is black padding (R, G and B all
    <= NO_DATA_DARK_MAX) or a pure white fill (R = G = B = 255, as some scanners write
    outside the scanned area). Candidates count only in sizable regions: the candidate
    mask is opened by a NO_DATA_WIDTH-pixel square, then 8-connected regions smaller than
    NO_DATA_MIN_AREA pixels are dropped. So a dark nucleus pixel, or a few saturated pixels
    in a lumen, are never no-data; slide and scan borders, tile padding and empty fields are.
    The predictor fills these regions with mirrored tissue before the network sees them
    (segzoo.predict.preprocessing.fill_no_data) and sets the nucleus probability to 0 there
    afterwards: no nucleus is found in nothing, and nuclei next to it are not suppressed.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] < 3 or image.dtype != np.uint8:
        raise ValueError(f"no_data_mask expects an HxWx3 uint8 image, got {image.shape} {image.dtype}")
    r, g, b = image[..., 0], image[..., 1], image[..., 2]
    candidate = np.maximum(np.maximum(r, g), b) <= NO_DATA_DARK_MAX  # (faster than max(axis=-1))
    candidate |= np.minimum(np.minimum(r, g), b) == 255
    if np.count_nonzero(candidate) < NO_DATA_MIN_AREA:
        return np.zeros(candidate.shape, dtype=bool)
    # Opening by a square as separable min/max filters ('nearest': regions at the image
    # border are not eroded by the border itself).
    opened = ndi.minimum_filter(candidate.view(np.uint8), size=NO_DATA_WIDTH, mode="nearest")
    opened = ndi.maximum_filter(opened, size=NO_DATA_WIDTH, mode="nearest").view(bool)
    opened &= candidate  # a square opening never adds pixels; keeps the dtype exact
    return _drop_small_components(opened, NO_DATA_MIN_AREA)


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


STRIP_PIXELS = 1 << 22
"""Pixels per row strip in mask_to_instances (about 4 Mpx: a 1000x1000 tile is one strip,
so no context rows are computed twice; a 10000-pixel-wide image gets 419-row strips)."""


def split_outputs(outputs: np.ndarray, config: ModelConfig) -> tuple[np.ndarray, np.ndarray | None]:
    """(nucleus probability HxW, centre score HxW or None) from a network output HxWxK.

    The centre score is what the learned-map watershed floods from (high at nucleus centres, in
    [0, 1]): the "distance" map as it is, 1 - the "boundary" map. None when the config's
    post-processing uses no learned map (then mask_to_instances uses the distance transform)."""
    outputs = np.asarray(outputs)
    channels = config.instance_channels()
    prob = outputs[..., 0]
    if not channels:
        return prob, None
    used = config.postprocessing.instance_map
    if used == "hv":
        return prob, hv_centre_score(outputs[..., channels[0]], outputs[..., channels[1]])
    score = outputs[..., channels[0]].astype(np.float32, copy=False)
    if used == "boundary":
        score = 1.0 - score
    return prob, score


def hv_centre_score(horizontal: np.ndarray, vertical: np.ndarray) -> np.ndarray:
    """float32 HxW centre score in [0, 1] from HoVer-Net maps stored in [0, 1] (segzoo.config.
    INSTANCE_MAPS): 1 - max(|dh/dx|, |dv/dy|) clipped to [0, 1], where h = 2 * horizontal - 1 and
    v = 2 * vertical - 1 and the derivatives are Sobel's (per pixel). Inside a nucleus of radius r
    the maps rise by about 1/r per pixel (score about 1 - 1/r); where two nuclei touch they flip
    from +1 to -1 within a pixel or two (score near 0). A fixed scale rather than HoVer-Net's
    per-image min-max normalisation keeps the score local (3x3), so slide chunks agree with a
    whole-image pass."""
    h = 2.0 * np.asarray(horizontal, dtype=np.float32) - 1.0
    v = 2.0 * np.asarray(vertical, dtype=np.float32) - 1.0
    dx = np.abs(ndi.sobel(h, axis=1, mode="nearest")) / 8.0  # Sobel's 1-2-1 x 1-0-1 kernel sums to 8x the slope
    dy = np.abs(ndi.sobel(v, axis=0, mode="nearest")) / 8.0
    return np.clip(1.0 - np.maximum(dx, dy), 0.0, 1.0).astype(np.float32)


def mask_to_instances(mask: np.ndarray, post: Postprocessing, strip_rows: int | None = None,
                      centres: np.ndarray | None = None) -> np.ndarray:
    """int32 instance labels: connected components, each split by a watershed.

    Without `centres`: on the (smoothed) distance transform, with one marker per local maximum
    of that distance (a (2*watershed_min_distance+1)-pixel window; a flat top is one marker);
    components smaller than 4*watershed_min_distance**2 pixels stay whole. With `centres` (a
    learned centre score HxW in [0, 1], see split_outputs): on that score, with one marker per
    8-connected region of score >= post.marker_threshold; no distance transform, smoothing or
    maximum filter, which is most of the time of the other path. Either way components with
    fewer than two markers of their own stay whole.

    Works on row strips holding the components that start in them (plus context rows), so
    memory grows with the strip (strip_rows x width, plus the tallest component; by default
    STRIP_PIXELS, at least 256 rows), not with the image, and the per-pixel work is vectorised over all components of a strip at once;
    the strips give the same markers as one whole-image pass (the watershed may break ties
    on a split line differently)."""
    mask = np.asarray(mask, dtype=bool)
    components, count = ndi.label(mask)
    components = components.astype(np.int32, copy=False)
    if count == 0 or not post.watershed:
        return components
    min_distance = max(int(post.watershed_min_distance), 1)
    boxes = ndi.find_objects(components)
    tops = np.array([box[0].start for box in boxes])
    bottoms = np.array([box[0].stop for box in boxes])
    if centres is None:
        splittable = label_sizes(components, count) >= 4 * min_distance * min_distance
        splittable[0] = False
    else:  # (with centres every component may split)
        centres = np.asarray(centres, dtype=np.float32)
        if centres.shape != mask.shape:
            raise ValueError(f"centres {centres.shape} and mask {mask.shape} differ in shape")
    labels = np.zeros_like(components)
    if strip_rows is None:
        strip_rows = max(256, STRIP_PIXELS // max(mask.shape[1], 1))
    next_id = 1
    halo = 64 + min_distance  # > any nucleus radius + the smoothing and maximum windows
    for y0 in range(0, mask.shape[0], strip_rows):
        ids = np.flatnonzero((tops >= y0) & (tops < y0 + strip_rows)) + 1
        if len(ids) == 0:
            continue
        # The strip's own components, plus `halo` rows of context above and below so the
        # distance, smoothing and maxima near them are what a whole-image pass would give.
        c0 = max(y0 - halo, 0)
        c1 = min(int(bottoms[ids - 1].max()) + halo, mask.shape[0])
        region = components[c0:c1]
        member = np.zeros(count + 1, dtype=bool)
        member[ids] = True
        own = member[region]
        if centres is None:
            # Pad with background so nuclei touching the image border get distance 1 there.
            distance = ndi.distance_transform_edt(np.pad(region > 0, 1))[1:-1, 1:-1].astype(np.float32)
            smoothed = ndi.gaussian_filter(distance, sigma=1.0, output=np.float32)  # no spurious maxima
            del distance
            peaks = smoothed == ndi.maximum_filter(smoothed, size=2 * min_distance + 1)
        else:
            smoothed = centres[c0:c1]
            peaks = smoothed >= post.marker_threshold
        peaks &= own
        if centres is None:
            peaks &= splittable[region]
        blobs, _ = ndi.label(peaks, structure=np.ones((3, 3), dtype=bool))  # a flat top is one marker...
        # ...within one component (a blob may touch two components at a corner).
        keys, inverse = np.unique(blobs[peaks].astype(np.int64) * (count + 1) + region[peaks], return_inverse=True)
        del blobs
        n_markers = len(keys)
        markers = np.zeros(region.shape, dtype=np.int32)
        markers[peaks] = inverse.reshape(-1) + 1
        del peaks
        # Only components with two or more markers need a watershed; the others stay whole.
        component_of_marker = np.zeros(n_markers + 1, dtype=np.int32)
        component_of_marker[1:] = keys % (count + 1)
        multi = np.bincount(component_of_marker[1:], minlength=count + 1) >= 2
        multi[0] = False
        kept = multi[component_of_marker]  # markers that take part in a watershed
        renumber = np.zeros(n_markers + 1, dtype=np.int32)
        renumber[kept] = np.arange(next_id, next_id + int(kept.sum()), dtype=np.int32)
        next_id += int(kept.sum())
        flood = own & multi[region]
        out = np.zeros(region.shape, dtype=np.int32)
        rows = np.flatnonzero(flood.any(axis=1))
        if len(rows):
            # Flood only the rows and columns that hold components to split.
            cols = np.flatnonzero(flood.any(axis=0))
            box = np.s_[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
            out[box] = watershed(-smoothed[box], renumber[markers[box]], mask=flood[box])
        del smoothed, markers
        # The strip's other components stay whole: numbered in order after the split ones (out is
        # 0 outside the flooded components, the lookup 0 for every other component).
        ids_whole = ids[~multi[ids]]
        if len(ids_whole):
            lookup = np.zeros(count + 1, dtype=np.int32)
            lookup[ids_whole] = np.arange(next_id, next_id + len(ids_whole), dtype=np.int32)
            out += lookup[region]
            next_id += len(ids_whole)
        np.copyto(labels[c0:c1], out, where=own)
    return labels


def probabilities_to_instances(prob: np.ndarray, post: Postprocessing,
                               centres: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(mask, labels) from a probability map with the config's post-processing; `centres`: the
    learned centre score (split_outputs) when the config uses an instance map."""
    if (centres is None) != (post.instance_map is None):
        raise ValueError(f"postprocessing.instance_map is {post.instance_map!r} but centres "
                         f"{'were not' if centres is None else 'were'} given (see split_outputs)")
    mask = probabilities_to_mask(prob, post)
    labels = mask_to_instances(mask, post, centres=centres)
    if post.min_object_size > 0 and labels.max() > 0:
        sizes = label_sizes(labels, int(labels.max()))
        small = sizes < post.min_object_size
        small[0] = False
        if small.any():
            labels[small[labels]] = 0
    return mask, labels


def outputs_to_instances(outputs: np.ndarray, config: ModelConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(prob HxW float32, mask, labels) from a network output HxWxK with `config`'s post-processing."""
    prob, centres = split_outputs(outputs, config)
    mask, labels = probabilities_to_instances(prob, config.postprocessing, centres)
    return prob.astype(np.float32, copy=False), mask, labels


def count_nuclei(labels: np.ndarray) -> int:
    """The number of nuclei of an instance label image: distinct labels other than 0 (background)."""
    labels = np.asarray(labels)
    if not labels.any():
        return 0
    return int(np.count_nonzero(np.unique(labels)))
