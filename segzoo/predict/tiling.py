"""Whole-image probabilities for any runtime: normalisation, stride padding, sliding-window
tiles with cosine blending, optional D4 test-time augmentation, and the checks of the tiling
arguments.

A runtime is any callable mapping a float32 batch (N, H, W, C) to probabilities (N, H, W, K)
(a BatchRunner, see segzoo.runtime); this module imports neither Keras nor onnxruntime.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from segzoo.config import ModelConfig
from segzoo.errors import UsageError
from segzoo.predict.preprocessing import normalize, pad_to_multiple

BatchRunner = Callable[[np.ndarray], np.ndarray]


def _round_up(n: int, stride: int) -> int:
    return -(-n // stride) * stride


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Evenly spaced start offsets covering [0, length) with the fewest tiles of size
    `tile` that overlap by at least `overlap`."""
    if length <= tile:
        return [0]
    step = max(tile - overlap, 1)
    count = -(-(length - overlap) // step)
    count = max(count, 2)
    return [round(i * (length - tile) / (count - 1)) for i in range(count)]


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


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def tiling_settings(config: ModelConfig, *, tile_size: int | None = None, overlap: int | None = None,
                    batch_size: int | None = None) -> tuple[int, int, int]:
    """(tile_size, overlap, batch_size) to use, each from the config's inference section when None.

    Valid: tile_size >= 1 pixel, 0 <= overlap < tile_size pixels, batch_size >= 1 tile; anything
    else (0 included) raises UsageError naming the valid range. The config's own overlap is
    not checked against an explicit tile_size: predict_probabilities caps it at half a tile.
    """
    inf = config.inference
    if tile_size is not None and (not _is_int(tile_size) or tile_size < 1):
        raise UsageError(f"tile_size must be an integer >= 1 pixel (None: the config's "
                         f"{inf.tile_size}), got {tile_size!r}", argument="tile_size")
    tile = inf.tile_size if tile_size is None else int(tile_size)
    if overlap is not None and (not _is_int(overlap) or not 0 <= overlap < tile):
        raise UsageError(f"overlap must be an integer in [0, tile_size={tile}) pixels (None: the config's "
                         f"{inf.overlap}), got {overlap!r}", argument="overlap")
    if batch_size is not None and (not _is_int(batch_size) or batch_size < 1):
        raise UsageError(f"batch_size must be an integer >= 1 tile (None: the config's "
                         f"{inf.batch_size}), got {batch_size!r}", argument="batch_size")
    return (tile, inf.overlap if overlap is None else int(overlap),
            inf.batch_size if batch_size is None else int(batch_size))


def predict_probabilities(run_batch: BatchRunner, image: np.ndarray, config: ModelConfig, *,
                          tile_size: int | None = None, overlap: int | None = None,
                          batch_size: int | None = None, tta: bool = False) -> np.ndarray:
    """Probabilities (H, W, K) float32 for an HxWx3 uint8 image, tiled when larger than a tile.

    tile_size, overlap (pixels) and batch_size (tiles per forward pass) default to the
    config's inference section when None; see tiling_settings() for the valid ranges."""
    prep = config.preprocessing
    stride = prep.pad_to_stride
    tile, overlap, batch_size = tiling_settings(config, tile_size=tile_size, overlap=overlap,
                                                batch_size=batch_size)
    tile = _round_up(tile, stride)
    overlap = min(overlap, tile // 2)
    h, w = image.shape[:2]
    if h <= tile and w <= tile:
        padded, _ = pad_to_multiple(normalize(image, prep), stride, prep.pad_mode)
        return run_with_tta(run_batch, padded[None], tta)[0, :h, :w].astype(np.float32)
    # Large image: tiles are cut from the uint8 image (no padded or float copy of
    # the whole image) and padded individually where they cross the border,
    # which equals padding the whole image the same way. The blend weights form
    # a product grid, so their sum is outer(row_sum, col_sum): no weight image.
    ys, xs = tile_starts(h, tile, overlap), tile_starts(w, tile, overlap)
    window_1d = blend_window(tile, overlap)
    row_sum = np.zeros(max(h, tile), np.float32)
    col_sum = np.zeros(max(w, tile), np.float32)
    for y in ys:
        row_sum[y:y + tile] += window_1d
    for x0 in xs:
        col_sum[x0:x0 + tile] += window_1d
    window = np.outer(window_1d, window_1d)[..., None]
    acc = None
    positions = [(y, x0) for y in ys for x0 in xs]
    for (y, x0), out in _run_tiles(run_batch, image, positions, tile, batch_size, tta, prep):
        if acc is None:
            acc = np.zeros((h, w, out.shape[-1]), dtype=np.float32)
        th, tw = min(tile, h - y), min(tile, w - x0)
        acc[y:y + th, x0:x0 + tw] += (out * window)[:th, :tw]
    for y in range(0, h, 1024):  # normalise in row blocks to avoid a full-size temporary
        block = np.outer(row_sum[y:min(y + 1024, h)], col_sum[:w])[..., None]
        acc[y:y + 1024] /= block
    return acc


def _cut_tile(image: np.ndarray, y: int, x: int, tile: int, mode: str) -> np.ndarray:
    """image[y:y+tile, x:x+tile], padded at the bottom/right where it crosses the border."""
    crop = image[y:y + tile, x:x + tile]
    ph, pw = tile - crop.shape[0], tile - crop.shape[1]
    if ph or pw:
        # Pad from a window that includes enough image to reflect, as whole-image padding would.
        crop = np.pad(crop, ((0, ph), (0, pw), (0, 0)), mode=mode)
    return crop


def _run_tiles(run_batch: BatchRunner, image: np.ndarray, positions, tile: int, batch_size: int,
               tta: bool, prep) -> Iterator[tuple[tuple[int, int], np.ndarray]]:
    for i in range(0, len(positions), batch_size):
        chunk = positions[i:i + batch_size]
        batch = normalize(np.stack([_cut_tile(image, y, x, tile, prep.pad_mode) for y, x in chunk]), prep)
        out = run_with_tta(run_batch, batch, tta)
        yield from zip(chunk, out)

