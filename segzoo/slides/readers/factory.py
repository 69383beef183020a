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
import struct
from pathlib import Path

import numpy as np

from segzoo.errors import DataError, UsageError
from segzoo.slides.readers.array import ArraySlide
from segzoo.slides.readers.base import Slide
from segzoo.slides.readers.openslide import OpenSlideSlide, import_openslide, openslide_format
from segzoo.slides.readers.resolution import check_mpp
from segzoo.slides.readers.tiff import TRUNCATED, TiffSlide, error_reason

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
        raise DataError(f"{path}: cannot read TIFF ({error_reason(err)})") from None
    with TiffSlide(path) as slide:  # the same metadata rules as for pyramids
        return True, slide.mpp


def _suffix(path: Path) -> str:
    return path.suffix.lower()


_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4, 16: 8, 17: 8, 18: 8}
_INT_TYPES = {3: "u2", 4: "u4", 13: "u4", 16: "u8", 18: "u8"}
_TABLE_TAGS = (273, 279, 324, 325, 330)  # strip/tile offsets and byte counts, SubIFDs
_TAG_NAMES = {270: "description", 273: "strip offsets", 279: "strip byte counts", 320: "colour map",
              324: "tile offsets", 325: "tile byte counts", 330: "SubIFD offsets", 347: "JPEG tables"}
_TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def tiff_truncation(path: str | os.PathLike) -> tuple[int | None, str, str] | None:
    """Where a TIFF file stops short: (the page's directory offset or None, the page's name, what
    lies past the end), e.g. (161280, 'TIFF page 2', 'tile data at bytes 161632-162000 runs past the
    end of the file (150000 bytes)'). None when every directory (IFD, SubIFD), standard tag value,
    tile and strip lies within the file, or it is not a TIFF. Reads only the directories and the
    offset tables (a few MB for the largest slides)."""
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        head = fh.read(16)
        if not any(magic.startswith(head[:4]) for magic in _TIFF_MAGICS):
            return None
        big = head[2:4] in (b"+\x00", b"\x00+")
        if len(head) < (16 if big else 8):
            return None, "the TIFF header", f"ends at byte {size}" if size else "is missing: the file is empty"
        order = "<" if head[:2] == b"II" else ">"
        off, cnt, entry, inline, cntsize = ("Q", "Q", 20, 8, 8) if big else ("I", "H", 12, 4, 2)
        past = f"the end of the file ({size} bytes)"
        seen: set[int] = set()

        def chain(offset: int, name) -> tuple[int | None, str, str] | None:
            i = 0
            while offset and offset not in seen and len(seen) < 100000:
                seen.add(offset)
                page = name(i)
                fh.seek(offset)
                raw = fh.read(cntsize)
                n = struct.unpack(order + cnt, raw)[0] if len(raw) == cntsize else size
                if offset + cntsize + n * entry + inline > size:
                    return offset, page, f"directory at byte {offset} runs past {past}"
                block = fh.read(n * entry + inline)
                tables: dict[int, np.ndarray] = {}
                for k in range(n):
                    tag, typ, count = struct.unpack(order + "HH" + off, block[k * entry:k * entry + 4 + inline])
                    field = block[k * entry + 4 + inline:(k + 1) * entry]
                    nbytes = count * _TYPE_SIZES.get(typ, 0) if tag < 32768 else 0  # private tags: not ours
                    if nbytes > inline:
                        at = struct.unpack(order + off, field)[0]
                        if at + nbytes > size:
                            what = f"{_TAG_NAMES.get(tag, 'values')} (tag {tag})"
                            return offset, page, f"{what} at byte {at} run past {past}"
                        if tag in _TABLE_TAGS:
                            fh.seek(at)
                            field = fh.read(nbytes)
                    if tag in _TABLE_TAGS and typ in _INT_TYPES:
                        tables[tag] = np.frombuffer(field[:nbytes], dtype=order + _INT_TYPES[typ]).astype(np.uint64)
                kind = "tile" if 324 in tables else "strip"
                starts, counts = tables.get(324, tables.get(273)), tables.get(325, tables.get(279))
                if starts is not None and counts is not None:
                    m = min(len(starts), len(counts))
                    ends = starts[:m] + counts[:m]
                    bad = (starts[:m] > 0) & (counts[:m] > 0) & (ends > size)
                    if bad.any():
                        first = int(np.argmin(np.where(bad, starts[:m], np.iinfo(np.uint64).max)))
                        return offset, page, f"{kind} data at bytes {starts[first]}-{ends[first]} runs past {past}"
                for j, sub in enumerate(tables.get(330, ())):
                    found = chain(int(sub), lambda k, j=j, page=page: f"{page} SubIFD {j + k}")
                    if found:
                        return found
                offset, i = struct.unpack(order + off, block[n * entry:])[0], i + 1
                if offset >= size:
                    return None, name(i), f"directory at byte {offset} lies past {past}"
            return None

        return chain(struct.unpack(order + off, head[8:16] if big else head[4:8])[0], lambda i: f"TIFF page {i}")


