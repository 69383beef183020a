"""A slide's resolution: microns per pixel from metadata, the pyramid level to read for a
model's resolution (best_level), the scale to it (working_scale), and reading a region
resampled to that scale (read_scaled).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from segzoo.errors import DataError
from segzoo.slides.readers.base import BACKGROUND, Slide

log = logging.getLogger(__name__)

LEVEL_TOLERANCE = 1.1         # best_level accepts a level up to 10% coarser than the target
SCALE_SNAP = 0.02             # working_scale: within 2% of 1 the level is read without resampling
MPP_RANGE = (0.01, 100.0)     # plausible microns per pixel; outside it the metadata is ignored


def check_mpp(mpp: float, what: str) -> float:
    """`mpp` as a positive finite float; DataError naming `what` otherwise."""
    try:
        value = float(mpp)
    except (TypeError, ValueError):
        raise DataError(f"{what}: mpp must be a number of microns per pixel, got {mpp!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise DataError(f"{what}: mpp must be a positive number of microns per pixel, got {mpp!r}")
    return value


def plausible_mpp(mpp_x: float | None, mpp_y: float | None, source: str, path: Path) -> float | None:
    """mpp_x if it is a plausible resolution (MPP_RANGE), else None (logged).

    mpp_x, mpp_y: microns per pixel along x and y (a warning when they differ by more than 1%).
    source: the metadata field they came from, for the log.
    path: the slide file, for the log."""
    if mpp_x is None or not math.isfinite(mpp_x) or mpp_x <= 0:
        return None
    if not MPP_RANGE[0] <= mpp_x <= MPP_RANGE[1]:
        log.info("%s: %s gives %.4g um/px, outside %g-%g; resolution treated as unknown",
                 path, source, mpp_x, *MPP_RANGE)
        return None
    if mpp_y is not None and math.isfinite(mpp_y) and mpp_y > 0 and abs(mpp_y - mpp_x) > 0.01 * mpp_x:
        log.warning("%s: %s gives non-square pixels (x %.4f, y %.4f um/px); using x", path, source, mpp_x, mpp_y)
    return mpp_x


def parse_float(value: Any) -> float | None:
    """float(value), or None when it is not a number (metadata values)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def level_mpps(slide: Slide) -> list[float]:
    """Microns per pixel of every level (level-0 mpp x downsample); DataError if the mpp is unknown."""
    if slide.mpp is None:
        raise DataError(f"{slide.path}: the slide's resolution (microns per pixel) is unknown; pass it (--mpp)")
    return [slide.mpp * ds for ds in slide.level_downsamples]


def best_level(slide: Slide, target_mpp: float) -> tuple[int, float]:
    """(level, level_mpp): the level to read for a model trained at `target_mpp` um/px.

    The coarsest level whose mpp is at or finer than target_mpp * 1.1 (10% tolerance), so no
    detail is invented: an 80x (0.125) slide with a 2x level is read at that level (0.25) for a
    0.25 model; a 0.252 slide is read at level 0; a 20x (0.5) slide, coarser than the model at
    every level, is read at level 0 and upsampled (see `working_scale`). DataError if the mpp is
    unknown.
    """
    target_mpp = check_mpp(target_mpp, "target resolution")
    mpps = level_mpps(slide)
    level = 0
    for i, m in enumerate(mpps):
        if m <= target_mpp * LEVEL_TOLERANCE and m >= mpps[level]:
            level = i
    return level, mpps[level]


def working_scale(level_mpp: float, target_mpp: float) -> float:
    """Scale from level pixels to working (model) pixels, level_mpp / target_mpp, snapped to exactly
    1.0 when within 2% so a slide scanned at almost the model's resolution is read without resampling."""
    scale = level_mpp / target_mpp
    return 1.0 if abs(scale - 1.0) <= SCALE_SNAP else scale


RESAMPLE_FILTERS = {"bilinear": 1.0, "bicubic": 2.0, "lanczos": 3.0}  # name -> filter support (pixels)


def read_scaled(slide: Slide, level: int, scale: float, x: int, y: int, width: int, height: int,
                *, resample: str = "bilinear") -> np.ndarray:
    """A `width` x `height` RGB uint8 region in working coordinates: level coordinates x `scale`.

    slide: the slide read.
    level: the pyramid level read.
    scale: working pixels per level pixel.
    x, y: the region's top-left corner in working pixels.
    width, height: the region's size in working pixels.
    resample: 'bilinear' (default), 'bicubic' or 'lanczos'.

    Pixel-centre convention: working pixel (x + j) has its centre x + j + 0.5 at level coordinate
    (x + j + 0.5) / scale (pixel edges at integers; the region spans level [x / scale,
    (x + width) / scale)). Resampling is Pillow's `Image.resize` with that box: bilinear by default
    (or 'bicubic', 'lanczos'); when downsampling (scale < 1) the filter widens by 1 / scale, so it
    is antialiased (a triangle filter averaging every level pixel under the working pixel).
    White outside the level. Memory and time are proportional to the region read (about
    width * height / scale**2 level pixels). When |scale - 1| < 1e-6 this is exactly
    slide.read_region(level, x, y, width, height).
    """
    from PIL import Image

    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a positive number, got {scale!r}")
    if resample not in RESAMPLE_FILTERS:
        raise ValueError(f"resample must be one of {', '.join(RESAMPLE_FILTERS)}, got {resample!r}")
    if abs(scale - 1.0) < 1e-6:
        return slide.read_region(level, x, y, width, height)
    if width <= 0 or height <= 0:
        return np.full((max(height, 0), max(width, 0), 3), BACKGROUND, dtype=np.uint8)
    inv = 1.0 / scale
    margin = math.ceil(RESAMPLE_FILTERS[resample] * max(inv, 1.0)) + 2  # the filter's reach, level pixels
    ex0, ey0, ex1, ey1 = x * inv, y * inv, (x + width) * inv, (y + height) * inv  # level pixel edges
    lx0, ly0 = math.floor(ex0) - margin, math.floor(ey0) - margin
    lx1, ly1 = math.ceil(ex1) + margin, math.ceil(ey1) + margin
    region = Image.fromarray(slide.read_region(level, lx0, ly0, lx1 - lx0, ly1 - ly0))
    filt = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC,
            "lanczos": Image.Resampling.LANCZOS}[resample]
    out = region.resize((width, height), filt, box=(ex0 - lx0, ey0 - ly0, ex1 - lx0, ey1 - ly0),
                        reducing_gap=3.0 if inv >= 6 else None)
    return np.asarray(out)
