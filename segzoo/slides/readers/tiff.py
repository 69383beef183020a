"""Reading pyramidal / tiled / BigTIFF / OME-TIFF slides (and TIFF-based vendor files) through
tifffile, decoding only the tiles or strips a region touches (base install).

Microns per pixel: the Aperio description's `MPP = `, OME-XML PhysicalSizeX (unit converted
to um), or the TIFF XResolution/ResolutionUnit (cm or inch). Coordinates: segzoo.slides.readers.base.
A file cut short is found by segzoo.slides.readers.factory.open_slide before it opens it.
"""

from __future__ import annotations

import logging
import math
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from segzoo.errors import DataError
from segzoo.slides.readers.base import BACKGROUND, ClosingSlide, check_region, rgba_to_rgb
from segzoo.slides.readers.resolution import parse_float, plausible_mpp

log = logging.getLogger(__name__)

_OME_UNITS_UM = {"pm": 1e-6, "nm": 1e-3, "µm": 1.0, "um": 1.0, "micron": 1.0, "mm": 1e3, "cm": 1e4,
                 "m": 1e6, "Å": 1e-4, "A": 1e-4, "in": 25400.0, "inch": 25400.0}
_PHOTOMETRIC_SUPPORTED = {0: "MINISWHITE", 1: "MINISBLACK", 2: "RGB", 3: "PALETTE"}
_JPEG_COMPRESSIONS = {6, 7, 34892, 33007}
TRUNCATED = "the file is truncated or damaged"  # in every message about a file cut short


def error_reason(err: BaseException) -> str:
    """An exception's message for users, without its class name (which says nothing to them)."""
    return str(err).strip() or "unreadable data"


@dataclass
class _Source:
    """One IFD feeding some channels of a level: its segments, decoder and target channels."""

    page: Any             # TiffPage or TiffFrame: offsets and byte counts
    keyframe: Any         # TiffPage: decode() and geometry
    segment_offset: int   # index of the first segment of this plane
    channel: int          # first channel of the level buffer it writes
    channels: int         # how many channels it writes


@dataclass
class _TiffLevel:
    width: int
    height: int
    seg_w: int            # tile width, or the image width for strips
    seg_h: int            # tile length, or rows per strip
    across: int           # segments per row
    sources: list[_Source]
    samples: int          # channels in the assembled level buffer
    dtype: np.dtype
    direct: bool          # RGB uint8: segments are copied straight into the output


