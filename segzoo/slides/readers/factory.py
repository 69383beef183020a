"""Opening a whole-slide image or plain image as a `Slide` with the backend that reads it, and
telling whole slides (the chunked path) from plain images.

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
  read whole with `segzoo.io.images.read_image` into an `ArraySlide`.

The backends are segzoo.slides.readers.openslide, .tiff and .array. Coordinates are each
level's own pixels (see segzoo.slides.readers.base); regions outside a level are white. Microns per pixel (`Slide.mpp`, level 0) come from the metadata: OpenSlide's
openslide.mpp-x, the Aperio description's `MPP = `, OME-XML PhysicalSizeX (unit converted to um),
or the TIFF XResolution/ResolutionUnit (cm or inch); `open_slide(..., mpp=)` overrides them.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from segzoo.errors import DataError, UsageError
from segzoo.slides.readers.array import ArraySlide
from segzoo.slides.readers.base import Slide
from segzoo.slides.readers.openslide import OpenSlideSlide, import_openslide, openslide_format
from segzoo.slides.readers.resolution import check_mpp
from segzoo.slides.readers.tiff import TiffSlide

log = logging.getLogger(__name__)

OPENSLIDE_SUFFIXES = (".svs", ".ndpi", ".mrxs", ".scn", ".svslide", ".bif", ".vms", ".vmu")
TIFF_SUFFIXES = (".tif", ".tiff")
PLAIN_SUFFIXES = (".png", ".jpg", ".jpeg")
SLIDE_SUFFIXES = OPENSLIDE_SUFFIXES + TIFF_SUFFIXES + PLAIN_SUFFIXES
# vendor formats stored as TIFF, which tifffile reads when OpenSlide is missing or fails
TIFF_BASED_SUFFIXES = (".svs", ".ndpi", ".scn", ".bif") + TIFF_SUFFIXES
BACKENDS = ("openslide", "tifffile")
PLAIN_TIFF_MAX_SIDE = 20000   # an untiled single-level TIFF up to this size is read whole


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
        mpp = check_mpp(mpp, str(path))
    if backend is not None and backend not in BACKENDS:
        raise UsageError(f"{path}: unknown slide backend {backend!r}; valid: {', '.join(BACKENDS)} (or None: by file)",
                         argument="backend")
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


def is_whole_slide(path: str | os.PathLike) -> bool:
    """Whether `path` is a whole-slide file for the chunked slide path: a vendor slide suffix
    (.svs .ndpi ...), or a TIFF that is pyramidal, tiled, larger than PLAIN_TIFF_MAX_SIDE or a
    vendor format OpenSlide recognises. PNG/JPEG and small single-level untiled TIFFs (an image
    that fits in memory) are not: they keep the single-image path. An unreadable TIFF is not
    either, so the single-image path reports it."""
    path = Path(path)
    suffix = _suffix(path)
    if suffix in OPENSLIDE_SUFFIXES:
        return True
    if suffix not in TIFF_SUFFIXES or not path.is_file():
        return False
    fmt = openslide_format(path)
    if fmt is not None and fmt != "generic-tiff":
        return True
    try:
        return not _plain_tiff(path)[0]
    except DataError:
        return False


def _array_slide(path: Path, mpp: float | None) -> ArraySlide:
    from segzoo.io.images import read_image

    return ArraySlide(read_image(path), mpp=mpp, path=path)


def _open_vendor(path: Path, suffix: str) -> Slide:
    tried = []
    if import_openslide() is not None:
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
