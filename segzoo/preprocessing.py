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
