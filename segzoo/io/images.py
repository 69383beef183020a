"""Reading images into uint8 RGB arrays, with explicit, logged conversions; finding the image
files of a folder; the sample image that ships with segzoo.

Accepted: TIFF (incl. BigTIFF), PNG, JPEG files; PIL images; numpy arrays of
shape HxW, HxWx1, HxWx3 or HxWx4 in uint8, uint16 or float (values in [0, 1]).
Grayscale is replicated to RGB, alpha is dropped, uint16 is scaled by 1/257,
float is scaled by 255; each conversion is logged at INFO level. Anything else
raises DataError naming the source and the problem.

Images are returned as viewers display them: an EXIF Orientation (JPEG, PNG, PIL
images) or TIFF Orientation tag is applied, so row 0 is the displayed top row and
every output (mask, labels, GeoJSON coordinates) lines up with what a viewer shows.
A TIFF is read from its first page (the full-resolution level of a pyramidal or
multi-page file); planar (PlanarConfiguration=SEPARATE) RGB is returned HxWxC.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from segzoo.errors import DataError

log = logging.getLogger(__name__)

ImageLike = str | os.PathLike | np.ndarray | Any  # Any: PIL.Image.Image
IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")


def read_array(path: str | os.PathLike) -> np.ndarray:
    """Raw pixel array of an image file; DataError if it is missing or unreadable."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    suffix = path.suffix.lower()
    try:
        if suffix in (".tif", ".tiff"):
            array = _read_tiff(path)
        elif suffix in (".png", ".jpg", ".jpeg"):
            from PIL import Image

            with Image.open(path) as img:
                img.load()
                array = _pil_to_array(_exif_transposed(img, str(path)))
        else:
            raise DataError(f"{path}: unsupported image type {suffix!r}; supported: {', '.join(IMAGE_SUFFIXES)}")
    except DataError:
        raise
    except Exception as err:  # noqa: BLE001 - decoders raise many types for corrupt files
        raise DataError(f"{path}: cannot read image ({type(err).__name__}: {err})") from None
    return array


def _read_tiff(path: Path) -> np.ndarray:
    """First page of a TIFF as HxW or HxWxS, as displayed (Orientation tag applied).

    Page 0 is the full-resolution image of a pyramidal (SubIFD or multi-page) TIFF;
    other pages (pyramid levels, thumbnails, label images) are ignored. Planar RGB
    (samples stored as separate planes, axes 'SYX') gets its sample axis moved last.
    """
    import tifffile

    with tifffile.TiffFile(path) as tif:
        if len(tif.pages) > 1:
            log.info("%s: TIFF has %d pages; reading the first (full-resolution) page", path, len(tif.pages))
        page = tif.pages[0]
        array = page.asarray()
        axes = page.axes
        tag = page.tags.get(274)  # Orientation
        orientation = int(tag.value) if tag is not None else 1
    if array.ndim != len(axes):  # defensive: tifffile squeezes length-1 axes out of both
        raise DataError(f"{path}: TIFF page of shape {array.shape} does not match its axes {axes!r}")
    other = [a for a in axes if a not in "YXS"]
    if other:
        raise DataError(
            f"{path}: TIFF page with axes {axes!r} (shape {array.shape}); expected a 2-D image "
            "(axes YX, YXS or planar SYX)")
    if "S" in axes and axes.index("S") != len(axes) - 1:
        log.info("%s: planar TIFF (samples stored as separate planes) read as HxWxC", path)
        array = np.moveaxis(array, axes.index("S"), -1)
    return apply_orientation(array, orientation, source=str(path))


# EXIF/TIFF Orientation code -> how the stored rows and columns map to the displayed image.
ORIENTATIONS = {1: "top-left (as stored)", 2: "mirrored left-right", 3: "rotated 180", 4: "mirrored top-bottom",
                5: "transposed", 6: "rotated 90 clockwise", 7: "transversed", 8: "rotated 90 counter-clockwise"}


def apply_orientation(array: np.ndarray, orientation: int, *, source: str = "image") -> np.ndarray:
    """The displayed image of a stored array (axes 0, 1 = rows, columns) for an EXIF/TIFF
    Orientation code 1-8, as PIL.ImageOps.exif_transpose does; an unknown code is ignored."""
    if orientation not in ORIENTATIONS or orientation == 1:
        return array
    log.info("%s: Orientation %d (%s) applied", source, orientation, ORIENTATIONS[orientation])
    if orientation == 2:
        out = array[:, ::-1]
    elif orientation == 3:
        out = array[::-1, ::-1]
    elif orientation == 4:
        out = array[::-1]
    elif orientation == 5:
        out = array.swapaxes(0, 1)
    elif orientation == 6:
        out = np.rot90(array, -1)
    elif orientation == 7:
        out = array.swapaxes(0, 1)[::-1, ::-1]
    else:  # 8
        out = np.rot90(array, 1)
    return np.ascontiguousarray(out)


def _exif_transposed(img, source: str):
    """A PIL image as displayed: its EXIF Orientation applied (the same image when there is none)."""
    from PIL import ImageOps

    try:
        orientation = int(img.getexif().get(0x0112, 1))
    except (OSError, ValueError, TypeError, SyntaxError):  # unreadable EXIF: use the pixels as stored
        return img
    if orientation not in ORIENTATIONS or orientation == 1:
        return img
    log.info("%s: EXIF Orientation %d (%s) applied", source, orientation, ORIENTATIONS[orientation])
    return ImageOps.exif_transpose(img)


