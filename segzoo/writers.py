"""Writers for prediction outputs. Every file is written atomically (temporary
file in the target folder, then rename), so a crash never leaves a partial file,
and write_output_set() writes one image's files as a set: all of them or none.

PNG and TIFF outputs carry the Software tag "segzoo <version>" (OUTPUT_SOFTWARE),
so a later run can tell its own earlier outputs from a user's images.

Per-nucleus measurements and outlines (nucleus_table -> NucleusTable) are computed once,
vectorised over all nuclei, and can be placed in another frame (offset, scale: a whole-slide
chunk in level-0 pixels); see the coordinates note above nucleus_measurements. Renderers
(*_bytes) are pure functions of their arrays."""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import secrets
import stat
import struct
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segzoo.config import atomic_write_bytes

log = logging.getLogger(__name__)

FORMATS = ("mask", "labels", "geojson", "overlay", "csv")
SUFFIXES = {"mask": "_mask.png", "labels": "_labels.tif", "geojson": ".geojson",
            "overlay": "_overlay.png", "csv": "_nuclei.csv"}
OUTPUT_SOFTWARE = "segzoo"  # prefix of the Software tag in segzoo's PNG/TIFF outputs


def _software() -> str:
    from segzoo import __version__

    return f"{OUTPUT_SOFTWARE} {__version__}"


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(data, zlib.crc32(tag)))


def _zlib_rle(data: np.ndarray) -> bytes:
    """zlib stream, level 1, run-length strategy: fast and small for masks (long runs of one value)."""
    compressor = zlib.compressobj(1, zlib.DEFLATED, zlib.MAX_WBITS, 9, zlib.Z_RLE)
    return compressor.compress(data) + compressor.flush()


def _zlib_fast(data: np.ndarray) -> bytes:
    """zlib stream for photographs: libdeflate level 1 (imagecodecs) when available, else zlib
    Huffman-only. On a 1000x1000 RGB tile, Up-filtered: libdeflate 1 ~35 ms / 2.0 MB, zlib
    Huffman-only ~55 ms / 2.07 MB, zlib level 1 ~90 ms / 2.05 MB (2-core machine, shared)."""
    try:
        import imagecodecs

        if imagecodecs.DEFLATE.available:
            return imagecodecs.deflate_encode(data, level=1)  # a zlib-format stream
    except (ImportError, AttributeError):
        pass
    compressor = zlib.compressobj(1, zlib.DEFLATED, zlib.MAX_WBITS, 9, zlib.Z_HUFFMAN_ONLY)
    return compressor.compress(data) + compressor.flush()


def _png_bytes(array: np.ndarray, *, up_filter: bool, compress: Callable[[np.ndarray], bytes]) -> bytes:
    """uint8 HxW (grey), HxWx3 (RGB) or HxWx4 (RGBA) as a PNG with the Software tag.

    Encoded here rather than by Pillow, whose adaptive per-row filter search (and
    optimize=True) dominated the time: every row gets one filter (PNG filter 2 'Up', the row
    minus the row above, when `up_filter`, else 0 'None'), then `compress` makes the zlib
    stream. Lossless; any PNG reader opens it."""
    array = np.ascontiguousarray(array)
    if array.dtype != np.uint8 or not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))):
        raise ValueError(f"PNG output needs a uint8 HxW, HxWx3 or HxWx4 array, got {array.shape} {array.dtype}")
    height, width = array.shape[:2]
    if not height or not width:
        raise ValueError(f"PNG output needs at least 1x1 pixel, got {width}x{height}")
    colour_type = 0 if array.ndim == 2 else (2 if array.shape[2] == 3 else 6)
    rows = array.reshape(height, -1)
    lines = np.empty((height, rows.shape[1] + 1), np.uint8)
    if up_filter:
        lines[:, 0] = 2
        lines[0, 1:] = rows[0]
        np.subtract(rows[1:], rows[:-1], out=lines[1:, 1:])  # uint8: modulo 256, as PNG defines
    else:
        lines[:, 0] = 0
        lines[:, 1:] = rows
    return b"".join((b"\x89PNG\r\n\x1a\n",
                     _png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)),
                     _png_chunk(b"tEXt", b"Software\0" + _software().encode("latin-1", "replace")),
                     _png_chunk(b"IDAT", compress(lines)), _png_chunk(b"IEND", b"")))


def mask_png_bytes(mask: np.ndarray) -> bytes:
    """Binary mask as an 8-bit greyscale PNG: 0 background, 255 nucleus."""
    return _png_bytes(np.where(mask, 255, 0).astype(np.uint8), up_filter=False, compress=_zlib_rle)


def write_mask_png(mask: np.ndarray, path: Path) -> None:
    """Binary mask as an 8-bit PNG: 0 background, 255 nucleus."""
    atomic_write_bytes(path, mask_png_bytes(mask))


LABELS_ZLIB_LEVEL = 1
"""zlib level of the label TIFF: on a 1000x1000 MoNuSeg tile with 700 nuclei level 1 is
about 3x faster than the default 6 for a file about 20% larger (72 kB instead of 61 kB)."""


def labels_tiff_bytes(labels: np.ndarray) -> bytes:
    """Instance labels as a single-page int32 TIFF (0 background, 1..N nuclei), zlib-compressed."""
    import tifffile

    buffer = io.BytesIO()
    tifffile.imwrite(buffer, np.asarray(labels).astype(np.int32, copy=False), compression="zlib",
                     compressionargs={"level": LABELS_ZLIB_LEVEL}, software=_software())
    return buffer.getvalue()