class TiffSlide(ClosingSlide):
    """A (pyramidal) TIFF read through tifffile, decoding only the tiles or strips a region touches.

    Levels are `TiffFile.series[0].levels` (SVS, OME SubIFDs, NDPI, generic multi-page pyramids).
    Grayscale is replicated to RGB, palette images are expanded, MINISWHITE is inverted, uint16
    is scaled by 1/257, float in [0, 1] by 255, an alpha channel is composited over white, and
    missing (empty) tiles are white. A tile that fails to decode raises DataError naming the level
    and the region; other regions still read. Reads are thread-safe (file access is locked).
    A file cut short fails open_slide itself (segzoo.slides.readers.factory.check_complete); should
    it shrink after opening, a read past its end raises DataError saying the file is truncated.
    """

    def __init__(self, path: str | os.PathLike):
        import tifffile

        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            self._tif = tifffile.TiffFile(self.path)
        except Exception as err:  # noqa: BLE001 - tifffile raises many types for non-TIFF or broken files
            raise DataError(f"{self.path}: tifffile cannot open it as a TIFF ({error_reason(err)})") from None
        try:
            self._levels = self._parse_levels()
            self.mpp = self._read_mpp()
        except DataError:
            self._tif.close()
            raise
        except Exception as err:  # noqa: BLE001 - malformed tags surface as many types
            self._tif.close()
            raise DataError(f"{self.path}: unreadable TIFF structure ({error_reason(err)})") from None
        self.level_dimensions = [(lv.width, lv.height) for lv in self._levels]
        w0, h0 = self.level_dimensions[0]
        self.level_downsamples = [1.0] + [((w0 / w) + (h0 / h)) / 2.0 for w, h in self.level_dimensions[1:]]

    # -- structure ------------------------------------------------------------------------------

    def _parse_levels(self) -> list[_TiffLevel]:
        tif = self._tif
        if not tif.series:
            raise DataError(f"{self.path}: TIFF holds no image")
        series = tif.series[0]
        levels = []
        for i, level in enumerate(series.levels):
            parsed = self._parse_level(level, i)
            if levels and (parsed.width > levels[-1].width or parsed.height > levels[-1].height):
                log.info("%s: TIFF level %d (%dx%d) is not smaller than the previous one; levels from it on "
                         "are ignored", self.path, i, parsed.width, parsed.height)
                break
            levels.append(parsed)
        return levels

    def _parse_level(self, level, index: int) -> _TiffLevel:
        keyframe = level.keyframe
        pages = [p for p in level.pages if p is not None]
        where = f"{self.path}: level {index}"
        axes = keyframe.axes
        if any(a not in "YXS" for a in axes):
            raise DataError(f"{where}: TIFF page with axes {axes!r}; expected a 2-D image (YX, YXS or SYX)")
        photometric = int(keyframe.photometric)
        jpeg = keyframe.compression in _JPEG_COMPRESSIONS
        if photometric not in _PHOTOMETRIC_SUPPORTED and not (photometric == 6 and jpeg):
            raise DataError(f"{where}: unsupported TIFF photometric interpretation {photometric}; supported: "
                            "RGB, grayscale (MINISBLACK, MINISWHITE), palette, JPEG YCbCr")
        dtype = np.dtype(keyframe.dtype) if keyframe.dtype is not None else None
        if dtype is None or not (dtype in (np.uint8, np.uint16) or dtype.kind == "f"):
            raise DataError(f"{where}: unsupported sample type {keyframe.dtype} ({keyframe.bitspersample}-bit); "
                            "supported: uint8, uint16, float")
        if keyframe.imagedepth > 1:
            raise DataError(f"{where}: volumetric TIFF (depth {keyframe.imagedepth}) is not a slide")
        spp = int(keyframe.samplesperpixel)
        planar = keyframe.planarconfig == 2 and spp > 1
        if keyframe.is_tiled:
            seg_w, seg_h = int(keyframe.tilewidth), int(keyframe.tilelength)
        else:
            seg_w, seg_h = int(keyframe.imagewidth), int(keyframe.rowsperstrip or keyframe.imagelength)
        width, height = int(keyframe.imagewidth), int(keyframe.imagelength)
        across, down = math.ceil(width / seg_w), math.ceil(height / seg_h)
        if planar:
            sources = [_Source(pages[0], keyframe, s * across * down, s, 1) for s in range(spp)]
            samples = spp
        elif spp == 1 and "C" in level.axes and 3 <= len(pages) and level.shape[level.axes.index("C")] in (3, 4):
            # OME-style RGB stored as one grayscale IFD per channel
            n = level.shape[level.axes.index("C")]
            sources = [_Source(p, keyframe, 0, c, 1) for c, p in enumerate(pages[:n])]
            samples = n
        else:
            if len(pages) > 1:
                log.info("%s: TIFF series %r has %d planes per level; reading the first",
                         self.path, level.axes, len(pages))
            sources = [_Source(pages[0], keyframe, 0, 0, spp)]
            samples = spp
        for src in sources:  # load the offset tables now, so reads only touch the file handle
            n_seg = len(src.page.dataoffsets)
            if n_seg < src.segment_offset + across * down:
                raise DataError(f"{where}: TIFF page lists {n_seg} tiles or strips, "
                                f"expected {src.segment_offset + across * down}")
            _ = src.page.databytecounts
        if samples not in (1, 2, 3, 4):
            raise DataError(f"{where}: {samples} samples per pixel; supported: 1 (gray), 2 (gray+alpha), "
                            "3 (RGB), 4 (RGBA)")
        if index == 0:
            orientation = keyframe.tags.get(274)
            if orientation is not None and int(orientation.value) != 1:
                log.warning("%s: TIFF Orientation %d ignored for a tiled/pyramidal slide; coordinates are as "
                            "stored", self.path, int(orientation.value))
            if photometric == 3 or photometric == 0 or samples != 3 or dtype != np.uint8:
                log.info("%s: %s %s image with %d samples converted to RGB uint8 on read", self.path,
                         _PHOTOMETRIC_SUPPORTED.get(photometric, "YCbCr"), dtype, samples)
        direct = samples == 3 and dtype == np.uint8 and photometric in (2, 6)
        return _TiffLevel(width, height, seg_w, seg_h, across, sources, samples, dtype, direct)

    def _read_mpp(self) -> float | None:
        tif = self._tif
        page = tif.pages[0]
        description = page.description or ""
        if description.startswith("Aperio"):
            match = re.search(r"\|\s*MPP\s*=\s*([0-9.eE+-]+)", description)
            if match:
                return plausible_mpp(parse_float(match.group(1)), None, "Aperio MPP", self.path)
        if tif.is_ome and tif.ome_metadata:
            mpp = self._ome_mpp(tif.ome_metadata)
            if mpp is not None:
                return mpp
        return self._resolution_mpp(page)

    def _ome_mpp(self, xml: str) -> float | None:
        import xml.etree.ElementTree as ET

        try:
            root = ET.fromstring(xml)
        except ET.ParseError as err:
            log.warning("%s: unreadable OME-XML (%s); resolution not read from it", self.path, err)
            return None
        pixels = next((el for el in root.iter() if el.tag.rsplit("}", 1)[-1] == "Pixels"), None)
        if pixels is None:
            return None

        def physical(axis: str) -> float | None:
            value = parse_float(pixels.get(f"PhysicalSize{axis}"))
            if value is None:
                return None
            unit = pixels.get(f"PhysicalSize{axis}Unit", "µm")
            if unit not in _OME_UNITS_UM:
                log.warning("%s: OME PhysicalSize%sUnit %r not understood; resolution unknown", self.path, axis, unit)
                return None
            return value * _OME_UNITS_UM[unit]

        return plausible_mpp(physical("X"), physical("Y"), "OME PhysicalSizeX", self.path)

    def _resolution_mpp(self, page) -> float | None:
        """um/px from XResolution/ResolutionUnit (cm or inch); None for unit 'none' or no tag."""
        xres, yres, unit = page.tags.get(282), page.tags.get(283), page.tags.get(296)
        unit_value = int(unit.value) if unit is not None else 2  # TIFF default: inch
        if xres is None or unit_value not in (2, 3):
            return None
        um_per_unit = 25400.0 if unit_value == 2 else 10000.0

        def mpp_of(tag) -> float | None:
            if tag is None:
                return None
            num, den = tag.value if isinstance(tag.value, tuple) else (tag.value, 1)
            return um_per_unit * den / num if num else None

        # 72 dpi (the writers' default) gives 353 um/px: rejected as implausible
        return plausible_mpp(mpp_of(xres), mpp_of(yres), "TIFF XResolution", self.path)

    # -- reading --------------------------------------------------------------------------------

    def read_region(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        check_region(self, level, width, height)
        lv = self._levels[level]
        out = np.full((height, width, 3), BACKGROUND, dtype=np.uint8)
        x0, y0 = max(x, 0), max(y, 0)
        x1, y1 = min(x + width, lv.width), min(y + height, lv.height)
        if x1 <= x0 or y1 <= y0:
            return out
        if lv.direct:  # decode into the (white) output; empty segments stay white
            raw, empty = out[y0 - y:y1 - y, x0 - x:x1 - x], None
        else:
            raw = np.zeros((y1 - y0, x1 - x0, lv.samples), dtype=lv.dtype)
            empty = np.zeros((y1 - y0, x1 - x0), dtype=bool)
        for row in range(y0 // lv.seg_h, (y1 - 1) // lv.seg_h + 1):
            for col in range(x0 // lv.seg_w, (x1 - 1) // lv.seg_w + 1):
                ty, tx = row * lv.seg_h, col * lv.seg_w
                # intersection of the segment with the region, in level coordinates
                sy0, sy1 = max(ty, y0), min(ty + lv.seg_h, y1)
                sx0, sx1 = max(tx, x0), min(tx + lv.seg_w, x1)
                for src in lv.sources:
                    segment = self._decode(src, src.segment_offset + row * lv.across + col,
                                           f"level {level} region (x={x}, y={y}, width={width}, height={height})",
                                           f"at level pixel ({tx}, {ty})")
                    dst = (slice(sy0 - y0, sy1 - y0), slice(sx0 - x0, sx1 - x0))
                    if segment is None:
                        if empty is not None:
                            empty[dst] = True
                        continue
                    part = segment[sy0 - ty:sy1 - ty, sx0 - tx:sx1 - tx]
                    if part.shape[:2] != (sy1 - sy0, sx1 - sx0):
                        raise DataError(
                            f"{self.path}: cannot read level {level} region (x={x}, y={y}, width={width}, "
                            f"height={height}): corrupt tile at level pixel ({tx}, {ty}) decoded to {segment.shape[:2]}")
                    raw[dst[0], dst[1], src.channel:src.channel + src.channels] = part
        if not lv.direct:
            rgb = self._to_rgb(raw, lv)
            if empty.any():
                rgb[empty] = BACKGROUND
            out[y0 - y:y1 - y, x0 - x:x1 - x] = rgb
        return out

    def _decode(self, src: _Source, index: int, region: str, where: str) -> np.ndarray | None:
        """Segment `index` of a source as (rows, cols, channels), or None for an empty segment."""
        offset, count = int(src.page.dataoffsets[index]), int(src.page.databytecounts[index])
        if offset == 0 or count == 0:
            return None
        try:
            with self._lock:
                fh = self._tif.filehandle
                fh.seek(offset)
                data = fh.read(count)
        except OSError as err:
            raise DataError(f"{self.path}: cannot read {region}: {error_reason(err)}") from None
        if len(data) < count:  # the file shrank after open_slide checked it
            raise DataError(f"{self.path}: cannot read {region}: {TRUNCATED}: tile data at bytes {offset}-"
                            f"{offset + count} runs past the end of the file ({os.path.getsize(self.path)} bytes); "
                            "copy the file again")
        try:
            kwargs = {}
            if src.keyframe.compression in _JPEG_COMPRESSIONS:
                kwargs = {"jpegtables": src.page.jpegtables, "jpegheader": getattr(src.keyframe, "jpegheader", None)}
            segment, _, _ = src.keyframe.decode(data, index, **kwargs)
        except Exception as err:  # noqa: BLE001 - codecs raise many types for corrupt data
            raise DataError(f"{self.path}: cannot read {region}: corrupt or unreadable tile {where} "
                            f"({error_reason(err)})") from None
        if segment is None:
            return None
        return segment.reshape(segment.shape[-3:])  # (depth 1, rows, cols, samples) -> (rows, cols, samples)

    def _to_rgb(self, raw: np.ndarray, lv: _TiffLevel) -> np.ndarray:
        keyframe = lv.sources[0].keyframe
        photometric = int(keyframe.photometric)
        if photometric == 3:  # palette: colormap (3, 2**bits) uint16
            cmap = np.asarray(keyframe.colormap)
            cmap8 = np.round(cmap.astype(np.float32) / 257.0).astype(np.uint8) if cmap.max() > 255 else cmap
            return np.ascontiguousarray(np.moveaxis(cmap8[:, raw[..., 0]], 0, -1).astype(np.uint8))
        if raw.dtype == np.uint16:
            data = np.round(raw.astype(np.float32) / 257.0).astype(np.uint8)
        elif raw.dtype.kind == "f":
            data = np.round(np.clip(np.nan_to_num(raw.astype(np.float32)), 0.0, 1.0) * 255.0).astype(np.uint8)
        else:
            data = raw
        if photometric == 0:  # MINISWHITE
            data = 255 - data
        if lv.samples in (1, 2):
            gray = np.repeat(data[..., :1], 3, axis=-1)
            return rgba_to_rgb(np.concatenate([gray, data[..., 1:2]], axis=-1)) if lv.samples == 2 else gray
        if lv.samples == 4:
            return rgba_to_rgb(data)
        return np.ascontiguousarray(data)

    def close(self) -> None:
        self._tif.close()

    def __repr__(self) -> str:
        return f"TiffSlide({str(self.path)!r}, levels={self.level_dimensions})"

