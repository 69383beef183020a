"""Numpy preprocessing shared by every runtime (Keras, ONNX) and by training."""

from __future__ import annotations

import numpy as np

from segzoo.config import Preprocessing


def normalize(image: np.ndarray, prep: Preprocessing) -> np.ndarray:
    """uint8 RGB (..., H, W, C) -> float32 (x * scale - mean) / std."""
    mean = np.asarray(prep.mean, dtype=np.float32)
    std = np.asarray(prep.std, dtype=np.float32)
    out = image.astype(np.float32)  # then in place: the same arithmetic without temporaries
    out *= np.float32(prep.scale)
    out -= mean
    out /= std
    return out


def pad_to_multiple(image: np.ndarray, stride: int, mode: str = "reflect") -> tuple[np.ndarray, tuple[int, int]]:
    """Pad H and W (axes 0, 1) at the bottom/right up to multiples of `stride`.

    Returns the padded array and the original (H, W) to crop back to. numpy
    reflects repeatedly when the padding is larger than the image, so any size works.
    """
    h, w = image.shape[:2]
    ph, pw = (-h) % stride, (-w) % stride
    if ph == 0 and pw == 0:
        return image, (h, w)
    pad = [(0, ph), (0, pw)] + [(0, 0)] * (image.ndim - 2)
    return np.pad(image, pad, mode=mode), (h, w)


def fill_no_data(image: np.ndarray, no_data: np.ndarray) -> np.ndarray:
    """A copy of an HxWxC image whose `no_data` pixels (bool HxW) hold image content mirrored
    across the nearest data pixel, as reflect padding does at an image border.

    No-data pixel p with nearest data pixel q (Euclidean) takes the value at 2q - p, or at q
    when 2q - p lies outside the image or in no-data itself. The network then sees tissue-like
    context next to black padding or white fill, so nuclei near such a border are segmented
    as they would be without it (black context suppresses them). The predictor zeroes the
    probability inside `no_data` afterwards. All data pixels are returned unchanged.
    """
    from scipy import ndimage as ndi

    no_data = np.asarray(no_data, dtype=bool)
    if no_data.shape != image.shape[:2]:
        raise ValueError(f"no_data mask {no_data.shape} does not match the image {image.shape[:2]}")
    out = image.copy()
    if not no_data.any() or no_data.all():
        return out
    nearest = ndi.distance_transform_edt(no_data, return_distances=False, return_indices=True)
    py, px = np.nonzero(no_data)
    qy, qx = nearest[0][py, px], nearest[1][py, px]
    del nearest
    h, w = no_data.shape
    ry, rx = 2 * qy - py, 2 * qx - px
    fallback = (ry < 0) | (ry >= h) | (rx < 0) | (rx >= w)
    ry[fallback], rx[fallback] = qy[fallback], qx[fallback]
    fallback = no_data[ry, rx]
    ry[fallback], rx[fallback] = qy[fallback], qx[fallback]
    out[py, px] = image[ry, rx]
    return out