def write_labels_tiff(labels: np.ndarray, path: Path) -> None:
    """Instance labels as a single-page int32 TIFF (0 background, 1..N nuclei), zlib-compressed."""
    atomic_write_bytes(path, labels_tiff_bytes(labels))


def label_boundaries(labels: np.ndarray) -> np.ndarray:
    """bool HxW: nucleus pixels with a 4-neighbour (inside the image) of another label or of
    the background; equal to skimage.segmentation.find_boundaries(labels, mode='inner')."""
    labels = np.asarray(labels)
    edge = np.zeros(labels.shape, bool)
    across = labels[:, 1:] != labels[:, :-1]
    edge[:, 1:] |= across
    edge[:, :-1] |= across
    across = labels[1:] != labels[:-1]
    edge[1:] |= across
    edge[:-1] |= across
    edge &= labels != 0
    return edge


def overlay_image(image: np.ndarray, labels: np.ndarray, colour=(255, 255, 0)) -> np.ndarray:
    """The image with every nucleus outline (label_boundaries) drawn in `colour`."""
    out = np.array(image, copy=True)
    out[label_boundaries(labels)] = colour
    return out


def overlay_png_bytes(image: np.ndarray, labels: np.ndarray) -> bytes:
    """The image with nucleus outlines (overlay_image) as an RGB PNG."""
    return _png_bytes(overlay_image(image, labels), up_filter=True, compress=_zlib_fast)


def write_overlay_png(image: np.ndarray, labels: np.ndarray, path: Path) -> None:
    atomic_write_bytes(path, overlay_png_bytes(image, labels))


# ---------------------------------------------------------------------------------------------
# Per-nucleus measurements and outlines
#
# Coordinates. Crop pixel (row r, column c) of `labels` is centred on the point
# (x, y) = (c, r) and covers [c - 0.5, c + 0.5) x [r - 0.5, r + 0.5). With `offset`
# (ox, oy) and `scale` s, a crop point (x, y) is reported at ((x + ox + 0.5) * s - 0.5,
# (y + oy + 0.5) * s - 0.5): `offset` is the crop's top-left pixel in the pixels it was cut
# from, `scale` how many output pixels one of those pixels spans (a whole-slide chunk read
# at a pyramid level: its position at that level and the level's downsample, so outputs are
# in level-0 pixels). The defaults report image pixel coordinates unchanged.

SIMPLIFY_TOLERANCE = 0.35
"""Outlines are simplified (Douglas-Peucker) to within this many output pixels: under 0.5,
and under 1/(2 sqrt 2) ~ 0.354, the distance from a pixel centre to the outline (a corner
pixel's centre to its cut corner), so the simplified ring still has every pixel centre of
the nucleus inside and every other one outside: filled at pixel centres (QuPath, skimage.draw)
it gives back the nucleus' pixels exactly (holes filled). A MoNuSeg tile's nuclei keep ~29
vertices instead of ~91; at 0.5 they would keep ~19, but small ones lose edge pixels (IoU
down to 0.93 for a 39-pixel nucleus)."""

MEASUREMENT_ROUNDING = {"area": 2, "area_um2": 3, "centroid_x": 3, "centroid_y": 3, "mean_r": 3, "mean_g": 3,
                        "mean_b": 3, "mean_prob": 4}
"""Decimals kept in the CSV and GeoJSON (area: only when `scale` != 1; it is an integer otherwise)."""

VERTEX_DECIMALS = 2
"""Polygon vertices are written rounded to 1/100 output pixel."""

CSV_COLUMNS = ("label", "area", "centroid_x", "centroid_y", "bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1",
               "mean_r", "mean_g", "mean_b", "mean_prob")
"""The columns of an image's nuclei CSV (mean_prob only when probabilities are given)."""


def _output_points(values: np.ndarray, origin: float, scale: float) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    if scale == 1.0:
        return values + origin
    return (values + origin + 0.5) * scale - 0.5


