"""The chunk: the unit of work of whole-slide prediction.

A slide is read at the *working resolution* (the model's microns per pixel): a pyramid
level resampled by `scale` (working pixels per level pixel). The working-resolution
extent is cut into a grid of square chunks; each chunk's *core* is a cell of the grid and
its *read box* is the core grown by `halo` pixels on every side (clipped to the slide).
A chunk reads its read box, predicts probabilities and nuclei there, and keeps exactly the
nuclei whose centroid lies in its core, so every nucleus is owned by one chunk: none is cut
at a chunk border, none is reported twice.

`run_chunk(predictor, slide, grid, chunk)` is a function of its explicit inputs (plus the
predictor's weights): any process that can open the slide and load the model can run it,
and its ChunkResult (plain numpy arrays) is saved to and loaded from one .npz file.

Coordinates. Boxes of working pixels are (x0, y0, x1, y1), half-open: pixel (row r,
column c) is inside when x0 <= c < x1 and y0 <= r < y1. Outputs (ChunkResult) are in
level-0 pixels of the slide with pixel centres at integers, as segzoo.writers'
polygons and centroids: level-0 pixel (r, c) is centred on (x=c, y=r) and covers
[c-0.5, c+0.5) x [r-0.5, r+0.5). A working point x maps to level 0 as
x0 = (x + 0.5) * f - 0.5 with f = level downsample / scale (level-0 pixels per working pixel).
"""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segzoo.errors import DataError, SegzooError

Box = tuple[int, int, int, int]  # (x0, y0, x1, y1) working pixels, half-open

SIMPLIFY_TOLERANCE = 0.5
"""Polygons are simplified (Douglas-Peucker) to within this many level-0 pixels."""

COLUMNS = ("area", "area_um2", "centroid_x", "centroid_y", "bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1",
           "mean_r", "mean_g", "mean_b", "mean_prob")
"""Per-nucleus measurements of a ChunkResult, in this order (see chunk_nuclei for units)."""

INT_COLUMNS = ("bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1")
ROUNDING = {"area": 2, "area_um2": 3, "centroid_x": 3, "centroid_y": 3, "mean_r": 3, "mean_g": 3, "mean_b": 3,
            "mean_prob": 4}
VERTEX_DECIMALS = 2  # polygon vertices are rounded to 1/100 level-0 pixel


@dataclass(frozen=True)
class Grid:
    """How a slide is read at the working resolution.

    level: the pyramid level read; scale: working pixels per level pixel (1.0: no
    resampling); downsample: level-0 pixels per level pixel; width, height: the working
    extent in pixels; mpp: microns per level-0 pixel (None when unknown or assumed);
    stride: the network's pad_to_stride, to which read boxes are aligned."""

    level: int
    scale: float
    downsample: float
    width: int
    height: int
    mpp: float | None
    stride: int = 1

    @property
    def level0_per_working(self) -> float:
        """f: level-0 pixels per working pixel."""
        return self.downsample / self.scale

    @property
    def working_mpp(self) -> float | None:
        """Microns per working pixel, or None when the slide's resolution is unknown."""
        return None if self.mpp is None else self.mpp * self.level0_per_working

    def to_level0(self, values: np.ndarray) -> np.ndarray:
        """Working point coordinates (pixel centres at integers) -> level-0 point coordinates."""
        f = self.level0_per_working
        return (np.asarray(values, dtype=np.float64) + 0.5) * f - 0.5

    def to_dict(self) -> dict:
        return {"level": self.level, "scale": self.scale, "downsample": self.downsample, "width": self.width,
                "height": self.height, "mpp": self.mpp, "stride": self.stride}


@dataclass(frozen=True)
class Chunk:
    """One cell of the chunk grid: index (row, col), core box and read box (working pixels)."""

    row: int
    col: int
    core: Box
    read: Box

    @property
    def name(self) -> str:
        """File stem of this chunk's result: chunk_<row>_<col>, zero-padded so names sort in order."""
        return f"chunk_{self.row:05d}_{self.col:05d}"

    @property
    def core_pixels(self) -> int:
        x0, y0, x1, y1 = self.core
        return (x1 - x0) * (y1 - y0)

    def level0_box(self, grid: Grid) -> Box:
        """The core as level-0 pixel index ranges (x0, y0, x1, y1), half-open."""
        f = grid.level0_per_working
        x0, y0, x1, y1 = self.core
        return (math.floor(x0 * f), math.floor(y0 * f), math.ceil(x1 * f), math.ceil(y1 * f))


