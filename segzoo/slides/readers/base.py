"""The slide interface every reader implements, and what readers share (padding, RGBA, checks, mpp views).

A slide is a pyramid of levels; level 0 is the full resolution. `read_region(level, x, y,
width, height)` takes the region's top-left corner in that level's own pixel coordinates and
returns an RGB uint8 array (height, width, 3); the parts of a region outside the level are
white (255), the colour of glass, so they are background for the network and the tissue mask.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

BACKGROUND = 255  # fill value outside a level: white glass


class Slide(Protocol):
    """A readable slide (see module docstring for coordinates)."""

    path: Path | None
    level_dimensions: list[tuple[int, int]]  # (width, height) of each level, level 0 first
    level_downsamples: list[float]           # level-0 pixels per level pixel, 1.0 first
    mpp: float | None                        # level-0 microns per pixel; None when unknown

    def read_region(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray: ...

    def close(self) -> None: ...


class ClosingSlide:
    """Mixin for slides that define close(): `with open_slide(path) as slide:` closes the slide on exit."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def padded_read(array: np.ndarray, x: int, y: int, width: int, height: int) -> np.ndarray:
    """array[y:y+height, x:x+width] (HxWx3 uint8), white where the window leaves the array.

    array: HxWx3 (or more channels; the first three are kept) uint8 image.
    x, y: the window's top-left corner (may be negative).
    width, height: the window's size."""
    out = np.full((height, width, 3), BACKGROUND, dtype=np.uint8)
    h, w = array.shape[:2]
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + width, w), min(y + height, h)
    if x1 > x0 and y1 > y0:
        out[y0 - y:y1 - y, x0 - x:x1 - x] = array[y0:y1, x0:x1, :3]
    return out


def rgba_to_rgb(rgba: np.ndarray) -> np.ndarray:
    """HxWx4 unassociated RGBA -> HxWx3 uint8 composited over white (alpha 0 -> white glass)."""
    rgb, alpha = rgba[..., :3], rgba[..., 3:4]
    if alpha.min() == 255:
        return np.ascontiguousarray(rgb)
    a = alpha.astype(np.float32) / 255.0
    out = rgb.astype(np.float32) * a + BACKGROUND * (1.0 - a)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def image_rgba_to_rgb(image) -> np.ndarray:
    """A PIL RGBA image (OpenSlide's read_region) as rgba_to_rgb gives it: when every pixel is
    opaque (most reads), Pillow drops the alpha band in C, about 2x faster than through numpy on a
    level-0 read; otherwise rgba_to_rgb composites over white. A writable array either way."""
    if image.getchannel("A").getextrema()[0] == 255:
        return np.array(image.convert("RGB"))
    return rgba_to_rgb(np.asarray(image))


def check_region(slide: Slide, level: int, width: int, height: int) -> None:
    """ValueError unless `level` is one of the slide's levels and the size is non-negative.

    slide: the slide whose levels are checked.
    level: the level asked for.
    width, height: the region's size asked for."""
    n = len(slide.level_dimensions)
    if not isinstance(level, (int, np.integer)) or not 0 <= level < n:
        raise ValueError(f"{slide.path}: level must be an integer in 0..{n - 1}, got {level!r}")
    if width < 0 or height < 0:
        raise ValueError(f"region size must be non-negative, got width={width}, height={height}")


class MppView:
    """A slide seen with another level-0 mpp (reads go to the slide itself)."""

    def __init__(self, slide: Slide, mpp: float | None):
        self._slide, self.mpp = slide, mpp

    def __getattr__(self, name):
        return getattr(self._slide, name)


def with_mpp(slide: Slide, mpp: float | None) -> Slide:
    """`slide` seen with another level-0 mpp (itself when it already has it)."""
    return slide if slide.mpp == mpp else MppView(slide, mpp)