def nucleus_measurements(labels: np.ndarray, image: np.ndarray | None = None, prob: np.ndarray | None = None,
                         *, offset: tuple[float, float] = (0, 0), scale: float = 1.0,
                         mpp: float | None = None) -> dict[str, np.ndarray]:
    """Per-nucleus measurements as columns (1-D arrays, one entry per label present, labels ascending).

    label (int64); area: pixel count (int64), in output pixels (count x scale^2, float64)
    when scale != 1; area_um2 when `mpp` (microns per output pixel) is given; centroid_x/y:
    mean pixel centre (output coordinates, see above); bbox_x0/y0/x1/y1: output pixel index
    ranges, half-open (floor((c0 + ox) * scale), ceil((c1 + ox) * scale) for crop columns
    c0 <= c < c1); mean_r/g/b: mean of the image's first three channels (in its units, 0-255
    for uint8) when `image` (HxWxC) is given; mean_prob when `prob` (HxW) is given. All
    values are unrounded and equal skimage.measure.regionprops' (area, centroid, bbox,
    intensity_mean), from per-run sums (one pass over the image per quantity), no loop over labels.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.dtype.kind not in "iub":
        raise ValueError(f"labels must be a 2-D integer array, got {labels.shape} {labels.dtype}")
    for name, array, ndim in (("image", image, 3), ("prob", prob, 2)):
        if array is not None and (np.ndim(array) != ndim or np.shape(array)[:2] != labels.shape
                                  or (ndim == 3 and np.shape(array)[2] < 3)):
            raise ValueError(f"{name} of shape {np.shape(array)} does not fit labels of shape {labels.shape}"
                             f" (expected {'HxWxC, C >= 3' if ndim == 3 else 'HxW'})")
    if labels.dtype.kind == "b":
        labels = labels.view(np.uint8)
    height, width = labels.shape
    n = height * width
    flat = labels.ravel()
    # Runs: maximal horizontal stretches of one label within a row. Every sum is taken per
    # run (np.add.reduceat streams through the image once) and then per label over its runs.
    change = np.ones(n, bool)
    np.not_equal(flat[1:], flat[:-1], out=change[1:])
    change[::max(width, 1)] = True
    starts = np.flatnonzero(change)
    fg = np.flatnonzero(flat[starts])  # runs inside nuclei
    ids = flat[starts[fg]].astype(np.intp, copy=False)
    if ids.size and ids.min() < 0:
        raise ValueError("labels must be >= 0 (0 is background)")
    size = int(ids.max()) + 1 if ids.size else 1
    run_start = starts[fg]
    run_length = np.r_[starts[1:], n][fg] - run_start
    run_row, run_col = np.divmod(run_start, max(width, 1))
    count = np.bincount(ids, weights=run_length, minlength=size)
    present = np.flatnonzero(count)
    area = count[present]

    def mean(run_sums: np.ndarray) -> np.ndarray:
        return np.bincount(ids, weights=run_sums, minlength=size)[present] / area

    ox, oy = (float(v) for v in offset)
    scale = float(scale)
    columns: dict[str, np.ndarray] = {"label": present.astype(np.int64)}
    columns["area"] = area.astype(np.int64) if scale == 1.0 else area * scale * scale
    if mpp is not None:
        columns["area_um2"] = area * (scale * float(mpp)) ** 2
    columns["centroid_x"] = _output_points(mean(run_length * (run_col + (run_length - 1) / 2)), ox, scale)
    columns["centroid_y"] = _output_points(mean(run_length * run_row.astype(np.float64)), oy, scale)
    boxes = (np.zeros(0, np.int64),) * 4
    if ids.size:
        order = np.argsort(ids, kind="stable")  # by label, then in raster order
        first = np.flatnonzero(np.r_[True, ids[order][1:] != ids[order][:-1]])
        last = np.r_[first[1:], len(order)] - 1
        boxes = (np.minimum.reduceat(run_col[order], first), run_row[order][first],
                 np.maximum.reduceat((run_col + run_length)[order], first), run_row[order][last] + 1)
    for k, (name, origin) in enumerate((("bbox_x0", ox), ("bbox_y0", oy), ("bbox_x1", ox), ("bbox_y1", oy))):
        edge = boxes[k] + origin
        edge = edge * scale if scale != 1.0 else edge
        columns[name] = (np.floor(edge) if k < 2 else np.ceil(edge)).astype(np.int64)
    if image is not None:
        image = np.asarray(image)
        pixels = image.reshape(n, image.shape[2])[:, :3]
        # uint8 sums of a run (<= width pixels) fit uint32 for any width below 16 million
        dtype = np.uint32 if image.dtype == np.uint8 else (np.float64 if image.dtype.kind == "f" else np.int64)
        sums = np.add.reduceat(pixels, starts, axis=0, dtype=dtype)[fg] if n else np.zeros((0, 3))
        for k, name in enumerate(("mean_r", "mean_g", "mean_b")):
            columns[name] = mean(sums[:, k].astype(np.float64))
    if prob is not None:
        sums = np.add.reduceat(np.asarray(prob).ravel(), starts, dtype=np.float64)[fg] if n else np.zeros(0)
        columns["mean_prob"] = mean(sums)
    return columns


# Marching squares, for every label at once. A cell is a 2x2 block of pixel centres of the
# labels padded by one background pixel; its corners tl, tr, br, bl are bits 1, 2, 4, 8 of
# its case for one label. Edges 0 top, 1 right, 2 bottom, 3 left; their midpoints are the
# vertices. Each case's segments are (start edge, end edge), oriented like
# skimage.measure.find_contours(mask, 0.5) (the nucleus on the right of the direction of
# travel, x right and y down: clockwise on screen). Diagonal cases (5, 10) separate the two
# nucleus corners (find_contours' fully_connected='low').
_CASE_SEGMENTS = {1: ((0, 3),), 2: ((1, 0),), 4: ((2, 1),), 8: ((3, 2),), 3: ((1, 3),), 6: ((2, 0),),
                  12: ((3, 1),), 9: ((0, 2),), 7: ((2, 3),), 14: ((3, 0),), 13: ((0, 1),), 11: ((1, 2),),
                  5: ((0, 3), (2, 1)), 10: ((1, 0), (3, 2))}
_SEG_START = np.zeros((16, 2), np.intp)
_SEG_END = np.zeros((16, 2), np.intp)
for _case, _segments in _CASE_SEGMENTS.items():
    for _k, (_start, _end) in enumerate(_segments):
        _SEG_START[_case, _k], _SEG_END[_case, _k] = _start, _end
_EDGE_ROW = np.array([0, 1, 2, 1])  # edge midpoints in doubled coordinates from the cell's (2i, 2j)
_EDGE_COL = np.array([1, 2, 1, 0])


def _trace_rings(labels: np.ndarray, wanted: np.ndarray | None = None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The largest outline of every label (or of the labels with wanted[label] True).

    Returns (ring_labels ascending, offsets (k+1,), rows, cols): ring i is the vertices
    offsets[i]:offsets[i+1] (not closed), in crop pixel coordinates. Equal, up to the
    starting vertex, to find_contours(np.pad(labels == label, 1), 0.5) shifted back by the
    pad (its longest contour), without a Python loop over labels: segments of all cells and
    labels are linked into rings through a sort, ordered by pointer doubling."""
    height, width = labels.shape
    padded = np.pad(labels, 1)
    pw = width + 2
    across = padded[:, 1:] != padded[:, :-1]
    mixed = across[:-1] | across[1:]
    mixed |= padded[1:, :-1] != padded[:-1, :-1]
    cells = np.flatnonzero(mixed)
    ci, cj = np.divmod(cells, width + 1)
    top_left = ci * pw + cj
    flat = padded.ravel()
    corners = (flat[top_left], flat[top_left + 1], flat[top_left + pw + 1], flat[top_left + pw])  # tl tr br bl
    pair_cell, pair_label = [], []
    for k, value in enumerate(corners):  # one (cell, label) pair per distinct nonzero corner label
        new = value != 0
        for previous in corners[:k]:
            new &= value != previous
        if wanted is not None:
            new &= wanted[value]
        index = np.flatnonzero(new)
        pair_cell.append(index)
        pair_label.append(value[index])
    pair_cell = np.concatenate(pair_cell)
    pair_label = np.concatenate(pair_label).astype(np.int64)
    case = np.zeros(len(pair_cell), np.intp)
    for bit, value in enumerate(corners):
        case |= (value[pair_cell] == pair_label).astype(np.intp) << bit
    second = np.flatnonzero((case == 5) | (case == 10))
    seg_pair = np.concatenate([np.arange(len(case)), second])
    seg_k = np.concatenate([np.zeros(len(case), np.intp), np.ones(len(second), np.intp)])
    seg_case = case[seg_pair]
    doubled_width = 2 * width + 3
    base = 2 * ci[pair_cell[seg_pair]] * doubled_width + 2 * cj[pair_cell[seg_pair]]
    start_edge, end_edge = _SEG_START[seg_case, seg_k], _SEG_END[seg_case, seg_k]
    start = base + _EDGE_ROW[start_edge] * doubled_width + _EDGE_COL[start_edge]
    end = base + _EDGE_ROW[end_edge] * doubled_width + _EDGE_COL[end_edge]
    span = (2 * height + 3) * doubled_width
    seg_label = pair_label[seg_pair]
    start_key = seg_label * span + start
    order = np.argsort(start_key)
    start_key = start_key[order]
    start, seg_label = start[order], seg_label[order]
    nxt = np.searchsorted(start_key, (seg_label * span + end[order]))  # every (label, midpoint) starts one segment
    n = len(nxt)
    index = np.arange(n)
    rep, jump = index, nxt  # rep: the smallest segment index on each ring
    while True:
        new = np.minimum(rep, rep[jump])
        if np.array_equal(new, rep):
            break
        rep, jump = new, jump[jump]
    last = nxt == rep  # the ring's last segment (its next is the first)
    to_last = (~last).astype(np.int64)  # steps to the ring's last segment
    pointer = np.where(last, index, nxt)
    while True:
        ahead = pointer[pointer]
        if np.array_equal(ahead, pointer):
            break
        to_last = to_last + to_last[pointer]
        pointer = ahead
    firsts = np.flatnonzero(rep == index)
    lengths = np.bincount(rep, minlength=n)[firsts]
    ring_labels = seg_label[firsts]
    by_size = np.lexsort((-lengths, ring_labels))  # the largest ring of each label
    chosen = by_size[np.r_[True, ring_labels[by_size][1:] != ring_labels[by_size][:-1]]] if n else by_size
    chosen.sort()
    offsets = np.zeros(len(chosen) + 1, np.int64)
    np.cumsum(lengths[chosen], out=offsets[1:])
    ring_start = np.full(n, -1, np.int64)
    ring_start[firsts[chosen]] = offsets[:-1]
    ring_length = np.zeros(n, np.int64)
    ring_length[firsts] = lengths
    kept = np.flatnonzero(ring_start[rep] >= 0)
    vertices = np.empty(int(offsets[-1]), np.int64)
    vertices[ring_start[rep[kept]] + ring_length[rep[kept]] - 1 - to_last[kept]] = start[kept]
    rows, cols = np.divmod(vertices, doubled_width)
    return ring_labels[chosen], offsets, rows / 2 - 1, cols / 2 - 1


