"""Opening whole-slide images as `Slide`s, choosing the pyramid level for a model's resolution,
and reading regions resampled to it.

Backends (`open_slide` picks one from the file; `backend=` forces it):

- OpenSlide (extra `segzoo[slides]`: openslide-python + the openslide-bin wheel, no system
  library): .svs .ndpi .mrxs .scn .svslide .bif .vms .vmu, and a .tif/.tiff that OpenSlide
  recognises as a vendor format (Aperio, Philips, Ventana, ...).
- tifffile (base install): pyramidal / tiled / BigTIFF / OME-TIFF and large stripped TIFFs.
  Only the tiles (or strips) a region touches are read and decoded, so a level is never loaded
  whole. It also reads the TIFF-based vendor files (.svs .ndpi .scn .bif) when OpenSlide is not
  installed or cannot open them. A generic tiled TIFF goes here even when OpenSlide is installed:
  OpenSlide's generic-tiff driver ignores SubIFD pyramids (OME-TIFF) and OME physical sizes.
- Plain images (.png .jpg .jpeg, and a TIFF of one untiled level at most 20000 px a side) are
  read whole with `segzoo.imageio.read_image` into an `ArraySlide`.

Coordinates are each level's own pixels (see `segzoo.slides.base`); regions outside a level
are white. Microns per pixel (`Slide.mpp`, level 0) come from the metadata: OpenSlide's
openslide.mpp-x, the Aperio description's `MPP = `, OME-XML PhysicalSizeX (unit converted to um),
or the TIFF XResolution/ResolutionUnit (cm or inch); `open_slide(..., mpp=)` overrides them.
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
from segzoo.slides.base import BACKGROUND, ArraySlide, Slide

log = logging.getLogger(__name__)

OPENSLIDE_SUFFIXES = (".svs", ".ndpi", ".mrxs", ".scn", ".svslide", ".bif", ".vms", ".vmu")
TIFF_SUFFIXES = (".tif", ".tiff")
PLAIN_SUFFIXES = (".png", ".jpg", ".jpeg")
SLIDE_SUFFIXES = OPENSLIDE_SUFFIXES + TIFF_SUFFIXES + PLAIN_SUFFIXES
# vendor formats stored as TIFF, which tifffile reads when OpenSlide is missing or fails
TIFF_BASED_SUFFIXES = (".svs", ".ndpi", ".scn", ".bif") + TIFF_SUFFIXES
BACKENDS = ("openslide", "tifffile")
PLAIN_TIFF_MAX_SIDE = 20000   # an untiled single-level TIFF up to this size is read whole
LEVEL_TOLERANCE = 1.1         # best_level accepts a level up to 10% coarser than the target
SCALE_SNAP = 0.02             # working_scale: within 2% of 1 the level is read without resampling
MPP_RANGE = (0.01, 100.0)     # plausible microns per pixel; outside it the metadata is ignored


def _check_mpp(mpp: float, what: str) -> float:
    try:
        value = float(mpp)
    except (TypeError, ValueError):
        raise DataError(f"{what}: mpp must be a number of microns per pixel, got {mpp!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise DataError(f"{what}: mpp must be a positive number of microns per pixel, got {mpp!r}")
    return value


def _plausible_mpp(mpp_x: float | None, mpp_y: float | None, source: str, path: Path) -> float | None:
    """mpp_x if it is a plausible resolution (warning when mpp_y differs by more than 1%), else None."""
    if mpp_x is None or not math.isfinite(mpp_x) or mpp_x <= 0:
        return None
    if not MPP_RANGE[0] <= mpp_x <= MPP_RANGE[1]:
        log.info("%s: %s gives %.4g um/px, outside %g-%g; resolution treated as unknown",
                 path, source, mpp_x, *MPP_RANGE)
        return None
    if mpp_y is not None and math.isfinite(mpp_y) and mpp_y > 0 and abs(mpp_y - mpp_x) > 0.01 * mpp_x:
        log.warning("%s: %s gives non-square pixels (x %.4f, y %.4f um/px); using x", path, source, mpp_x, mpp_y)
    return mpp_x


def _rgba_to_rgb(rgba: np.ndarray) -> np.ndarray:
    """HxWx4 unassociated RGBA -> HxWx3 uint8 composited over white (alpha 0 -> white glass)."""
    rgb, alpha = rgba[..., :3], rgba[..., 3:4]
    if alpha.min() == 255:
        return np.ascontiguousarray(rgb)
    a = alpha.astype(np.float32) / 255.0
    out = rgb.astype(np.float32) * a + BACKGROUND * (1.0 - a)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def _check_region(slide: Slide, level: int, width: int, height: int) -> None:
    n = len(slide.level_dimensions)
    if not isinstance(level, (int, np.integer)) or not 0 <= level < n:
        raise ValueError(f"{slide.path}: level must be an integer in 0..{n - 1}, got {level!r}")
    if width < 0 or height < 0:
        raise ValueError(f"region size must be non-negative, got width={width}, height={height}")


# ---------------------------------------------------------------------------------------------
# OpenSlide backend


def _import_openslide():
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
    openslide = _import_openslide()
    if openslide is None:
        return None
    try:
        return openslide.OpenSlide.detect_format(str(path))
    except Exception:  # noqa: BLE001 - detect_format raises on unreadable files in some versions
        return None


class OpenSlideSlide:
    """A slide read through OpenSlide (thread-safe reads).

    OpenSlide's read_region takes its top-left in level-0 pixels; this class converts from the
    level's own coordinates (x * downsample). Pixels outside the scanned area (alpha 0) are white.
    After a read error OpenSlide's handle stays in an error state, so it is reopened and the
    error is raised as DataError naming the region; later reads work again.
    """

    def __init__(self, path: str | os.PathLike):
        openslide = _import_openslide()
        if openslide is None:
            raise DataError(f"{path}: OpenSlide is not installed; install it with: pip install 'segzoo[slides]'")
        self.path = Path(path)
        self._openslide = openslide
        self._lock = threading.Lock()
        try:
            self._handle = openslide.OpenSlide(str(self.path))
        except Exception as err:  # noqa: BLE001 - OpenSlideUnsupportedFormatError, OpenSlideError, OSError
            raise DataError(f"{self.path}: OpenSlide cannot open it ({type(err).__name__}: {err})") from None
        h = self._handle
        self.vendor: str | None = h.properties.get("openslide.vendor")
        self.level_dimensions = [(int(w), int(hh)) for w, hh in h.level_dimensions]
        self.level_downsamples = [float(d) for d in h.level_downsamples]
        self.mpp = _plausible_mpp(_float(h.properties.get("openslide.mpp-x")),
                                  _float(h.properties.get("openslide.mpp-y")), "openslide.mpp-x", self.path)

    def read_region(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        _check_region(self, level, width, height)
        if width == 0 or height == 0:
            return np.full((height, width, 3), BACKGROUND, dtype=np.uint8)
        ds = self.level_downsamples[level]
        location = (round(x * ds), round(y * ds))
        handle = self._handle
        try:
            image = handle.read_region(location, int(level), (int(width), int(height)))
        except self._openslide.OpenSlideError as err:
            self._reopen(handle)
            raise DataError(f"{self.path}: cannot read level {level} region (x={x}, y={y}, width={width}, "
                            f"height={height}): {err}") from None
        return _rgba_to_rgb(np.asarray(image))

    def _reopen(self, failed) -> None:
        with self._lock:
            if self._handle is not failed:  # another thread already reopened it
                return
            try:
                failed.close()
            except Exception as err:  # noqa: BLE001 - a handle in error state may fail to close
                log.debug("%s: closing the failed OpenSlide handle: %s", self.path, err)
            self._handle = self._openslide.OpenSlide(str(self.path))

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> OpenSlideSlide:  # noqa: PYI034
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"OpenSlideSlide({str(self.path)!r}, vendor={self.vendor!r}, levels={self.level_dimensions})"


def _float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


# ---------------------------------------------------------------------------------------------
# tifffile backend

_OME_UNITS_UM = {"pm": 1e-6, "nm": 1e-3, "µm": 1.0, "um": 1.0, "micron": 1.0, "mm": 1e3, "cm": 1e4,
                 "m": 1e6, "Å": 1e-4, "A": 1e-4, "in": 25400.0, "inch": 25400.0}
_PHOTOMETRIC_SUPPORTED = {0: "MINISWHITE", 1: "MINISBLACK", 2: "RGB", 3: "PALETTE"}
_JPEG_COMPRESSIONS = {6, 7, 34892, 33007}


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


class TiffSlide:
    """A (pyramidal) TIFF read through tifffile, decoding only the tiles or strips a region touches.

    Levels are `TiffFile.series[0].levels` (SVS, OME SubIFDs, NDPI, generic multi-page pyramids).
    Grayscale is replicated to RGB, palette images are expanded, MINISWHITE is inverted, uint16
    is scaled by 1/257, float in [0, 1] by 255, an alpha channel is composited over white, and
    missing (empty) tiles are white. A tile that fails to decode raises DataError naming the level
    and the region; other regions still read. Reads are thread-safe (file access is locked).
    """

    def __init__(self, path: str | os.PathLike):
        import tifffile

        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            self._tif = tifffile.TiffFile(self.path)
        except Exception as err:  # noqa: BLE001 - tifffile raises many types for non-TIFF or broken files
            raise DataError(f"{self.path}: tifffile cannot open it ({type(err).__name__}: {err})") from None
        try:
            self._levels = self._parse_levels()
            self.mpp = self._read_mpp()
        except DataError:
            self._tif.close()
            raise
        except Exception as err:  # noqa: BLE001 - malformed tags surface as many types
            self._tif.close()
            raise DataError(f"{self.path}: unreadable TIFF structure ({type(err).__name__}: {err})") from None
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
                return _plausible_mpp(_float(match.group(1)), None, "Aperio MPP", self.path)
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
            value = _float(pixels.get(f"PhysicalSize{axis}"))
            if value is None:
                return None
            unit = pixels.get(f"PhysicalSize{axis}Unit", "µm")
            if unit not in _OME_UNITS_UM:
                log.warning("%s: OME PhysicalSize%sUnit %r not understood; resolution unknown", self.path, axis, unit)
                return None
            return value * _OME_UNITS_UM[unit]

        return _plausible_mpp(physical("X"), physical("Y"), "OME PhysicalSizeX", self.path)

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
        return _plausible_mpp(mpp_of(xres), mpp_of(yres), "TIFF XResolution", self.path)

    # -- reading --------------------------------------------------------------------------------

    def read_region(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        _check_region(self, level, width, height)
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
            kwargs = {}
            if src.keyframe.compression in _JPEG_COMPRESSIONS:
                kwargs = {"jpegtables": src.page.jpegtables, "jpegheader": getattr(src.keyframe, "jpegheader", None)}
            segment, _, _ = src.keyframe.decode(data, index, **kwargs)
        except Exception as err:  # noqa: BLE001 - codecs raise many types for corrupt data
            raise DataError(f"{self.path}: cannot read {region}: corrupt or unreadable tile {where} "
                            f"({type(err).__name__}: {err})") from None
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
            return _rgba_to_rgb(np.concatenate([gray, data[..., 1:2]], axis=-1)) if lv.samples == 2 else gray
        if lv.samples == 4:
            return _rgba_to_rgb(data)
        return np.ascontiguousarray(data)

    def close(self) -> None:
        self._tif.close()

    def __enter__(self) -> TiffSlide:  # noqa: PYI034
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"TiffSlide({str(self.path)!r}, levels={self.level_dimensions})"


def _plain_tiff(path: Path) -> tuple[bool, float | None]:
    """(whether the TIFF is a plain image to read whole, its mpp from the resolution tags)."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            series = tif.series[0] if tif.series else None
            single = series is None or len(series.levels) == 1
            small = page.imagewidth <= PLAIN_TIFF_MAX_SIDE and page.imagelength <= PLAIN_TIFF_MAX_SIDE
            plain = single and small and not page.is_tiled
            if not plain:
                return False, None
    except Exception as err:  # noqa: BLE001 - tifffile raises many types for broken files
        raise DataError(f"{path}: cannot read TIFF ({type(err).__name__}: {err})") from None
    with TiffSlide(path) as slide:  # the same metadata rules as for pyramids
        return True, slide.mpp


