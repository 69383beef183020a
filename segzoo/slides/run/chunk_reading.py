"""Reading a chunk's read box at the working resolution, recovering from damaged regions."""

from __future__ import annotations

import logging
import math

import numpy as np

from segzoo.errors import DataError
from segzoo.slides.plan.chunks import Box, Chunk
from segzoo.slides.plan.grid import Grid
from segzoo.slides.readers.base import Slide
from segzoo.slides.readers.resolution import read_scaled

log = logging.getLogger(__name__)


DAMAGE_BLOCK = 16
"""When a read box cannot be read, its parts are read again, split at multiples of powers of
two (where tile borders usually are) down to this many working pixels."""


def _split(a: int, b: int) -> int:
    """A point strictly inside (a, b) on the coarsest power-of-two grid that has one."""
    p = 1 << max((b - a).bit_length() - 1, 0)
    while p > 1 and (a // p + 1) * p >= b:
        p //= 2
    return (a // p + 1) * p


def read_box(slide: Slide, grid: Grid, box: Box) -> np.ndarray:
    """A box of working pixels as HxWx3 uint8 RGB (DataError when the slide cannot give it)."""
    x0, y0, x1, y1 = box
    if grid.scale == 1.0:
        return slide.read_region(grid.level, x0, y0, x1 - x0, y1 - y0)
    return read_scaled(slide, grid.level, grid.scale, x0, y0, x1 - x0, y1 - y0)


def _intersects(a: Box, b: Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def read_chunk(slide: Slide, grid: Grid, chunk: Chunk) -> np.ndarray:
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