def _simplify_rings(points: np.ndarray, offsets: np.ndarray, tolerance: float) -> tuple[np.ndarray, np.ndarray]:
    """Douglas-Peucker on every ring at once. `points` (V, 2) holds the rings (not closed),
    ring i at offsets[i]:offsets[i+1]. Returns (points, offsets) of the simplified rings,
    closed (first vertex repeated last).

    Vertices in the middle of a straight run are dropped first (exact: the ring is the same
    curve). Then as skimage.measure.approximate_polygon on the closed ring: the first vertex
    and the one farthest from it are kept, then every span's vertex farthest from the span's segment,
    while that distance exceeds `tolerance`. Every dropped vertex is within `tolerance` of
    the simplified ring and every point of it within `tolerance` of the original ring. A
    ring that would keep fewer than 3 distinct vertices (a nucleus 1-2 pixels wide) is left
    as it was."""
    count = len(offsets) - 1
    if count and tolerance > 0:  # drop vertices in the middle of straight runs: the same rings, fewer vertices
        index = np.arange(len(points))
        before, after = index - 1, index + 1
        before[offsets[:-1]], after[offsets[1:] - 1] = offsets[1:] - 1, offsets[:-1]
        ux, uy = (points - points[before]).T
        vx, vy = (points[after] - points).T
        straight = (ux * vy == uy * vx) & (ux * vx + uy * vy > 0)
        straight[offsets[:-1]] = False  # each ring keeps its first vertex
        points = points[~straight]
        offsets = offsets - np.r_[0, np.cumsum(straight)[offsets[1:] - 1]]
    lengths = np.diff(offsets)
    closed_offsets = offsets + np.arange(count + 1)
    closed = np.insert(points, offsets[1:], points[offsets[:-1]], axis=0) if count else points[:0]
    keep = np.zeros(len(closed), bool)
    first, end = closed_offsets[:-1], closed_offsets[1:] - 1
    keep[first] = keep[end] = True
    if count == 0 or tolerance <= 0:
        return closed, closed_offsets
    x, y = np.ascontiguousarray(closed[:, 0]), np.ascontiguousarray(closed[:, 1])
    ring_of = np.repeat(np.arange(count), lengths + 1)
    from_first = (x - x[first][ring_of]) ** 2 + (y - y[first][ring_of]) ** 2
    farthest = np.maximum.reduceat(from_first, first)
    far = np.minimum.reduceat(np.where(from_first == farthest[ring_of], np.arange(len(closed)), len(closed)),
                              first)
    keep[far] = True
    active = np.flatnonzero(~keep)  # vertices still to decide, each in the span (a, b) of kept vertices
    ring_far = far[ring_of[active]]
    before = active < ring_far
    a = np.where(before, first[ring_of[active]], ring_far)
    b = np.where(before, ring_far, end[ring_of[active]])
    tolerance2 = tolerance * tolerance
    while active.size:
        ax, ay = x[a], y[a]
        dx, dy = x[b] - ax, y[b] - ay
        px, py = x[active] - ax, y[active] - ay
        length2 = dx * dx + dy * dy
        t = (px * dx + py * dy) / np.where(length2 > 0, length2, 1.0)
        np.clip(t, 0.0, 1.0, out=t)
        px -= t * dx
        py -= t * dy
        distance2 = px * px + py * py  # squared distance to the span's segment
        group_start = np.flatnonzero(np.r_[True, a[1:] != a[:-1]])
        group_size = np.diff(np.r_[group_start, len(active)])
        group_max = np.maximum.reduceat(distance2, group_start)
        split_at = np.minimum.reduceat(np.where(distance2 == np.repeat(group_max, group_size),
                                                np.arange(len(active)), len(active)), group_start)
        split = group_max > tolerance2
        vertex = active[split_at[split]]
        keep[vertex] = True
        vertex_split = np.full(len(group_start), -1, np.int64)
        vertex_split[split] = vertex
        vertex_split = np.repeat(vertex_split, group_size)
        stay = (vertex_split >= 0) & (active != vertex_split)
        before = active < vertex_split
        a = np.where(before, a, vertex_split)[stay]
        b = np.where(before, vertex_split, b)[stay]
        active = active[stay]
    kept_per_ring = np.add.reduceat(keep, first)
    small = np.flatnonzero(kept_per_ring < 4)
    if small.size:
        keep[np.concatenate([np.arange(first[i], end[i] + 1) for i in small])] = True
        kept_per_ring = np.add.reduceat(keep, first)
    new_offsets = np.zeros(count + 1, np.int64)
    np.cumsum(kept_per_ring, out=new_offsets[1:])
    return closed[keep], new_offsets