def _pil_to_array(img) -> np.ndarray:
    if img.mode in ("P", "PA"):
        img = img.convert("RGBA" if "transparency" in img.info or img.mode == "PA" else "RGB")
    if img.mode in ("I;16", "I;16B", "I;16L"):
        return np.array(img, dtype=np.uint16)
    if img.mode == "I":
        return np.array(img, dtype=np.int32)
    if img.mode == "1":
        return np.array(img, dtype=np.uint8) * 255
    if img.mode == "CMYK":
        img = img.convert("RGB")
    return np.array(img)


def to_rgb_uint8(array: np.ndarray, *, source: str = "image") -> np.ndarray:
    """Convert an array to HxWx3 uint8, logging each conversion; DataError otherwise."""
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] > 4:
        raise DataError(f"{source}: channels-first array of shape {array.shape}; pass HxWxC")
    if array.ndim == 2:
        log.info("%s: grayscale image replicated to RGB", source)
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4):
        raise DataError(
            f"{source}: unsupported image shape {array.shape}; expected HxW, HxWx1, HxWx3 or HxWx4")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise DataError(f"{source}: empty image of shape {array.shape}")
    if array.shape[-1] == 4:
        log.info("%s: RGBA image, alpha channel dropped", source)
        array = array[..., :3]
    elif array.shape[-1] == 1:
        log.info("%s: single-channel image replicated to RGB", source)
        array = np.repeat(array, 3, axis=-1)
    if array.dtype == np.uint8:
        return np.ascontiguousarray(array)
    if array.dtype == np.uint16:
        log.info("%s: 16-bit image scaled to 8 bits (value / 257)", source)
        return np.round(array.astype(np.float32) / 257.0).astype(np.uint8)
    if array.dtype == bool:
        raise DataError(f"{source}: boolean array is a mask, not an image")
    if np.issubdtype(array.dtype, np.floating):
        finite = np.isfinite(array)
        if not finite.all():
            raise DataError(f"{source}: float image contains NaN or infinite values")
        lo, hi = float(array.min()), float(array.max())
        if lo < 0.0 or hi > 1.0:
            raise DataError(
                f"{source}: float image values must lie in [0, 1], found [{lo:.3g}, {hi:.3g}]; "
                "pass uint8 for 0-255 data")
        log.info("%s: float image in [0, 1] scaled to 8 bits", source)
        return np.round(array * 255.0).astype(np.uint8)
    raise DataError(f"{source}: unsupported dtype {array.dtype}; expected uint8, uint16 or float in [0, 1]")


def read_image(image: ImageLike, *, source: str | None = None) -> np.ndarray:
    """Any accepted image (path, PIL image, array) as HxWx3 uint8."""
    if isinstance(image, (str, os.PathLike)):
        return to_rgb_uint8(read_array(image), source=source or str(image))
    if isinstance(image, np.ndarray):
        return to_rgb_uint8(image, source=source or "array")
    from PIL import Image

    if isinstance(image, Image.Image):
        source = source or "PIL image"
        return to_rgb_uint8(_pil_to_array(_exif_transposed(image, source)), source=source)
    raise DataError(
        f"{source or 'input'}: unsupported input type {type(image).__name__}; "
        "expected a file path, a PIL image or a numpy array")


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """A binary mask file (0 background, non-zero nucleus) as a bool HxW array."""
    array = read_array(path)
    if array.ndim == 3:
        if array.shape[-1] == 1 or (array.shape[-1] in (3, 4) and np.array_equal(array[..., 0], array[..., 1])):
            array = array[..., 0]
        else:
            raise DataError(f"{path}: mask must be single-channel, got shape {array.shape}")
    if array.ndim != 2:
        raise DataError(f"{path}: mask must be 2-D, got shape {array.shape}")
    return array > 0


def sample_image_path() -> Path:
    """A 512x512 H&E crop that ships with segzoo (MoNuSeg 2018 training tile, CC BY-NC-SA 4.0)."""
    return Path(__file__).resolve().parents[1] / "samples" / "monuseg_sample.png"


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files (IMAGE_SUFFIXES) directly inside `folder`, sorted, hidden files left out;
    DataError when `folder` is not a folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder")
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))


IMAGE_SUBFOLDERS = ("images", "Tissue Images")
"""Where a dataset folder keeps its images: segzoo's layout (images/ beside masks/ and
annotations/) and the official MoNuSeg release ('Tissue Images/' beside 'Annotations/')."""


def find_images(folder: str | os.PathLike) -> list[Path]:
    """The images of a folder of images, or of a dataset folder: list_images(folder), or, when
    it holds none itself, list_images of its first IMAGE_SUBFOLDERS subfolder that holds some.
    DataError naming the folder and the places looked in when there are none."""
    folder = Path(folder)
    found = list_images(folder)
    for name in IMAGE_SUBFOLDERS:
        if found:
            break
        if (folder / name).is_dir():
            found = list_images(folder / name)
    if not found:
        raise DataError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) in it or in "
                        f"{' or '.join(repr(n + '/') for n in IMAGE_SUBFOLDERS)}")
    return found