def _round_up(n: int, stride: int) -> int:
    return -(-n // stride) * stride


def plan_chunks(extent: tuple[int, int], chunk_size: int, halo: int, tissue: np.ndarray | None = None,
                tissue_downsample: float | None = None, stride: int = 1) -> list[Chunk]:
    """The chunks (row-major order) covering a working extent (width, height) that touch tissue.

    `chunk_size` and `halo` (working pixels) are rounded up to multiples of `stride`, so every
    read box starts on the network's stride grid and the network sees each pixel in the same
    pooling phase as in a whole-image pass. `tissue` is a bool mask over the whole extent at a
    lower resolution, `tissue_downsample` working pixels per mask pixel (default: the extent
    divided by the mask's shape); a chunk is kept when its core, grown by one mask pixel,
    holds any tissue. None keeps every chunk."""
    width, height = (int(v) for v in extent)
    if chunk_size < 1 or halo < 0:
        raise SegzooError(f"chunk_size must be >= 1 and halo >= 0 pixels, got {chunk_size} and {halo}")
    stride = max(int(stride), 1)
    size, halo = _round_up(int(chunk_size), stride), _round_up(int(halo), stride)
    if tissue is not None:
        tissue = np.asarray(tissue, dtype=bool)
        if tissue.ndim != 2:
            raise SegzooError(f"tissue mask must be 2-D, got shape {tissue.shape}")
        if tissue_downsample is None:
            tissue_downsample = max(width / max(tissue.shape[1], 1), height / max(tissue.shape[0], 1))
    chunks = []
    for row, y0 in enumerate(range(0, height, size)):
        for col, x0 in enumerate(range(0, width, size)):
            core = (x0, y0, min(x0 + size, width), min(y0 + size, height))
            if tissue is not None:
                d = float(tissue_downsample)
                mx0, my0 = max(int(core[0] / d) - 1, 0), max(int(core[1] / d) - 1, 0)
                mx1, my1 = math.ceil(core[2] / d) + 1, math.ceil(core[3] / d) + 1
                if not tissue[my0:my1, mx0:mx1].any():
                    continue
            read = (max(x0 - halo, 0), max(y0 - halo, 0), min(core[2] + halo, width), min(core[3] + halo, height))
            chunks.append(Chunk(row, col, core, read))
    return chunks


@dataclass
class ChunkResult:
    """The nuclei one chunk owns, in level-0 coordinates (see module docstring).

    columns: COLUMNS name -> 1-D array, one entry per nucleus (area_um2 absent when the
    slide's resolution is unknown); ring_offsets: int64 (n+1,), nucleus i's closed polygon
    ring is vertices[ring_offsets[i]:ring_offsets[i+1]]; vertices: float64 (V, 2) as (x, y)."""

    chunk: Chunk
    columns: dict[str, np.ndarray]
    ring_offsets: np.ndarray
    vertices: np.ndarray

    @property
    def count(self) -> int:
        return len(self.ring_offsets) - 1

    def ring(self, i: int) -> np.ndarray:
        return self.vertices[self.ring_offsets[i]:self.ring_offsets[i + 1]]

    def save(self, path: str | os.PathLike) -> None:
        """Write to `path` (.npz) atomically: a temporary file in the same folder, then a rename."""
        path = Path(path)
        arrays = {f"col_{name}": values for name, values in self.columns.items()}
        scale = 10 ** VERTEX_DECIMALS
        arrays.update(
            chunk=np.array([self.chunk.row, self.chunk.col, *self.chunk.core, *self.chunk.read], dtype=np.int64),
            ring_offsets=self.ring_offsets.astype(np.int64),
            vertices=np.round(self.vertices * scale).astype(np.int64))
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                np.savez_compressed(handle, **arrays)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    @classmethod
    def load(cls, path: str | os.PathLike) -> ChunkResult:
        try:
            with np.load(path) as data:
                c = [int(v) for v in data["chunk"]]
                columns = {name: data[f"col_{name}"] for name in COLUMNS if f"col_{name}" in data.files}
                offsets = data["ring_offsets"]
                vertices = data["vertices"] / 10 ** VERTEX_DECIMALS
        except (OSError, ValueError, KeyError) as err:
            raise DataError(f"{path}: unreadable chunk result ({err}); delete it to recompute the chunk") from None
        return cls(Chunk(c[0], c[1], tuple(c[2:6]), tuple(c[6:10])), columns, offsets, vertices)


def read_chunk(slide, grid: Grid, chunk: Chunk) -> np.ndarray:
    """The chunk's read box as HxWx3 uint8 RGB at the working resolution."""
    x0, y0, x1, y1 = chunk.read
    if grid.scale == 1.0:
        return slide.read_region(grid.level, x0, y0, x1 - x0, y1 - y0)
    from segzoo.slides.reader import read_scaled

    return read_scaled(slide, grid.level, grid.scale, x0, y0, x1 - x0, y1 - y0)


def predict_chunk(predictor, image: np.ndarray, *, tta: bool = False) -> np.ndarray:
    """Nucleus probability (HxW float32) of a chunk's image, as Predictor.predict computes it:
    no-data regions (segzoo.postprocessing.no_data_mask) filled with mirrored tissue for the
    network (segzoo.preprocessing.fill_no_data) and given probability 0, then
    segzoo.inference.predict_probabilities with the predictor's runtime and config (network
    tiles blended inside the chunk)."""
    from segzoo.inference import predict_probabilities
    from segzoo.postprocessing import no_data_mask
    from segzoo.preprocessing import fill_no_data

    no_data = no_data_mask(image)
    has_no_data = bool(no_data.any())
    prob = predict_probabilities(predictor.run_batch, fill_no_data(image, no_data) if has_no_data else image,
                                 predictor.config, tta=tta)[..., 0]
    if has_no_data:
        prob = np.array(prob, dtype=np.float32)
        prob[no_data] = 0.0
    return prob


# Marching squares at 0.5 around pixel centres, for every label of an image at once. Cell
# (i, j) of the zero-padded label image has corners a=(i, j), b=(i, j+1), c=(i+1, j+1),
# d=(i+1, j); contour vertices lie on its edges T (a-b), R (b-c), B (c-d), L (d-a), at their
# midpoints. Case = bits of the corners inside (a 1, b 2, c 4, d 8); saddles keep the two
# inside corners apart (skimage.measure.find_contours' default, fully_connected='low').
_EDGE_POINTS = {"T": (0.0, 0.5), "R": (0.5, 1.0), "B": (1.0, 0.5), "L": (0.5, 0.0)}
_CORNERS = ((0.0, 0.0), (0.0, 1.0), (1.0, 1.0), (1.0, 0.0))
_CUTS = {("L", "T"): 0, ("T", "R"): 1, ("R", "B"): 2, ("B", "L"): 3}  # segment -> corner it cuts off


def _case_segments(case: int) -> list[tuple[str, str]]:
    inside = [bool(case >> k & 1) for k in range(4)]
    n = sum(inside)
    if n in (0, 4):
        return []
    if n in (1, 3):
        corner = inside.index(n == 1)
        segments = [next(seg for seg, k in _CUTS.items() if k == corner)]
    elif inside[0] == inside[2]:  # saddle: each inside corner cut off on its own
        segments = [seg for seg, k in _CUTS.items() if inside[k]]
    else:
        segments = [("L", "R")] if inside[0] == inside[1] else [("T", "B")]
    oriented = []
    for p, q in segments:
        # orient so the inside is on the left of p -> q (in row, col coordinates)
        if (p, q) in _CUTS:
            k = _CUTS[(p, q)]
            x = _CORNERS[k] if inside[k] else (0.5, 0.5)
        else:
            x = tuple(np.mean([_CORNERS[k] for k in range(4) if inside[k]], axis=0))
        (pr, pc), (qr, qc) = _EDGE_POINTS[p], _EDGE_POINTS[q]
        cross = (qr - pr) * (x[1] - pc) - (qc - pc) * (x[0] - pr)
        oriented.append((p, q) if cross > 0 else (q, p))
    return oriented


_EDGE_INDEX = {"T": 0, "R": 1, "B": 2, "L": 3}
_TABLE = np.full((16, 2, 2), -1, dtype=np.int64)  # case, segment, (from edge, to edge)
for _case in range(16):
    for _s, (_p, _q) in enumerate(_case_segments(_case)):
        _TABLE[_case, _s] = (_EDGE_INDEX[_p], _EDGE_INDEX[_q])
# per edge: (kind 0 horizontal pair / 1 vertical pair, row offset, col offset) of its pixel pair, and the
# vertex position (row, col) relative to the cell's top-left pixel
_EDGE_KEY = np.array([(0, 0, 0), (1, 0, 1), (0, 1, 0), (1, 0, 0)], dtype=np.int64)
_EDGE_POS = np.array([_EDGE_POINTS[e] for e in "TRBL"])


def _cycles(nxt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For a permutation `nxt` (node -> next node): (cycle id = smallest node of the cycle,
    position of each node along its cycle from that node), by pointer doubling."""
    n = len(nxt)
    rep = np.arange(n)
    jump = nxt.copy()
    while True:  # rep: the smallest node among the next 2^k; unchanged once 2^k >= every cycle's length
        new = np.minimum(rep, rep[jump])
        if np.array_equal(new, rep):
            break
        rep, jump = new, jump[jump]
    pred = np.empty(n, dtype=np.int64)
    pred[nxt] = np.arange(n)
    head = rep == np.arange(n)
    pred[head] = np.flatnonzero(head)
    dist = (~head).astype(np.int64)
    while True:
        step = dist[pred]
        if not step.any():
            break
        dist += step
        pred = pred[pred]
    return rep, dist


def _outlines(labels: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Closed outlines of the labels in `keep` (sorted label ids): (offsets (n+1,), vertices
    (V, 2) as (x, y) pixel coordinates of `labels`, pixel centres at integers).

    The rings are those of skimage.measure.find_contours(label == id, 0.5) on the zero-padded
    label image (the longest ring when a label has several, as segzoo.writers.nucleus_polygons),
    traced for all labels at once with numpy; each ring ends with its first vertex."""
    n = len(keep)
    offsets = np.zeros(n + 1, dtype=np.int64)
    if n == 0:
        return offsets, np.zeros((0, 2))
    wanted = np.zeros(int(labels.max()) + 1, dtype=bool)
    wanted[keep] = True
    padded = np.pad(labels, 1)
    hp, wp = padded.shape
    a, b, c, d = padded[:-1, :-1], padded[:-1, 1:], padded[1:, 1:], padded[1:, :-1]
    cells = np.flatnonzero(((a != b) | (b != c) | (c != d)).ravel())
    rows, cols = np.divmod(cells, wp - 1)
    corners = [x.ravel()[cells] for x in (a, b, c, d)]
    parts = []
    for k, lab in enumerate(corners):
        valid = wanted[lab] & (lab != 0)
        for earlier in corners[:k]:
            valid &= lab != earlier
        idx = np.flatnonzero(valid)
        lab = lab[idx]
        case = sum((corners[j][idx] == lab).astype(np.int64) << j for j in range(4))
        parts.append((idx, lab, case))
    idx = np.concatenate([p[0] for p in parts])
    lab = np.concatenate([p[1] for p in parts]).astype(np.int64)
    case = np.concatenate([p[2] for p in parts])
    seg_cell, seg_lab, seg_edges = [], [], []
    for s in range(2):
        has = _TABLE[case, s, 0] >= 0
        seg_cell.append(idx[has])
        seg_lab.append(lab[has])
        seg_edges.append(_TABLE[case[has], s])
    cell = np.concatenate(seg_cell)
    lab = np.concatenate(seg_lab)
    edges = np.concatenate(seg_edges)
    r, cc = rows[cell], cols[cell]

    def key(edge: np.ndarray) -> np.ndarray:
        kind, dr, dc = _EDGE_KEY[edge].T
        return ((lab * 2 + kind) * hp + r + dr) * wp + cc + dc

    start, stop = key(edges[:, 0]), key(edges[:, 1])
    order = np.argsort(start, kind="stable")
    nxt = order[np.searchsorted(start[order], stop)]  # the segment that starts where each one stops
    rep, dist = _cycles(nxt)
    size = np.bincount(rep, minlength=len(rep))[rep]
    # per label, its longest ring (ties: the one with the smallest first segment)
    ring_order = np.lexsort((rep, -size, lab))
    first_of_label = np.ones(len(ring_order), dtype=bool)
    first_of_label[1:] = lab[ring_order][1:] != lab[ring_order][:-1]
    chosen = np.zeros(len(rep), dtype=bool)
    chosen[rep[ring_order[first_of_label]]] = True
    members = np.flatnonzero(chosen[rep])
    members = members[np.lexsort((dist[members], rep[members], lab[members]))]
    pos = _EDGE_POS[edges[members, 0]] + np.stack([r[members], cc[members]], axis=1) - 1.0  # unpadded (row, col)
    counts = np.bincount(np.searchsorted(keep, lab[members]), minlength=n)
    ring_starts = np.concatenate([[0], np.cumsum(counts)])
    offsets[1:] = np.cumsum(counts + 1)
    out = np.empty((offsets[-1], 2))
    within = np.arange(len(members)) - np.repeat(ring_starts[:-1], counts)
    target = np.repeat(offsets[:-1], counts) + within
    out[target] = pos[:, ::-1]
    out[offsets[1:] - 1] = out[offsets[:-1]]  # close each ring
    return offsets, out


def simplify_rings(offsets: np.ndarray, vertices: np.ndarray, tolerance: float) -> tuple[np.ndarray, np.ndarray]:
    """Douglas-Peucker on closed rings (each ends with its first vertex), all rings at once:
    every dropped vertex lies within `tolerance` of the simplified ring's edge that replaces it.
    A ring that would keep fewer than 4 vertices (3 corners + closing) is kept whole."""
    total = len(vertices)
    if total == 0:
        return offsets, vertices
    keep = np.zeros(total, dtype=bool)
    keep[offsets[:-1]] = True
    keep[offsets[1:] - 1] = True
    s, e = offsets[:-1].copy(), offsets[1:] - 1
    while len(s):
        inner = e - s - 1
        active = inner > 0
        s, e, inner = s[active], e[active], inner[active]
        if not len(s):
            break
        seg = np.repeat(np.arange(len(s)), inner)
        first = np.cumsum(inner) - inner
        idx = s[seg] + 1 + (np.arange(len(seg)) - first[seg])
        p, q, x = vertices[s][seg], vertices[e][seg], vertices[idx]
        v, w = q - p, x - p
        length2 = (v * v).sum(axis=1)
        t = np.clip((w * v).sum(axis=1) / np.where(length2 > 0, length2, 1.0), 0.0, 1.0)
        dist = np.hypot(*(w - t[:, None] * v).T)
        dmax = np.maximum.reduceat(dist, first)
        hits = np.flatnonzero(dist == dmax[seg])
        _, at = np.unique(seg[hits], return_index=True)
        farthest = idx[hits[at]]
        split = dmax > tolerance
        keep[farthest[split]] = True
        s, e = np.concatenate([s[split], farthest[split]]), np.concatenate([farthest[split], e[split]])
    ring = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    kept = np.bincount(ring[keep], minlength=len(offsets) - 1)
    small = kept < 4
    keep |= small[ring]
    counts = np.bincount(ring[keep], minlength=len(offsets) - 1)
    return np.concatenate([[0], np.cumsum(counts)]), vertices[keep]


def chunk_nuclei(image: np.ndarray, prob: np.ndarray, chunk: Chunk, grid: Grid, post) -> ChunkResult:
    """Nuclei of a chunk's read box (image HxWx3 uint8, prob HxW float32) owned by its core.

    Instances come from segzoo.postprocessing.probabilities_to_instances with `post` (the
    model's Postprocessing). A nucleus is kept when its centroid (working pixels) lies in
    the core, half-open. Per kept nucleus, in level-0 units: area (pixels, float: working
    pixels x f^2), area_um2 (when grid.mpp is known), centroid_x/y (points), bbox_x0/y0/x1/y1
    (pixel index ranges, half-open), mean_r/g/b (0-255, of the working image), mean_prob, and
    its outline simplified to within SIMPLIFY_TOLERANCE level-0 pixels. All sums come from
    one bincount pass per quantity; no measurement is computed twice."""
    from scipy import ndimage as ndi

    from segzoo.postprocessing import probabilities_to_instances

    _, labels = probabilities_to_instances(prob, post)
    rx0, ry0 = chunk.read[0], chunk.read[1]
    cx0, cy0, cx1, cy1 = chunk.core
    count = int(labels.max()) if labels.size else 0
    flat = labels.ravel()
    inside = np.flatnonzero(flat)
    ids = flat[inside]
    area = np.bincount(ids, minlength=count + 1).astype(np.float64)
    rows, cols = np.divmod(inside, labels.shape[1])
    with np.errstate(invalid="ignore", divide="ignore"):
        cy = np.bincount(ids, weights=rows, minlength=count + 1) / area + ry0
        cx = np.bincount(ids, weights=cols, minlength=count + 1) / area + rx0
    owned = (area > 0) & (cx >= cx0) & (cx < cx1) & (cy >= cy0) & (cy < cy1)
    owned[0] = False
    keep = np.flatnonzero(owned)
    n = len(keep)
    means = {}
    if n:
        pixels = image.reshape(-1, image.shape[-1])
        for i, name in enumerate(("mean_r", "mean_g", "mean_b")):
            means[name] = np.bincount(ids, weights=pixels[inside, i], minlength=count + 1)[keep] / area[keep]
        means["mean_prob"] = (np.bincount(ids, weights=prob.ravel()[inside], minlength=count + 1)[keep]
                              / area[keep])
    else:
        means = {name: np.zeros(0) for name in ("mean_r", "mean_g", "mean_b", "mean_prob")}
    f = grid.level0_per_working
    boxes = ndi.find_objects(labels, max_label=count)
    bbox = np.array([(boxes[i - 1][1].start, boxes[i - 1][0].start, boxes[i - 1][1].stop, boxes[i - 1][0].stop)
                     for i in keep], dtype=np.int64).reshape(n, 4) + np.array([rx0, ry0, rx0, ry0])
    bbox = np.concatenate([np.floor(bbox[:, :2] * f), np.ceil(bbox[:, 2:] * f)], axis=1).astype(np.int64)
    offsets, rings = _outlines(labels, keep)
    offsets, rings = simplify_rings(offsets, rings, SIMPLIFY_TOLERANCE / f)
    vertices = np.round(grid.to_level0(rings + np.array([rx0, ry0])), VERTEX_DECIMALS)
    columns = {"area": area[keep] * f * f}
    if grid.working_mpp is not None:
        columns["area_um2"] = area[keep] * grid.working_mpp ** 2
    columns["centroid_x"] = grid.to_level0(cx[keep])
    columns["centroid_y"] = grid.to_level0(cy[keep])
    for i, name in enumerate(INT_COLUMNS):
        columns[name] = bbox[:, i]
    columns.update(means)
    for name, decimals in ROUNDING.items():
        if name in columns:
            columns[name] = np.round(columns[name].astype(np.float64), decimals)
    return ChunkResult(chunk, columns, offsets, vertices)


def run_chunk(predictor, slide, grid: Grid, chunk: Chunk, *, tta: bool = False) -> ChunkResult:
    """Read, predict and measure one chunk: read_chunk -> predict_chunk -> chunk_nuclei.

    A function of its explicit inputs and the predictor (its run_batch and config) only, so
    another process can compute any chunk; DataError from the read (a corrupt region)
    propagates for the caller to record."""
    image = read_chunk(slide, grid, chunk)
    prob = predict_chunk(predictor, image, tta=tta)
    return chunk_nuclei(image, prob, chunk, grid, predictor.config.postprocessing)
