"""The working grid: the pyramid level and scale at which a slide is read for a model.

Working resolution: the model's `config.resolution.mpp`. The slide's microns per pixel come
from its metadata or `mpp=`; the level read is segzoo.slides.readers.resolution.best_level's
and the scale working_scale's (levels within 2% of the model are read without resampling). A
plain in-memory image (ArraySlide) without mpp is assumed to be at the model's resolution
(logged at INFO); a slide file without mpp is an error; a model whose config has no resolution
reads level 0 as it is (logged as a warning). A slide whose best level must be upsampled by
UPSAMPLE_WARNING (1.5x) or more to reach the model's scale is logged as a WARNING (and noted in the
run's notes) that names the loss and the zoo models trained at the slide's scale, if any.

A working point x maps to level 0 as x0 = (x + 0.5) * f - 0.5 with f = level downsample / scale
(level-0 pixels per working pixel); pixel centres are at integers (see segzoo.slides).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np

from segzoo.config import SCALE_TOLERANCE, ModelConfig
from segzoo.errors import DataError, UsageError
from segzoo.slides.readers.array import ArraySlide
from segzoo.slides.readers.base import Slide
from segzoo.slides.readers.resolution import best_level, working_scale
from segzoo.zoo.registry import models_at

log = logging.getLogger(__name__)

UPSAMPLE_WARNING = SCALE_TOLERANCE  # working_grid warns when a slide is upsampled by this much or more


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



def working_grid(slide: Slide, config: ModelConfig, mpp: float | None = None) -> tuple[Grid, list[str]]:
    """(Grid, notes): the level and scale at which `slide` is read for a model with `config`.

    `mpp` (microns per level-0 pixel) overrides the slide's. Raises DataError (argument 'mpp') for a slide
    file with no resolution and no override (a plain in-memory image is assumed to be at the
    model's resolution)."""
    name = slide_name(slide)
    target = config.resolution.mpp
    slide_mpp = mpp if mpp is not None else slide.mpp
    if mpp is not None and not (isinstance(mpp, (int, float)) and math.isfinite(mpp) and mpp > 0):
        raise UsageError(f"mpp must be a positive number of microns per pixel, got {mpp!r}", argument="mpp")
    notes = []
    level, scale = 0, 1.0
    if target is None:
        notes.append(f"the model config has no resolution.mpp, so {name} is read at level 0 as it is "
                     "(its scale is assumed to be the model's)")
        log.warning("%s", notes[-1])
    elif slide_mpp is None:
        if not isinstance(slide, ArraySlide):
            raise DataError(f"{name} has no microns-per-pixel in its metadata; pass mpp= (microns per level-0 "
                            f"pixel; the model was trained at {target} um/px)", argument="mpp")
        notes.append(f"{name} has no resolution in its metadata; assuming the model's {target} um/px")
        log.info("%s", notes[-1])
    else:
        view = SimpleNamespace(mpp=float(slide_mpp), level_downsamples=slide.level_downsamples, path=slide.path)
        level, level_mpp = best_level(view, target)
        scale = working_scale(level_mpp, target)
        if scale >= UPSAMPLE_WARNING:
            notes.append(upsampling_note(name, level, level_mpp, scale, target))
            log.warning("%s", notes[-1])
        elif scale != 1.0:
            notes.append(f"{name}: level {level} ({level_mpp:.4f} um/px) resampled by {scale:.4f} to the "
                         f"model's {target} um/px")
            log.info("%s", notes[-1])
    width, height = slide.level_dimensions[level]
    downsample = float(slide.level_downsamples[level])
    grid = Grid(level=level, scale=float(scale), downsample=downsample,
                width=max(math.ceil(width * scale - 1e-6), 1), height=max(math.ceil(height * scale - 1e-6), 1),
                mpp=None if slide_mpp is None else float(slide_mpp), stride=1)
    return grid, notes


def upsampling_note(name: str, level: int, level_mpp: float, scale: float, target: float) -> str:
    """The warning for a slide read upsampled: the scales, what is lost, and the zoo models trained at
    the slide's scale (segzoo.zoo.registry.models_at: within 10% of `level_mpp`), or that there are none."""
    models = models_at(level_mpp)
    zoo = (f"zoo models trained at about {level_mpp:.2f} um/px: {', '.join(models)}" if models else
           f"no zoo model is trained at about {level_mpp:.2f} um/px")
    return (f"{name}: its best level (level {level}, {level_mpp:.4f} um/px) is upsampled by {scale:.1f}x to the "
            f"model's {target} um/px; an upsampled slide loses accuracy: the model sees blurred, enlarged nuclei, so it segments them "
            f"fattened and merges touching ones; {zoo}")


def slide_name(slide: Slide) -> str:
    """How messages name a slide: its path, or "the image" for an in-memory one."""
    return str(slide.path) if getattr(slide, "path", None) is not None else "the image"
