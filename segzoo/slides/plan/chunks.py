"""The chunks: the units of work of whole-slide prediction, as geometry.

A slide is read at the *working resolution* (segzoo.slides.plan.grid). The working extent is
cut into a grid of square chunks; each chunk's *core* is a cell of the grid and its *read box*
is the core grown by `halo` pixels on every side (clipped to the slide). A chunk reads its
read box, predicts nuclei there, and keeps exactly the nuclei whose centroid lies in its core,
so every nucleus is owned by one chunk: none is cut at a chunk border, none is reported twice.

Boxes of working pixels are (x0, y0, x1, y1), half-open: pixel (row r, column c) is inside
when x0 <= c < x1 and y0 <= r < y1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from segzoo.errors import UsageError
from segzoo.slides.plan.grid import Grid

Box = tuple[int, int, int, int]  # (x0, y0, x1, y1) working pixels, half-open

CHUNK_TILE_SIZE = 1024
"""The network tile of the whole-slide path (working pixels): a default chunk's read box is one
such tile (832 px core + 96 px halo each side), and read boxes up to this size go through the
network in one pass. Larger tiles waste less network work on halos but raise peak memory
(README, "Whole slides": the 1536 px measurement)."""

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
    """The chunks (row-major order) covering a working extent that touch tissue.

    extent: (width, height) in working pixels.
    chunk_size: core side in working pixels, rounded up to a multiple of `stride`.
    halo: working pixels read around each core, rounded up to a multiple of `stride`.
    tissue: bool mask over the whole extent at a lower resolution (None keeps every chunk); a
        chunk is kept when its core, grown by one mask pixel, holds any tissue.
    tissue_downsample: working pixels per mask pixel (None: the extent divided by the mask's shape).
    stride: the network's pad_to_stride; every read box starts on its grid, so the network sees
        each pixel in the same pooling phase as in a whole-image pass."""
    width, height = (int(v) for v in extent)
    if chunk_size < 1 or halo < 0:
        raise UsageError(f"chunk_size must be >= 1 and halo >= 0 pixels, got {chunk_size} and {halo}")
    stride = max(int(stride), 1)
    size, halo = _round_up(int(chunk_size), stride), _round_up(int(halo), stride)
    if tissue is not None:
        tissue = np.asarray(tissue, dtype=bool)
        if tissue.ndim != 2:
            raise UsageError(f"tissue mask must be 2-D, got shape {tissue.shape}", argument="tissue")
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
