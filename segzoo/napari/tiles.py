"""Per-tile progress and a Cancel that stops at the next tile, without changing the library.

segzoo's tiling (segzoo.predict.tiling.predict_probabilities) runs every batch of tiles through the
Predictor's runner. predict_cancellable builds a new Predictor (the loaded one is left as it is) around
a TileRunner, which wraps that runner: before each batch it stops the run when Cancel was pressed
(a private exception, caught here: the run returns None), after it it reports the tiles done.
tile_count lays the tiles out as predict_probabilities does, so the bar knows its total in advance.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np

from segzoo.config import ModelConfig
from segzoo.predict.predictor import Prediction, Predictor
from segzoo.predict.tiling import BatchRunner, tile_starts, tiling_settings

TTA_PASSES = 8  # segzoo.predict.tiling.run_with_tta: the 8 flips and rotations, one runner call each


class _Cancelled(Exception):
    """Cancel was pressed: raised by TileRunner before the next batch, caught by predict_cancellable."""


def tile_count(config: ModelConfig, shape: tuple[int, ...], tile_size: int | None = None) -> int:
    """How many tiles predict_probabilities cuts an image of `shape` (H, W, ...) into: one when it fits
    a tile (the tile size rounded up to the model's stride), else the rows times the columns of
    tile_starts (the overlap capped at half a tile)."""
    tile, overlap, _ = tiling_settings(config, tile_size=tile_size)
    stride = config.preprocessing.pad_to_stride
    tile = -(-tile // stride) * stride
    overlap = min(overlap, tile // 2)
    height, width = shape[:2]
    if height <= tile and width <= tile:
        return 1
    return len(tile_starts(height, tile, overlap)) * len(tile_starts(width, tile, overlap))


class TileRunner:
    """A BatchRunner around `run_batch`: raises _Cancelled before a batch once `cancelled` is set, and
    after each batch calls on_tiles(done), `done` counting tile passes (a batch of n tiles is n passes;
    with TTA every tile takes TTA_PASSES)."""

    def __init__(self, run_batch: BatchRunner, cancelled: threading.Event, on_tiles: Callable[[int], None]):
        self.run_batch = run_batch
        self.cancelled = cancelled
        self.on_tiles = on_tiles
        self.done = 0

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        if self.cancelled.is_set():
            raise _Cancelled
        out = self.run_batch(batch)
        self.done += int(batch.shape[0])
        self.on_tiles(self.done)
        return out


def predict_cancellable(predictor: Predictor, image: np.ndarray, *, cancelled: threading.Event,
                        on_tiles: Callable[[int], None] = lambda done: None, tta: bool = False,
                        tile_size: int | None = None) -> Prediction | None:
    """predictor.predict(image, tta=..., tile_size=...) through a TileRunner: the same Prediction, or None
    when `cancelled` was set before a batch or by the end of the run."""
    runner = TileRunner(getattr(predictor.run_batch, "wrapped", predictor.run_batch), cancelled, on_tiles)
    watched = Predictor(runner, predictor.config, runtime=predictor.runtime, source=predictor.source)
    try:
        prediction = watched.predict(image, tta=tta, tile_size=tile_size)
    except _Cancelled:
        return None
    return None if cancelled.is_set() else prediction