def nucleus_outlines(labels: np.ndarray, *, tolerance: float = SIMPLIFY_TOLERANCE,
                     offset: tuple[float, float] = (0, 0), scale: float = 1.0,
                     ids: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The outer outline of each nucleus (of the labels `ids`, default all) as closed rings.

    Returns (ring_labels, ring_offsets, vertices): ring_labels int64 ascending, one per
    label; vertices float64 (V, 2) as (x, y) in output coordinates (see above); ring i is
    vertices[ring_offsets[i]:ring_offsets[i+1]], closed (first vertex repeated last), at
    least 4 points, counter-clockwise in (x, y) numbers as RFC 7946 asks of exterior rings
    (positive shoelace area; clockwise as seen on screen, y down). The outline is the marching-squares
    contour at 0.5 around the pixel centres of the nucleus (as
    skimage.measure.find_contours(mask, 0.5)): its vertices lie halfway between a nucleus
    pixel centre and a 4-neighbour outside it, so it passes half a pixel outside the
    centres of the nucleus' edge pixels. A label with several parts (or holes) gets its
    longest contour. Rings are then simplified to within `tolerance` output pixels
    (Douglas-Peucker; 0 keeps every vertex)."""
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.dtype.kind not in "iub":
        raise ValueError(f"labels must be a 2-D integer array, got {labels.shape} {labels.dtype}")
    if labels.dtype.kind == "b":
        labels = labels.astype(np.uint8)
    if labels.size and labels.min() < 0:
        raise ValueError("labels must be >= 0 (0 is background)")
    wanted = None
    if ids is not None:
        wanted = np.zeros(int(labels.max(initial=0)) + 1, bool)
        ids = np.asarray(ids, dtype=np.int64)
        wanted[ids[(ids > 0) & (ids < len(wanted))]] = True
    ring_labels, offsets, rows, cols = _trace_rings(labels, wanted)
    scale = float(scale)
    points, offsets = _simplify_rings(np.stack([cols, rows], axis=1), offsets, float(tolerance) / scale)
    vertices = np.stack([_output_points(points[:, 0], float(offset[0]), scale),
                         _output_points(points[:, 1], float(offset[1]), scale)], axis=1)
    return ring_labels, offsets, vertices


def _rounded_columns(columns: dict[str, np.ndarray]) -> dict[str, list]:
    """Columns as lists of Python numbers, rounded as written (MEASUREMENT_ROUNDING; integer
    columns stay integers)."""
    values = {}
    for name, column in columns.items():
        if column.dtype.kind == "f" and name in MEASUREMENT_ROUNDING:
            column = np.round(column, MEASUREMENT_ROUNDING[name])
        values[name] = column.tolist()
    return values


def measurement_rows(columns: dict[str, np.ndarray]) -> list[dict]:
    """nucleus_measurements() columns as one dict per nucleus, rounded as written."""
    values = _rounded_columns(columns)
    return [dict(zip(values, row)) for row in zip(*values.values())]


@dataclass(frozen=True)
class NucleusTable:
    """One image's (or one chunk's) nuclei: measurements and simplified outlines, computed once.

    columns: nucleus_measurements() columns (label first), one entry per nucleus;
    ring_offsets int64 (n+1,) and vertices float64 (V, 2) (x, y): nucleus i's closed outline
    is vertices[ring_offsets[i]:ring_offsets[i+1]] (see nucleus_outlines). Coordinates and
    units as nucleus_measurements/nucleus_outlines with the table's offset and scale."""

    columns: dict[str, np.ndarray]
    ring_offsets: np.ndarray
    vertices: np.ndarray

    def __len__(self) -> int:
        return len(self.columns["label"])

    def ring(self, i: int) -> np.ndarray:
        """Nucleus i's closed outline, (k, 2) float64 (x, y)."""
        return self.vertices[self.ring_offsets[i]:self.ring_offsets[i + 1]]

    def rows(self) -> list[dict]:
        """One dict per nucleus, rounded as written (measurement_rows), for the CSV and GeoJSON."""
        return measurement_rows(self.columns)

    def polygons(self) -> dict[int, list[list[float]]]:
        """{label: closed ring as [[x, y], ...]}, vertices rounded to VERTEX_DECIMALS."""
        coords = np.round(self.vertices, VERTEX_DECIMALS).tolist()
        offsets = self.ring_offsets.tolist()
        return {label: coords[offsets[i]:offsets[i + 1]] for i, label in enumerate(self.columns["label"].tolist())}

    def csv_bytes(self) -> bytes:
        """The nuclei as UTF-8 CSV with a header (see csv_bytes)."""
        return csv_bytes(self.rows(), header=list(self.columns))

    def to_geojson(self, *, object_type: str = "detection", classification: str = "Nucleus") -> dict:
        """A QuPath GeoJSON FeatureCollection: one geojson_feature per nucleus, in label order,
        vertices rounded to VERTEX_DECIMALS and measurements as measurement_rows."""
        if object_type not in GEOJSON_OBJECT_TYPES:
            raise ValueError(f"object_type must be 'detection' or 'annotation', got {object_type!r}")
        coords = np.round(self.vertices, VERTEX_DECIMALS).tolist()
        offsets = self.ring_offsets.tolist()
        values = _rounded_columns(self.columns)
        labels = values.pop("label")
        names = list(values)
        features = [{"type": "Feature", "id": f"nucleus-{label}",
                     "geometry": {"type": "Polygon", "coordinates": [coords[start:stop]]},
                     "properties": {"objectType": object_type,
                                    "classification": {"name": classification, "color": [255, 200, 0]},
                                    "name": f"nucleus {label}", "measurements": dict(zip(names, row))}}
                    for label, start, stop, row in zip(labels, offsets[:-1], offsets[1:], zip(*values.values()))]
        return {"type": "FeatureCollection", "features": features}


