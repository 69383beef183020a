"""Writers for prediction outputs; every file is written atomically."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from segzoo.config import atomic_write_bytes


def _png_bytes(array: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def write_mask_png(mask: np.ndarray, path: Path) -> None:
    """Binary mask as an 8-bit PNG: 0 background, 255 nucleus."""
    atomic_write_bytes(path, _png_bytes(np.where(mask, 255, 0).astype(np.uint8)))


def overlay_image(image: np.ndarray, labels: np.ndarray, colour=(255, 255, 0)) -> np.ndarray:
    """The image with every nucleus outline drawn in `colour`."""
    from skimage.segmentation import find_boundaries

    out = image.copy()
    out[find_boundaries(labels, mode="inner")] = colour
    return out


def write_overlay_png(image: np.ndarray, labels: np.ndarray, path: Path) -> None:
    atomic_write_bytes(path, _png_bytes(overlay_image(image, labels)))
