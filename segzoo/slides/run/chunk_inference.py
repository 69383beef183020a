"""Running one chunk: its network outputs (as Predictor.predict computes them) and the nuclei its
core owns, measured in level-0 coordinates (see segzoo.slides.results.chunk_result)."""

from __future__ import annotations

import numpy as np

from segzoo.io.measurements import MEASUREMENT_ROUNDING, VERTEX_DECIMALS, nucleus_table
from segzoo.predict.postprocessing import outputs_to_instances
from segzoo.predict.predictor import Predictor, predict_outputs
from segzoo.slides.plan.chunks import CHUNK_TILE_SIZE, Chunk
from segzoo.slides.plan.grid import Grid
from segzoo.slides.results.chunk_result import ChunkResult


def predict_chunk(predictor: Predictor, image: np.ndarray, *, tta: bool = False) -> np.ndarray:
    """Network outputs (HxWxK float32: the nucleus probability, then the model's instance maps) of
    a chunk's image, as Predictor.predict computes them (segzoo.predict.predictor.predict_outputs:
    no-data filled for the network and given probability 0), in CHUNK_TILE_SIZE network tiles."""
    return predict_outputs(predictor.run_batch, image, predictor.config, tile_size=CHUNK_TILE_SIZE, tta=tta)


def chunk_nuclei(image: np.ndarray, outputs: np.ndarray, chunk: Chunk, grid: Grid, config) -> ChunkResult:
    """Nuclei of a chunk's read box owned by its core.

    image: the read box, HxWx3 uint8 at the working resolution.
    outputs: HxWxK float32 network outputs from predict_chunk.
    chunk: the chunk (core and read box).
    grid: the working grid (level-0 pixels per working pixel, mpp).
    config: the model's ModelConfig.

    Instances come from segzoo.predict.postprocessing.outputs_to_instances with `config` (the
    model's ModelConfig: its post-processing, and its learned instance map when it has one;
    both are local, so a nucleus whole inside the read box gets the labels a whole-image pass
    gives it); measurements and outlines from segzoo.io.measurements.nucleus_table
    (one pass, outlines simplified to within segzoo.io.outlines.SIMPLIFY_TOLERANCE level-0 pixels),
    with the read box's origin as offset and f (level-0 pixels per working pixel) as scale,
    so they are in level-0 units: area (pixels; an integer count when f = 1), area_um2 (when
    grid.mpp is known), centroid_x/y (points), bbox_x0/y0/x1/y1 (pixel index ranges,
    half-open), mean_r/g/b (of the working image), mean_prob. A nucleus is kept when its
    centroid lies in the core (half-open), so each belongs to exactly one chunk. Floats are
    rounded as segzoo.io.outputs writes them (MEASUREMENT_ROUNDING, VERTEX_DECIMALS)."""
    prob, _, labels = outputs_to_instances(outputs, config)
    rx0, ry0 = chunk.read[0], chunk.read[1]
    f = grid.level0_per_working

    def output(edge: int, origin: int) -> float:  # the arithmetic nucleus_table applies to a centroid
        value = np.float64(edge - origin) + origin
        return float(value if f == 1.0 else (value + 0.5) * f - 0.5)

    x0, y0, x1, y1 = chunk.core
    lo_x, hi_x, lo_y, hi_y = output(x0, rx0), output(x1, rx0), output(y0, ry0), output(y1, ry0)

    def owned(columns: dict[str, np.ndarray]) -> np.ndarray:
        cx, cy = columns["centroid_x"], columns["centroid_y"]
        return (cx >= lo_x) & (cx < hi_x) & (cy >= lo_y) & (cy < hi_y)

    table = nucleus_table(labels, image, prob, offset=(rx0, ry0), scale=f, mpp=grid.mpp, keep=owned)
    columns = {}
    for name, values in table.columns.items():
        if name == "label":
            continue
        if values.dtype.kind == "f" and name in MEASUREMENT_ROUNDING:
            values = np.round(values, MEASUREMENT_ROUNDING[name])
        columns[name] = values
    return ChunkResult(chunk, columns, table.ring_offsets.astype(np.int64),
                       np.round(table.vertices, VERTEX_DECIMALS))
