"""A chunk's result: the nuclei one chunk owns, in level-0 coordinates, stored as one .npz file.

Coordinates are level-0 pixels of the slide with pixel centres at integers, as
segzoo.io.outlines' polygons and centroids: level-0 pixel (r, c) is centred on (x=c, y=r)
and covers [c-0.5, c+0.5) x [r-0.5, r+0.5).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segzoo.errors import DataError
from segzoo.slides.plan.chunks import Chunk
from segzoo.slides.plan.targets import COLUMNS

VERTEX_SCALE = 100  # chunk files store vertices as integer 1/100 level-0 pixels (segzoo.io.measurements.VERTEX_DECIMALS)


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