def nucleus_table(labels: np.ndarray, image: np.ndarray | None = None, prob: np.ndarray | None = None, *,
                  offset: tuple[float, float] = (0, 0), scale: float = 1.0, mpp: float | None = None,
                  tolerance: float = SIMPLIFY_TOLERANCE,
                  keep: Callable[[dict[str, np.ndarray]], np.ndarray] | None = None) -> NucleusTable:
    """Measurements (nucleus_measurements) and simplified outlines (nucleus_outlines) of the
    nuclei of `labels`, with the same offset/scale (see the coordinates note above).

    `keep`, given the measurement columns, returns a bool array choosing the nuclei to keep
    before any outline is traced (a whole-slide chunk keeps those whose centroid lies in
    its core)."""
    columns = nucleus_measurements(labels, image, prob, offset=offset, scale=scale, mpp=mpp)
    if keep is not None:
        chosen = np.asarray(keep(columns), dtype=bool)
        if chosen.shape != columns["label"].shape:
            raise ValueError(f"keep must return one bool per nucleus ({len(columns['label'])}), got {chosen.shape}")
        columns = {name: values[chosen] for name, values in columns.items()}
    ids = columns["label"] if keep is not None else None
    ring_labels, offsets, vertices = nucleus_outlines(labels, tolerance=tolerance, offset=offset, scale=scale,
                                                      ids=ids)
    if not np.array_equal(ring_labels, columns["label"]):  # cannot happen: every present label has a ring
        raise AssertionError("outlines and measurements disagree on the nuclei")
    return NucleusTable(columns, offsets, vertices)


