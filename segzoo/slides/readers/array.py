"""An in-memory single-level slide: a plain image (PNG, JPEG, small TIFF) or a test fixture."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segzoo.slides.readers.base import ClosingSlide, padded_read


@dataclass
class ArraySlide(ClosingSlide):
    """A single-level slide held in memory (a plain image, or a test fixture)."""

    image: np.ndarray                  # HxWx3 uint8
    mpp: float | None = None
    path: Path | None = None

    @property
    def level_dimensions(self) -> list[tuple[int, int]]:
        return [(int(self.image.shape[1]), int(self.image.shape[0]))]

    @property
    def level_downsamples(self) -> list[float]:
        return [1.0]

    def read_region(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        if level != 0:
            raise ValueError(f"ArraySlide has one level (0), got level {level}")
        return padded_read(self.image, x, y, width, height)

    def close(self) -> None:
        pass