def check_complete(path: str | os.PathLike) -> None:
    """DataError when the TIFF at `path` stops short (an interrupted copy or download; see
    `tiff_truncation`): one line naming the file, the level (when tifffile can tell which page it
    is) or TIFF page, and the byte offset. Nothing for an intact TIFF or another kind of file, and
    an NDPI over 4 GB is not checked (its offsets past 4 GB do not fit the TIFF fields)."""
    path = Path(path)
    if _suffix(path) == ".ndpi" and path.stat().st_size >= 2**32:
        return
    try:
        found = tiff_truncation(path)
    except OSError as err:
        raise DataError(f"{path}: cannot read the file ({err.strerror or err})") from None
    if found is None:
        return
    ifd, page, what = found
    level = _level_of_page(path, ifd) if ifd is not None else None
    name = page if level is None else f"level {level} ({page})"
    raise DataError(f"{path}: {TRUNCATED}: {name} {what}; copy the file again")


def _level_of_page(path: Path, ifd: int) -> int | None:
    """The series-0 level whose page has its directory at byte `ifd`, as tifffile reads a file that
    stops short (its complaints about the missing pages are silenced), or None."""
    import tifffile

    tifffile_log = logging.getLogger("tifffile")
    mute = lambda record: False
    tifffile_log.addFilter(mute)
    try:
        with tifffile.TiffFile(path) as tif:
            for i, level in enumerate(tif.series[0].levels if tif.series else ()):
                if any(p is not None and p.offset == ifd for p in level.pages):
                    return i
    except Exception:  # noqa: BLE001 - the file is already known to be broken; the page's name is enough
        return None
    finally:
        tifffile_log.removeFilter(mute)
    return None


def open_slide(path: str | os.PathLike, *, mpp: float | None = None, backend: str | None = None) -> Slide:
    """Open a whole-slide image or plain image as a `Slide` (see the module docstring for formats).

    `mpp` (microns per level-0 pixel) overrides the file's resolution; it is logged at INFO when it
    replaces a value from the metadata. `backend` forces 'openslide' or 'tifffile' (None: by file).
    Raises DataError for a missing file, an unsupported type (listing the valid suffixes), a file
    no backend can open (naming what was tried), or a TIFF-based file cut short (`check_complete`).
    A file cut short fails here, before any backend opens it, even when only its last levels (or
    its label image) are lost: the message names the first level or TIFF page whose directory or
    data lies past the end, and the byte offset. Bad bytes inside an intact-length file (a corrupt
    tile) do not: reading a region that touches one raises DataError, and the rest still reads.
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
    if suffix not in PLAIN_SUFFIXES:
        check_complete(path)

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
    either, so the single-image path reports it; a TIFF cut short is (open_slide says so)."""
    path = Path(path)
    suffix = _suffix(path)
    if suffix in OPENSLIDE_SUFFIXES:
        return True
    if suffix not in TIFF_SUFFIXES or not path.is_file():
        return False
    try:
        check_complete(path)
    except DataError:
        return True
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
