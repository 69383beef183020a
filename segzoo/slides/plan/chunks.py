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
level-0 pixels of the slide with pixel centres at integers, as segzoo.io.outlines'
polygons and centroids: level-0 pixel (r, c) is centred on (x=c, y=r) and covers
[c-0.5, c+0.5) x [r-0.5, r+0.5). A working point x maps to level 0 as
x0 = (x + 0.5) * f - 0.5 with f = level downsample / scale (level-0 pixels per working pixel).
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segzoo.errors import DataError, SegzooError

log = logging.getLogger(__name__)

Box = tuple[int, int, int, int]  # (x0, y0, x1, y1) working pixels, half-open

COLUMNS = ("area", "area_um2", "centroid_x", "centroid_y", "bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1",
           "mean_r", "mean_g", "mean_b", "mean_prob")
"""Per-nucleus measurements of a ChunkResult, in this order (segzoo.io.measurements.nucleus_measurements'
columns without 'label'; area_um2 only when the slide's resolution is known)."""
VERTEX_SCALE = 100  # chunk files store vertices as integer 1/100 level-0 pixels (writers.VERTEX_DECIMALS)


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
        scale = VERTEX_SCALE
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
                vertices = data["vertices"] / VERTEX_SCALE
        except (OSError, ValueError, KeyError) as err:
            raise DataError(f"{path}: unreadable chunk result ({err}); delete it to recompute the chunk") from None
        return cls(Chunk(c[0], c[1], tuple(c[2:6]), tuple(c[6:10])), columns, offsets, vertices)


DAMAGE_BLOCK = 16
"""When a read box cannot be read, its parts are read again, split at multiples of powers of
two (where tile borders usually are) down to this many working pixels."""


