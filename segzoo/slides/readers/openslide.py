"""Reading slides through OpenSlide (extra `segzoo[slides]`: openslide-python and the
openslide-bin wheel): .svs .ndpi .mrxs .scn .svslide .bif .vms .vmu and vendor TIFFs.
Coordinates: segzoo.slides.readers.base; mpp from openslide.mpp-x.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import numpy as np

from segzoo.errors import DataError
from segzoo.slides.readers.base import BACKGROUND, ClosingSlide, check_region, image_rgba_to_rgb
from segzoo.slides.readers.resolution import parse_float, plausible_mpp
from segzoo.slides.readers.tiff import TRUNCATED, error_reason

log = logging.getLogger(__name__)


def import_openslide():
    """The openslide module, or None when the `slides` extra is not installed."""
    try:
        import openslide
    except ImportError as err:
        log.debug("openslide unavailable: %s", err)
        return None
    return openslide


def openslide_format(path: str | os.PathLike) -> str | None:
    """OpenSlide's name for the file's format ('aperio', 'generic-tiff', ...), None if it does not
    recognise it or OpenSlide is not installed."""
    openslide = import_openslide()
    if openslide is None:
        return None
    try:
        return openslide.OpenSlide.detect_format(str(path))
    except Exception:  # noqa: BLE001 - detect_format raises on unreadable files in some versions
        return None


class OpenSlideSlide(ClosingSlide):
    """A slide read through OpenSlide (thread-safe reads).

    OpenSlide's read_region takes its top-left in level-0 pixels; this class converts from the
    level's own coordinates (x * downsample). Pixels outside the scanned area (alpha 0) are white.
    After a read error OpenSlide's handle stays in an error state, so it is reopened and the
    error is raised as DataError naming the region; later reads work again. A file cut short is
    refused by open_slide before OpenSlide opens it (segzoo.slides.readers.factory.check_complete);
    one that shrinks after opening fails its reads with DataError saying the file is truncated.
    """

    def __init__(self, path: str | os.PathLike):
        openslide = import_openslide()
        if openslide is None:
            raise DataError(f"{path}: OpenSlide is not installed; install it with: pip install 'segzoo[slides]'")
        self.path = Path(path)
        self._openslide = openslide
        self._lock = threading.Lock()
        try:
            self._size = self.path.stat().st_size
            self._handle = openslide.OpenSlide(str(self.path))
        except Exception as err:  # noqa: BLE001 - OpenSlideUnsupportedFormatError, OpenSlideError, OSError
            raise DataError(f"{self.path}: OpenSlide cannot open it ({error_reason(err)})") from None
        h = self._handle
        self.vendor: str | None = h.properties.get("openslide.vendor")
        self.level_dimensions = [(int(w), int(hh)) for w, hh in h.level_dimensions]
        self.level_downsamples = [float(d) for d in h.level_downsamples]
        self.mpp = plausible_mpp(parse_float(h.properties.get("openslide.mpp-x")),
                                  parse_float(h.properties.get("openslide.mpp-y")), "openslide.mpp-x", self.path)

    def read_region(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        check_region(self, level, width, height)
        if width == 0 or height == 0:
            return np.full((height, width, 3), BACKGROUND, dtype=np.uint8)
        ds = self.level_downsamples[level]
        location = (round(x * ds), round(y * ds))
        handle = self._handle
        try:
            image = handle.read_region(location, int(level), (int(width), int(height)))
        except self._openslide.OpenSlideError as err:
            region = f"{self.path}: cannot read level {level} region (x={x}, y={y}, width={width}, height={height})"
            size = self.path.stat().st_size if self.path.is_file() else 0
            if size < self._size:
                raise DataError(f"{region}: {TRUNCATED}: it has {size} bytes, {self._size} when it was opened; "
                                "copy the file again") from None
            self._reopen(handle)
            raise DataError(f"{region}: {error_reason(err)}") from None
        return image_rgba_to_rgb(image)

    def _reopen(self, failed) -> None:
        with self._lock:
            if self._handle is not failed:  # another thread already reopened it
                return
            try:
                failed.close()
            except Exception as err:  # noqa: BLE001 - a handle in error state may fail to close
                log.debug("%s: closing the failed OpenSlide handle: %s", self.path, err)
            try:
                self._handle = self._openslide.OpenSlide(str(self.path))
            except Exception as err:  # noqa: BLE001 - the file changed or went away since it was opened
                raise DataError(f"{self.path}: OpenSlide cannot reopen it after a read error ({error_reason(err)})") from None

    def close(self) -> None:
        self._handle.close()

    def __repr__(self) -> str:
        return f"OpenSlideSlide({str(self.path)!r}, vendor={self.vendor!r}, levels={self.level_dimensions})"
