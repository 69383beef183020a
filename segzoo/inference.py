"""Whole-image prediction for any runtime: normalisation, stride padding,
sliding-window tiles with cosine blending, optional D4 test-time augmentation.

A runtime is any callable mapping a float32 batch (N, H, W, C) to
probabilities (N, H, W, K); this module imports neither Keras nor onnxruntime.
"""

from __future__ import annotations

from typing import Callable, Iterator

import numpy as np

from segzoo.config import ModelConfig
from segzoo.preprocessing import normalize, pad_to_multiple

BatchRunner = Callable[[np.ndarray], np.ndarray]


def _round_up(n: int, stride: int) -> int:
    return -(-n // stride) * stride


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets covering [0, length) with tiles of `tile` overlapping >= `overlap`."""
    if length <= tile:
        return [0]
    step = max(tile - overlap, 1)
    starts = list(range(0, length - tile, step))
    starts.append(length - tile)
    return starts


def blend_window(tile: int, overlap: int) -> np.ndarray:
    """1-D weights: a raised-cosine ramp over `overlap` pixels at each end, 1 inside.

    Weights never reach 0, so pixels covered by a single tile keep their value
    exactly after normalising by the summed weights (no seams, no dark borders).
    """
    w = np.ones(tile, dtype=np.float32)
    if overlap > 0:
        ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(overlap, dtype=np.float32) + 0.5) / overlap)
        w[:overlap] = ramp
        w[-overlap:] = np.minimum(w[-overlap:], ramp[::-1])
    return np.maximum(w, 1e-3)


def _d4(x: np.ndarray, k: int) -> np.ndarray:
    """k in 0..7: rotation by 90*(k % 4) degrees, then a horizontal flip when k >= 4 (axes 1, 2)."""
    y = np.rot90(x, k % 4, axes=(1, 2))
    return y[:, :, ::-1] if k >= 4 else y


def _d4_inverse(y: np.ndarray, k: int) -> np.ndarray:
    if k >= 4:
        y = y[:, :, ::-1]
    return np.rot90(y, -(k % 4), axes=(1, 2))


def run_with_tta(run_batch: BatchRunner, batch: np.ndarray, tta: bool) -> np.ndarray:
    if not tta:
        return run_batch(batch)
    total = None
    for k in range(8):
        out = _d4_inverse(run_batch(np.ascontiguousarray(_d4(batch, k))), k)
        total = out if total is None else total + out
    return total / 8.0


def predict_probabilities(run_batch: BatchRunner, image: np.ndarray, config: ModelConfig, *,
                          tile_size: int | None = None, overlap: int | None = None,
                          batch_size: int | None = None, tta: bool = False) -> np.ndarray:
    """Probabilities (H, W, K) float32 for an HxWx3 uint8 image, tiled when larger than a tile."""
    prep, inf = config.preprocessing, config.inference
    stride = prep.pad_to_stride
    tile = _round_up(tile_size or inf.tile_size, stride)
    overlap = inf.overlap if overlap is None else overlap
    overlap = min(overlap, tile // 2)
    batch_size = batch_size or inf.batch_size
    h, w = image.shape[:2]
    if h <= tile and w <= tile:
        padded, _ = pad_to_multiple(normalize(image, prep), stride, prep.pad_mode)
        return run_with_tta(run_batch, padded[None], tta)[0, :h, :w].astype(np.float32)
    # Pad the uint8 image (not a float copy: 4x smaller for large images) to at
    # least one tile and to multiples of the stride; normalise tile by tile.
    padded, _ = pad_to_multiple(image, stride, prep.pad_mode)
    ph, pw = padded.shape[:2]
    if ph < tile or pw < tile:
        extra = [(0, max(tile - ph, 0)), (0, max(tile - pw, 0)), (0, 0)]
        padded = np.pad(padded, extra, mode="symmetric")
        ph, pw = padded.shape[:2]
    ys, xs = tile_starts(ph, tile, overlap), tile_starts(pw, tile, overlap)
    window = np.outer(blend_window(tile, overlap), blend_window(tile, overlap))[..., None]
    acc = None
    weight = np.zeros((ph, pw, 1), dtype=np.float32)
    positions = [(y, x0) for y in ys for x0 in xs]
    for coords, out in _run_tiles(run_batch, padded, positions, tile, batch_size, tta, prep):
        if acc is None:
            acc = np.zeros((ph, pw, out.shape[-1]), dtype=np.float32)
        y, x0 = coords
        acc[y:y + tile, x0:x0 + tile] += out * window
        weight[y:y + tile, x0:x0 + tile] += window
    acc /= weight
    return acc[:h, :w]


def _run_tiles(run_batch: BatchRunner, padded: np.ndarray, positions, tile: int, batch_size: int,
               tta: bool, prep) -> Iterator[tuple[tuple[int, int], np.ndarray]]:
    for i in range(0, len(positions), batch_size):
        chunk = positions[i:i + batch_size]
        batch = normalize(np.stack([padded[y:y + tile, x:x + tile] for y, x in chunk]), prep)
        out = run_with_tta(run_batch, batch, tta)
        yield from zip(chunk, out)


def keras_runner(model) -> BatchRunner:
    """A BatchRunner around a Keras model (inference mode, float32 numpy out)."""

    def run(batch: np.ndarray) -> np.ndarray:
        return np.asarray(model(batch, training=False), dtype=np.float32)

    return run
