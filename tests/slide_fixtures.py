"""Test helpers that build small whole-slide files: H&E-like images and Aperio-style pyramidal TIFFs.

Import them as `from slide_fixtures import ...` (tests/ is on sys.path under pytest, as for conftest).

`write_aperio_tiff` writes the layout of an Aperio .svs, which OpenSlide opens as the 'aperio'
vendor (openslide.mpp-x from the description's MPP) and tifffile reads as an 'svs' series:
page 0 = level 0 (tiled, ImageDescription 'Aperio Image Library ...|AppMag = 40|MPP = 0.2500'),
page 1 = thumbnail (stripped), pages 2.. = levels downsampled 2x, 4x, ... (tiled). Level k has
dimensions (width >> k, height >> k) and is `downsample2` applied k times to the image.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from segzoo.errors import SegzooError
from segzoo.slides.readers.pyramid_writer import downsample, pyramid, write_aperio_tiff  # noqa: F401 (re-exported for tests)

PINK = (232, 168, 206)        # eosin-stained cytoplasm / stroma
PURPLE = (86, 52, 140)        # haematoxylin-stained nuclei
WHITE = 255


def downsample2(image: np.ndarray) -> np.ndarray:
    """Halve an HxWx3 uint8 image by averaging 2x2 blocks (segzoo.slides.readers.pyramid_writer.downsample)."""
    return downsample(image, 2)


def tissue_region(height: int, width: int, tissue_fraction: float = 0.5) -> np.ndarray:
    """Bool HxW: True on the tissue, the left `tissue_fraction` of the columns with a gently wavy edge."""
    rows = np.arange(height)
    edge = tissue_fraction * width + 0.03 * width * np.sin(2 * np.pi * rows / max(height, 1) * 1.5)
    if tissue_fraction <= 0:
        edge = np.full(height, -1.0)
    elif tissue_fraction >= 1:
        edge = np.full(height, width + 1.0)
    return np.arange(width)[None, :] < edge[:, None]


def synthetic_he(height: int, width: int, seed: int = 0, tissue_fraction: float = 0.5,
                 nuclei_per_mpx: float = 700.0) -> np.ndarray:
    """An H&E-like HxWx3 uint8 image at about 0.25 um/px (40x).

    Tissue (`tissue_region`: the left `tissue_fraction` of the image) is pink with dark purple
    round nuclei of radius 4-8 px (about `nuclei_per_mpx` per million tissue pixels, as in MoNuSeg),
    plus mild per-pixel noise; outside the tissue the image is white glass (255, with noise <= 3).
    Cost is O(pixels) numpy plus a short Python loop per nucleus.
    """
    rng = np.random.default_rng(seed)
    tissue = tissue_region(height, width, tissue_fraction)
    image = np.empty((height, width, 3), dtype=np.uint8)
    pink = np.array(PINK, dtype=np.uint8) - 12
    band = 1024  # noise in row bands bounds the temporaries
    for r0 in range(0, height, band):
        rows = slice(r0, min(r0 + band, height))
        noise = rng.integers(0, 25, size=image[rows].shape, dtype=np.uint8)
        image[rows] = np.where(tissue[rows, :, None], pink + noise, WHITE - (noise >> 3))  # glass 252-255
    n = round(float(nuclei_per_mpx * tissue.sum()) / 1e6)
    if n == 0:
        return image
    # draw candidate centres uniformly, keep those on tissue
    cy = rng.uniform(0, height, size=2 * n + 16)
    cx = rng.uniform(0, width, size=2 * n + 16)
    keep = tissue[cy.astype(int).clip(0, height - 1), cx.astype(int).clip(0, width - 1)]
    cy, cx = cy[keep][:n], cx[keep][:n]
    radii = rng.uniform(4.0, 8.0, size=len(cy))
    shades = rng.integers(-15, 16, size=(len(cy), 3))
    for y, x, r, shade in zip(cy, cx, radii, shades):
        y0, y1 = max(int(y - r), 0), min(int(y + r) + 2, height)
        x0, x1 = max(int(x - r), 0), min(int(x + r) + 2, width)
        yy, xx = np.ogrid[y0:y1, x0:x1]
        disc = (yy + 0.5 - y) ** 2 + (xx + 0.5 - x) ** 2 < r * r
        colour = np.clip(np.array(PURPLE) + shade, 0, 255).astype(np.uint8)
        image[y0:y1, x0:x1][disc] = colour
    return image


def write_ome_tiff(path: str | Path, image: np.ndarray, mpp: float | None = 0.25, levels: int = 3,
                   tile: int = 256, unit: str = "µm") -> Path:
    """Write `image` as a pyramidal OME-TIFF (levels in SubIFDs), PhysicalSizeX/Y = `mpp` in `unit`."""
    import tifffile

    path = Path(path)
    levels_ = pyramid(image, levels)
    metadata: dict = {"axes": "YXS"}
    if mpp is not None:
        metadata.update(PhysicalSizeX=mpp, PhysicalSizeXUnit=unit, PhysicalSizeY=mpp, PhysicalSizeYUnit=unit)
    with tifffile.TiffWriter(path, ome=True) as tif:
        tif.write(levels_[0], subifds=levels - 1, tile=(tile, tile), photometric="rgb", metadata=metadata)
        for level in levels_[1:]:
            tif.write(level, subfiletype=1, tile=(tile, tile), photometric="rgb")
    return path


def tile_span(path: str | Path, page: int, tile_index: int) -> tuple[int, int]:
    """(offset, bytecount) in the file of tile `tile_index` of TIFF page `page` (for corrupting it)."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        p = tif.pages[page]
        return int(p.dataoffsets[tile_index]), int(p.databytecounts[tile_index])


def corrupt_tile(path: str | Path, page: int, tile_index: int) -> tuple[int, int]:
    """Overwrite the start of one tile's data with zeros (a JPEG tile then fails to decode).

    Returns the tile's (offset, bytecount)."""
    offset, count = tile_span(path, page, tile_index)
    with open(path, "r+b") as fh:
        fh.seek(offset)
        fh.write(b"\x00" * min(count, 64))
    return offset, count


def predict_one_slide(predictor, slide, out, *, name: str | None = None, on_chunk=None, **options):
    """segzoo.predict_slides for one slide (a path or an open Slide, with output stem `name`), no
    summary table: its SlideSummary, or the error of a slide that got no outputs raised as a
    SegzooError (so tests can match its message). options: SlideOptions fields."""
    from segzoo import predict_slides
    from segzoo.slides.options import SlideOptions
    from segzoo.slides.run.orchestrator import SlideInput

    [summary] = predict_slides(predictor, [SlideInput(slide, name)], out,
                               options=SlideOptions(summary=False, **options), on_chunk=on_chunk)
    if summary.status == "error":
        raise SegzooError(summary.error)
    return summary
