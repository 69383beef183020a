"""Writing an image as an Aperio-style pyramidal TIFF that OpenSlide and tifffile open as a slide.

Used to build test and benchmark slides, and by users turning a large image (a stitched
scan, a synthetic mosaic) into a slide QuPath, OpenSlide and segzoo read with its resolution.
The layout is that of an Aperio .svs: page 0 is level 0 (tiled, ImageDescription
'Aperio Image Library ... |AppMag = 40|MPP = 0.2500'), page 1 a stripped thumbnail, pages 2..
the coarser levels (tiled). Level k is level 0 downsampled by `step`**k with `downsample`
(block means: pixel (r, c) of a level covers pixels [s*r, s*r+s) x [s*c, s*c+s) of the one
before, so the levels' pixel-corner grids line up).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def downsample(image: np.ndarray, step: int = 2) -> np.ndarray:
    """Shrink an HxWx3 uint8 image `step` times by averaging step x step blocks (rounded);
    the last rows/columns that do not fill a block are dropped."""
    h, w = image.shape[0] // step * step, image.shape[1] // step * step
    blocks = image[:h, :w].reshape(h // step, step, w // step, step, -1).astype(np.uint32)
    return ((blocks.sum(axis=(1, 3)) + step * step // 2) // (step * step)).astype(np.uint8)


def pyramid(image: np.ndarray, levels: int, step: int = 2) -> list[np.ndarray]:
    """[image, image/step, image/step**2, ...] (`levels` entries) built with `downsample`."""
    out = [np.ascontiguousarray(image)]
    for _ in range(levels - 1):
        out.append(downsample(out[-1], step))
    return out


def aperio_description(width: int, height: int, tile: int, mpp: float | None, compression: str | None,
                       extra: str = "") -> str:
    """An Aperio ImageDescription: 'Aperio Image Library ...' header, then '|key = value' fields.

    width, height: level-0 size in pixels.
    tile: tile side in pixels.
    mpp: microns per level-0 pixel (AppMag and MPP fields when known).
    compression: 'jpeg' or None (the codec named in the header).
    extra: '|key = value' fields appended."""
    codec = "JPEG/RGB Q=90" if compression == "jpeg" else "RAW/RGB"
    text = f"Aperio Image Library v12.0.15 \r\n{width}x{height} [0,0 {width}x{height}] ({tile}x{tile}) {codec}"
    if mpp is not None:
        text += f"|AppMag = {round(10.0 / mpp)}|MPP = {mpp:.4f}"
    text += "|ScanScope ID = SEGZOO|Filename = synthetic"
    if extra:
        text += extra if extra.startswith("|") else "|" + extra
    return text


def write_aperio_tiff(path: str | os.PathLike, image: np.ndarray, mpp: float | None = 0.25, levels: int = 3,
                      tile: int = 256, compression: str | None = "jpeg", description_extra: str = "",
                      quality: int = 90, step: int = 2) -> Path:
    """Write `image` as an Aperio-style pyramidal tiled TIFF; returns the path.

    path: the file to write (under a temporary name first, then renamed: a crash never leaves a
        partial slide).
    image: HxWx3 uint8, level 0.
    mpp: microns per level-0 pixel; None leaves MPP and AppMag out of the description.
    levels: number of levels, level k downsampled step**k (`pyramid`).
    tile: tile side in pixels.
    compression: 'jpeg' or None (uncompressed, so every level reads back exactly).
    description_extra: '|key = value' fields appended to the description.
    quality: JPEG quality.
    step: downsampling factor between levels.
    BigTIFF when the pixels exceed 3.5 GB."""
    import tifffile

    path = Path(path)
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be HxWx3 uint8, got {image.shape} {image.dtype}")
    if compression not in ("jpeg", None):
        raise ValueError(f"compression must be 'jpeg' or None, got {compression!r}")
    height, width = image.shape[:2]
    levels_ = pyramid(image, levels, step)
    thumb = levels_[-1]
    while max(thumb.shape[:2]) > 1024:
        thumb = downsample(thumb, 2)
    plain = {"photometric": "rgb", "metadata": None}
    tiled = {**plain, "tile": (tile, tile)}
    if compression == "jpeg":
        tiled.update(compression="jpeg", compressionargs={"level": quality})
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with tifffile.TiffWriter(tmp, bigtiff=image.nbytes * 4 / 3 > 3.5e9) as tif:
            tif.write(levels_[0], description=aperio_description(width, height, tile, mpp, compression,
                                                                 description_extra), **tiled)
            tif.write(thumb, description=f"Aperio Image Library v12.0.15 \r\n{width}x{height} -> "
                                         f"{thumb.shape[1]}x{thumb.shape[0]}", **plain)
            for level in levels_[1:]:
                tif.write(level, **tiled)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