def _split(a: int, b: int) -> int:
    """A point strictly inside (a, b) on the coarsest power-of-two grid that has one."""
    p = 1 << max((b - a).bit_length() - 1, 0)
    while p > 1 and (a // p + 1) * p >= b:
        p //= 2
    return (a // p + 1) * p


def read_box(slide, grid: Grid, box: Box) -> np.ndarray:
    """A box of working pixels as HxWx3 uint8 RGB (DataError when the slide cannot give it)."""
    x0, y0, x1, y1 = box
    if grid.scale == 1.0:
        return slide.read_region(grid.level, x0, y0, x1 - x0, y1 - y0)
    from segzoo.slides.resolution import read_scaled

    return read_scaled(slide, grid.level, grid.scale, x0, y0, x1 - x0, y1 - y0)


def _intersects(a: Box, b: Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def read_chunk(slide, grid: Grid, chunk: Chunk) -> np.ndarray:
    """The chunk's read box as HxWx3 uint8 RGB at the working resolution.

    Where part of it cannot be read (DataError: a corrupt tile), the box is read again in
    DAMAGE_BLOCK blocks: when the unreadable blocks lie in the halo only, they are white
    (no-data, which the prediction fills with mirrored tissue) and the chunk goes on; when one
    touches the core, DataError names the unreadable blocks as level-0 boxes (the chunks whose
    cores hold them report them, so a corrupt tile costs the chunks it lies in, not its
    neighbours too)."""
    try:
        return read_box(slide, grid, chunk.read)
    except DataError as first:
        rx0, ry0, rx1, ry1 = chunk.read
        image = np.full((ry1 - ry0, rx1 - rx0, 3), 255, np.uint8)
        damaged: list[Box] = []
        pending = [chunk.read]
        while pending:
            box = pending.pop()
            x0, y0, x1, y1 = box
            try:
                image[y0 - ry0:y1 - ry0, x0 - rx0:x1 - rx0] = read_box(slide, grid, box)
            except DataError:
                if x1 - x0 <= DAMAGE_BLOCK and y1 - y0 <= DAMAGE_BLOCK:
                    damaged.append(box)
                    continue
                xm = _split(x0, x1) if x1 - x0 > DAMAGE_BLOCK else x1
                ym = _split(y0, y1) if y1 - y0 > DAMAGE_BLOCK else y1
                pending.extend(b for b in ((x0, y0, xm, ym), (xm, y0, x1, ym), (x0, ym, xm, y1), (xm, ym, x1, y1))
                               if b[0] < b[2] and b[1] < b[3])
        in_core = [b for b in damaged if _intersects(b, chunk.core)]
        if in_core:
            f = grid.level0_per_working
            x0, y0 = min(b[0] for b in in_core), min(b[1] for b in in_core)
            x1, y1 = max(b[2] for b in in_core), max(b[3] for b in in_core)
            raise DataError(f"{first} (unreadable: {len(in_core)} blocks of {DAMAGE_BLOCK} px within level-0 "
                            f"x {math.floor(x0 * f)}-{math.ceil(x1 * f)} y {math.floor(y0 * f)}-{math.ceil(y1 * f)})"
                            ) from None
        if damaged:
            log.info("chunk (%d, %d): %d blocks of its halo cannot be read (%s); predicted with white there",
                     chunk.row, chunk.col, len(damaged), first)
        return image


CHUNK_TILE_SIZE = 1024
"""The network tile of the whole-slide path (working pixels): a default chunk's read box is one
such tile (832 px core + 96 px halo each side), and read boxes up to this size go through the
network in one pass. Every chunk recomputes its halo, so the network sees 1.51x the core's
pixels. 1536 px tiles (1.31x) were measured on the benchmark's 20000 px slide (2-core AMD EPYC,
int8): end to end 0.90 tissue Mpx/s for unet and 1.31 for deeplabv3 (0.86x and 0.84x their
single-tile rates, against 0.62x for unet at 1024), but unet's peak RSS reached 1992 MB on the
40x slide and 2109 MB on its 20x copy, over the 2 GB that the slide path keeps to; so 1024."""


def predict_chunk(predictor, image: np.ndarray, *, tta: bool = False) -> np.ndarray:
    """Network outputs (HxWxK float32: the nucleus probability, then the model's instance maps) of
    a chunk's image, as Predictor.predict computes them (segzoo.predict.predictor.predict_outputs:
    no-data filled for the network and given probability 0), in CHUNK_TILE_SIZE network tiles."""
    from segzoo.predict.predictor import predict_outputs

    return predict_outputs(predictor.run_batch, image, predictor.config, tile_size=CHUNK_TILE_SIZE, tta=tta)


def chunk_nuclei(image: np.ndarray, outputs: np.ndarray, chunk: Chunk, grid: Grid, config) -> ChunkResult:
    """Nuclei of a chunk's read box (image HxWx3 uint8, outputs HxWxK float32 from predict_chunk)
    owned by its core.

    Instances come from segzoo.predict.postprocessing.outputs_to_instances with `config` (the
    model's ModelConfig: its post-processing, and its learned instance map when it has one;
    both are local, so a nucleus whole inside the read box gets the labels a whole-image pass
    gives it); measurements and outlines from segzoo.io.measurements.nucleus_table
    (one pass, outlines simplified to within writers.SIMPLIFY_TOLERANCE level-0 pixels),
    with the read box's origin as offset and f (level-0 pixels per working pixel) as scale,
    so they are in level-0 units: area (pixels; an integer count when f = 1), area_um2 (when
    grid.mpp is known), centroid_x/y (points), bbox_x0/y0/x1/y1 (pixel index ranges,
    half-open), mean_r/g/b (of the working image), mean_prob. A nucleus is kept when its
    centroid lies in the core (half-open), so each belongs to exactly one chunk. Floats are
    rounded as writers writes them (MEASUREMENT_ROUNDING, VERTEX_DECIMALS)."""
    from segzoo.io.measurements import MEASUREMENT_ROUNDING, VERTEX_DECIMALS, nucleus_table
    from segzoo.predict.postprocessing import outputs_to_instances

    prob, _, labels = outputs_to_instances(outputs, config)
    rx0, ry0 = chunk.read[0], chunk.read[1]
    f = grid.level0_per_working

    def output(edge: int, origin: int) -> float:  # the arithmetic writers applies to a centroid
        value = np.float64(edge - origin) + origin
        return float(value if f == 1.0 else (value + 0.5) * f - 0.5)

    x0, y0, x1, y1 = chunk.core
    lo_x, hi_x, lo_y, hi_y = output(x0, rx0), output(x1, rx0), output(y0, ry0), output(y1, ry0)

    def owned(columns: dict[str, np.ndarray]) -> np.ndarray:
        cx, cy = columns["centroid_x"], columns["centroid_y"]
        return (cx >= lo_x) & (cx < hi_x) & (cy >= lo_y) & (cy < hi_y)

    table = nucleus_table(labels, image, prob, offset=(rx0, ry0), scale=f, mpp=grid.mpp, keep=owned)
    columns = {}
    for name, values in table.columns.items():
        if name == "label":
            continue
        if values.dtype.kind == "f" and name in MEASUREMENT_ROUNDING:
            values = np.round(values, MEASUREMENT_ROUNDING[name])
        columns[name] = values
    return ChunkResult(chunk, columns, table.ring_offsets.astype(np.int64),
                       np.round(table.vertices, VERTEX_DECIMALS))


def run_chunk(predictor, slide, grid: Grid, chunk: Chunk, *, tta: bool = False) -> ChunkResult:
    """Read, predict and measure one chunk: read_chunk -> predict_chunk -> chunk_nuclei.

    A function of its explicit inputs and the predictor (its run_batch and config) only, so
    another process can compute any chunk; DataError from the read (a corrupt region)
    propagates for the caller to record."""
    image = read_chunk(slide, grid, chunk)
    outputs = predict_chunk(predictor, image, tta=tta)
    return chunk_nuclei(image, outputs, chunk, grid, predictor.config)
