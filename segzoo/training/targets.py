"""Training targets of the learned instance maps (segzoo.config.INSTANCE_MAPS), computed from
instance labels (HxW int, 0 = background) after augmentation, in numpy/scipy/scikit-image.

Target layout of a patch with instance maps, float32 HxWx(2 + n): channel 0 the nucleus mask,
channel 1 the instance-label weight (1 where the tile has instance labels, from XML regions;
0 for tiles with a binary mask only, whose touching nuclei are merged, so only the probability
output learns from them), then one channel per map in the model's order.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import find_boundaries

from segzoo.config import INSTANCE_MAPS


def distance_map(labels: np.ndarray) -> np.ndarray:
    """float32 HxW: in each nucleus, the Euclidean distance of a pixel to the nearest pixel outside
    that nucleus (another nucleus or background; the image border does not count as outside),
    divided by the largest such distance in the nucleus; 0 on background. Touching nuclei get
    separate hills, so the map dips between them."""
    labels = np.asarray(labels)
    out = np.zeros(labels.shape, dtype=np.float32)
    for index, box in enumerate(ndi.find_objects(labels), start=1):
        if box is None:
            continue
        (y0, y1), (x0, x1) = (box[0].start, box[0].stop), (box[1].start, box[1].stop)
        # One pixel of context on each side (outside = anything but this nucleus)...
        cy0, cx0 = max(y0 - 1, 0), max(x0 - 1, 0)
        own = labels[cy0:y1 + 1, cx0:x1 + 1] == index
        # ...and 'edge' padding so the image border is not an outline (a nucleus cut by the
        # patch border keeps its interior values).
        padded = np.pad(own, 1, mode="edge")
        distance = ndi.distance_transform_edt(padded)[1:-1, 1:-1]
        peak = distance[own].max()
        if peak > 0:
            region = out[cy0:y1 + 1, cx0:x1 + 1]
            region[own] = distance[own] / peak
    return out


def boundary_map(labels: np.ndarray) -> np.ndarray:
    """float32 HxW: 1 on the nucleus pixels 4-adjacent to a pixel of another label (background or
    another nucleus), 0 elsewhere: outlines one pixel wide inside each nucleus, two where nuclei
    touch (skimage.segmentation.find_boundaries, mode 'inner')."""
    return find_boundaries(np.asarray(labels), mode="inner", connectivity=1).astype(np.float32)


def _centred_coordinate(labels: np.ndarray, axis: int) -> np.ndarray:
    """float32 HxW: in each nucleus, (coordinate along `axis` - the nucleus' centroid there) / the
    largest |coordinate - centroid| in that nucleus (in [-1, 1]; 0 for a one-pixel-wide nucleus),
    stored as (value + 1) / 2 in [0, 1]; 0.5 on background (HoVer-Net's maps, Graham et al. 2019)."""
    labels = np.asarray(labels)
    out = np.full(labels.shape, 0.5, dtype=np.float32)
    for index, box in enumerate(ndi.find_objects(labels), start=1):
        if box is None:
            continue
        own = labels[box] == index
        coordinate = np.indices(own.shape, dtype=np.float64)[axis]
        centred = coordinate - coordinate[own].mean()
        extent = np.abs(centred[own]).max()
        region = out[box]
        region[own] = (centred[own] / extent + 1.0) / 2.0 if extent > 0 else 0.5
    return out


def horizontal_map(labels: np.ndarray) -> np.ndarray:
    """HoVer-Net's horizontal map of instance labels (x: columns), see _centred_coordinate."""
    return _centred_coordinate(labels, axis=1)


def vertical_map(labels: np.ndarray) -> np.ndarray:
    """HoVer-Net's vertical map of instance labels (y: rows), see _centred_coordinate."""
    return _centred_coordinate(labels, axis=0)


TARGETS = {"distance": distance_map, "boundary": boundary_map, "horizontal": horizontal_map,
           "vertical": vertical_map}
assert set(TARGETS) == set(INSTANCE_MAPS)


def instance_targets(mask: np.ndarray, labels: np.ndarray | None, maps: list[str] | tuple[str, ...]) -> np.ndarray:
    """float32 HxWx(2 + len(maps)) (see the module docstring) from a bool/0-1 mask HxW and the
    instance labels HxW (None: a mask-only tile, weight 0 and maps 0)."""
    mask = np.asarray(mask, dtype=np.float32)
    channels = [mask, np.full(mask.shape, 0.0 if labels is None else 1.0, np.float32)]
    for name in maps:
        if name not in TARGETS:
            raise ValueError(f"unknown instance map {name!r}; valid maps: {', '.join(TARGETS)}")
        channels.append(np.zeros(mask.shape, np.float32) if labels is None else TARGETS[name](labels))
    return np.stack(channels, axis=-1)