def measure_nuclei(labels: np.ndarray, image: np.ndarray, prob: np.ndarray | None = None) -> list[dict]:
    """Per nucleus (ascending label): label, area (px), centroid (x, y), bounding box (x0, y0,
    x1, y1; x1/y1 exclusive), mean R/G/B intensity and mean probability, rounded as written
    (see nucleus_measurements for the definitions)."""
    return measurement_rows(nucleus_measurements(labels, image, prob))


def csv_bytes(rows: list[dict], header: list[str] | None = None) -> bytes:
    """Rows (measure_nuclei / NucleusTable.rows) as UTF-8 CSV with a header; with no rows the
    header is `header` or CSV_COLUMNS."""
    buffer = io.StringIO()
    fields = list(rows[0]) if rows else list(header or CSV_COLUMNS)
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(fields)
    writer.writerows([row[name] for name in fields] for row in rows)
    return buffer.getvalue().encode("utf-8")


def write_csv(rows: list[dict], path: Path) -> None:
    atomic_write_bytes(path, csv_bytes(rows))


def nucleus_polygons(labels: np.ndarray, tolerance: float = SIMPLIFY_TOLERANCE) -> dict[int, list[list[float]]]:
    """{label: outer outline as a closed ring of [x, y] image pixel coordinates}: the
    marching-squares contour at 0.5 around the nucleus' pixel centres (see
    nucleus_outlines), simplified to within `tolerance` pixels (0: not simplified)."""
    ring_labels, offsets, vertices = nucleus_outlines(labels, tolerance=tolerance)
    return NucleusTable({"label": ring_labels}, offsets, vertices).polygons()


GEOJSON_OBJECT_TYPES = ("detection", "annotation")


def geojson_feature(label: int, ring: list[list[float]], measurements: dict | None = None, *,
                    object_type: str = "detection", classification: str = "Nucleus") -> dict:
    """One nucleus as a QuPath GeoJSON Feature: id 'nucleus-<label>', a Polygon with the closed
    `ring` of [x, y] pixel coordinates, properties objectType, classification (name and
    colour), name and `measurements` (without 'label')."""
    if object_type not in GEOJSON_OBJECT_TYPES:
        raise ValueError(f"object_type must be 'detection' or 'annotation', got {object_type!r}")
    props = {"objectType": object_type, "classification": {"name": classification, "color": [255, 200, 0]},
             "name": f"nucleus {label}"}
    if measurements:
        props["measurements"] = {k: v for k, v in measurements.items() if k != "label"}
    return {"type": "Feature", "id": f"nucleus-{label}", "geometry": {"type": "Polygon", "coordinates": [ring]},
            "properties": props}


def geojson_collection(labels: np.ndarray, measurements: list[dict] | None = None, *,
                       object_type: str = "detection", classification: str = "Nucleus") -> dict:
    """A GeoJSON FeatureCollection QuPath imports: one Polygon per nucleus (nucleus_polygons:
    image pixel coordinates, simplified to within SIMPLIFY_TOLERANCE px), properties.objectType
    'detection' (or 'annotation') and a classification; `measurements` rows (by label) go
    to properties.measurements. NucleusTable.to_geojson does the same from a table."""
    if object_type not in GEOJSON_OBJECT_TYPES:
        raise ValueError(f"object_type must be 'detection' or 'annotation', got {object_type!r}")
    by_label = {m["label"]: m for m in measurements or []}
    features = [geojson_feature(label, ring, by_label.get(label), object_type=object_type,
                                classification=classification)
                for label, ring in nucleus_polygons(labels).items()]
    return {"type": "FeatureCollection", "features": features}


def geojson_bytes(collection: dict) -> bytes:
    """A GeoJSON dict as compact UTF-8 JSON."""
    return json.dumps(collection, separators=(",", ":")).encode("utf-8")


def write_geojson(collection: dict, path: Path) -> None:
    atomic_write_bytes(path, geojson_bytes(collection))