# ---------------------------------------------------------------------------------------------
# opening


def _suffix(path: Path) -> str:
    return path.suffix.lower()


def open_slide(path: str | os.PathLike, *, mpp: float | None = None, backend: str | None = None) -> Slide:
    """Open a whole-slide image or plain image as a `Slide` (see the module docstring for formats).

    `mpp` (microns per level-0 pixel) overrides the file's resolution; it is logged at INFO when it
    replaces a value from the metadata. `backend` forces 'openslide' or 'tifffile' (None: by file).
    Raises DataError for a missing file, an unsupported type (listing the valid suffixes) or a file
    no backend can open (naming what was tried).
    """
    path = Path(path)
    if mpp is not None:
        mpp = _check_mpp(mpp, str(path))
    if backend is not None and backend not in BACKENDS:
        raise DataError(f"{path}: unknown slide backend {backend!r}; valid: {', '.join(BACKENDS)} (or None: by file)")
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    suffix = _suffix(path)
    if suffix not in SLIDE_SUFFIXES:
        raise DataError(f"{path}: unsupported slide type {suffix!r}; supported: {', '.join(SLIDE_SUFFIXES)}")

    slide: Slide
    if backend == "openslide":
        slide = OpenSlideSlide(path)
    elif backend == "tifffile":
        if suffix not in TIFF_BASED_SUFFIXES:
            raise DataError(f"{path}: the tifffile backend reads TIFF-based files ({', '.join(TIFF_BASED_SUFFIXES)}), "
                            f"not {suffix!r}")
        slide = TiffSlide(path)
    elif suffix in PLAIN_SUFFIXES:
        slide = _array_slide(path, None)
    elif suffix in TIFF_SUFFIXES:
        fmt = openslide_format(path)
        if fmt is not None and fmt != "generic-tiff":
            slide = OpenSlideSlide(path)
        else:
            plain, tiff_mpp = _plain_tiff(path)
            slide = _array_slide(path, tiff_mpp) if plain else TiffSlide(path)
    else:
        slide = _open_vendor(path, suffix)

    if mpp is not None:
        if slide.mpp is not None and abs(slide.mpp - mpp) > 1e-9:
            log.info("%s: mpp %.4f um/px given overrides the file's %.4f um/px", path, mpp, slide.mpp)
        slide.mpp = mpp
    log.debug("%s: opened %r, mpp %s", path, slide, slide.mpp)
    return slide


def _array_slide(path: Path, mpp: float | None) -> ArraySlide:
    from segzoo.io.images import read_image

    return ArraySlide(read_image(path), mpp=mpp, path=path)


def _open_vendor(path: Path, suffix: str) -> Slide:
    tried = []
    if _import_openslide() is not None:
        try:
            return OpenSlideSlide(path)
        except DataError as err:
            tried.append(f"OpenSlide: {str(err).removeprefix(f'{path}: ')}")
    else:
        tried.append("OpenSlide: not installed (pip install 'segzoo[slides]')")
    if suffix in TIFF_BASED_SUFFIXES:
        try:
            slide = TiffSlide(path)
        except DataError as err:
            tried.append(f"tifffile: {str(err).removeprefix(f'{path}: ')}")
        else:
            log.info("%s: read through tifffile (%s)", path, tried[-1])
            return slide
    raise DataError(f"{path}: cannot open slide; tried " + "; ".join(tried))


# ---------------------------------------------------------------------------------------------
# resolution


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
    target_mpp = _check_mpp(target_mpp, "target resolution")
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