def output_folder_problem(path: str | os.PathLike) -> str | None:
    """Why `path` cannot be used (or created) as an output folder, as one sentence naming the
    path; None when it is a writable folder or can be created inside one. Touches nothing."""
    if not os.fspath(path):
        return "the output path is empty; give a folder"
    path = Path(path)
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        for parent in path.parents:
            try:
                st = os.stat(parent)
            except (FileNotFoundError, NotADirectoryError):
                continue
            except OSError as err:
                return f"{parent}: {err.strerror}"
            if not stat.S_ISDIR(st.st_mode):
                return f"{path}: cannot create this folder, {parent} is a file"
            if not os.access(parent, os.W_OK | os.X_OK):
                return f"{path}: cannot create this folder, {parent} is not writable"
            return None
        return None
    except OSError as err:
        return f"{path}: {err.strerror}"
    if not stat.S_ISDIR(st.st_mode):
        return f"{path}: exists and is not a folder; give a folder"
    if not os.access(path, os.W_OK | os.X_OK):
        return f"{path}: folder is not writable"
    return None


def output_file_problem(path: str | os.PathLike, *, overwrite: bool) -> str | None:
    """Why a file cannot be written at `path` (a folder is there, it exists without
    `overwrite`, its folder cannot be created), as one sentence; None when it can."""
    if not os.fspath(path):
        return "the output path is empty; give a file"
    path = Path(path)
    if os.path.isdir(path):
        return f"{path}: is a folder; give a file path"
    if os.path.lexists(path) and not overwrite:
        return f"{path}: exists; pass --overwrite to replace it"
    return output_folder_problem(path.parent)


def output_targets(folder: Path, stem: str, formats) -> dict[str, Path]:
    """{format: folder/<stem><suffix>} for each of `formats` (see SUFFIXES)."""
    return {f: Path(folder) / f"{stem}{SUFFIXES[f]}" for f in formats}


def outputs_among(paths: list[Path]) -> dict[Path, Path]:
    """The files of one folder listing that are named like an output of another file in it:
    {output: image}, e.g. a_mask.png -> a.png when a.png (or a.tif, ...) is listed too."""
    by_stem: dict[str, Path] = {}
    for path in sorted(paths, key=lambda p: p.name):
        by_stem.setdefault(path.stem, path)
    found = {}
    for path in paths:
        for suffix in SUFFIXES.values():
            if path.name.endswith(suffix) and len(path.name) > len(suffix):
                source = by_stem.get(path.name[:-len(suffix)])
                if source is not None and source != path:
                    found[path] = source
                    break
    return found


def is_segzoo_output(path: Path) -> bool:
    """True when the PNG or TIFF file at `path` carries segzoo's Software tag (it is an
    output of an earlier run, so --overwrite may replace it); False otherwise or unreadable."""
    path = Path(path)
    try:
        if path.suffix.lower() == ".png":
            from PIL import Image

            with Image.open(path) as img:
                software = img.info.get("Software", "")
        elif path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            with tifffile.TiffFile(path) as tif:
                tag = tif.pages[0].tags.get("Software")
                software = tag.value if tag is not None else ""
        else:
            return False
    except Exception:  # noqa: BLE001  (unreadable or not an image: not ours)
        return False
    return isinstance(software, str) and software.split(" ")[0] == OUTPUT_SOFTWARE


def _write_temporary(target: Path, data: bytes) -> Path:
    """`data` in a new hidden temporary file beside `target`, with normal permissions."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600
    except BaseException:
        os.unlink(tmp)
        raise
    return Path(tmp)


def _hard_link_backup(target: Path) -> Path | None:
    """A hidden hard link to the existing `target` (its old content survives a rename onto
    `target`), or None where the file system has no hard links."""
    backup = target.parent / f".{target.name}.{secrets.token_hex(6)}.bak"
    try:
        os.link(target, backup)
    except OSError:
        return None
    return backup


def _remove(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def write_output_set(targets: dict[str, Path], render: dict[str, Callable[[], bytes]]) -> None:
    """Write one image's output files so that afterwards all of them are in place or none changed.

    `render[key]()` gives the bytes of `targets[key]`. Every file is rendered first, then
    written to a temporary file in its target folder (created if needed), then all are
    renamed into place. On any error or interrupt (OSError such as ENOSPC, KeyboardInterrupt)
    the temporaries are deleted, files of this set that did not exist before are removed and
    replaced files get their old content back (kept through a hard link; a file system without
    hard links cannot restore them, which is logged); then the exception propagates.
    """
    data = {key: render[key]() for key in targets}
    temps: dict[str, Path] = {}
    existed: dict[str, bool] = {}
    backups: dict[str, Path | None] = {}
    renamed: list[str] = []
    try:
        for key, target in targets.items():
            target.parent.mkdir(parents=True, exist_ok=True)
            temps[key] = _write_temporary(target, data[key])
        for key, target in targets.items():
            existed[key] = os.path.lexists(target)
            backups[key] = _hard_link_backup(target) if existed[key] else None
        for key, target in targets.items():
            os.replace(temps[key], target)
            del temps[key]
            renamed.append(key)
    except BaseException:
        lost = []
        for key in renamed:
            target, backup = targets[key], backups.get(key)
            try:
                if backup is not None:
                    os.replace(backup, target)
                elif not existed[key]:
                    _remove(target)
                else:
                    lost.append(str(target))
            except OSError:
                lost.append(str(target))
        for path in list(temps.values()) + [b for b in backups.values() if b is not None]:
            try:
                _remove(path)
            except OSError:
                pass
        if lost:
            log.warning("replaced and could not restore: %s", ", ".join(lost))
        raise
    for backup in backups.values():
        if backup is not None:
            try:
                _remove(backup)
            except OSError:
                log.warning("could not remove the backup %s", backup)
