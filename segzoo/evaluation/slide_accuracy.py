"""Whole-slide accuracy with known ground truth: the MoNuSeg test tiles laid out as one 40x slide
and its 20x copy, predicted through the whole-slide path and scored per tile at the 40x grid.

The slide: the test tiles (1000 x 1000 at 0.25 um/px) on a grid of `columns` cells, each cell a
tile with a GAP-pixel band of white glass (so no nucleus of one tile touches another's), written
as an Aperio-style pyramidal TIFF (JPEG q90, MPP 0.25); the 20x copy is the same mosaic
block-averaged 2x (MPP 0.5). Each tile's ground truth is its XML rasterised with the one rule.

Scoring: a run's GeoJSON outlines are level-0 points of the slide it read; on the 20x copy they
are mapped to the 40x grid ((x + 0.5) * 2 - 0.5) and every outline is filled with the ground
truth's rule on the 40x mosaic; then each tile's crop is scored (AJI, PQ, Dice) as
segzoo evaluate scores a tile. So a 40x model on the 40x slide, a 40x model on the 20x copy and a
20x model on either are compared on the same pixels by the same rule.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

GAP = 100          # white pixels between tiles in the mosaic
SLIDE_MPP = 0.25   # the 40x slide's microns per pixel


def mosaic_layout(n_tiles: int, columns: int, cell: int) -> list[tuple[int, int]]:
    """Top-left (x, y) of each tile in the mosaic, row-major, cells of `cell` pixels with GAP white
    pixels around each."""
    return [(GAP + (i % columns) * (cell + GAP), GAP + (i // columns) * (cell + GAP)) for i in range(n_tiles)]


def build_truth_slides(test_folder: str | os.PathLike, folder: str | os.PathLike, *,
                       columns: int = 4) -> dict:
    """Write (or reuse) `folder`/truth-40x.svs and truth-20x.svs from the tiles of `test_folder`
    (MoNuSeg layout, XML ground truth); returns {'40x': path, '20x': path, 'tiles': [(stem, x, y)],
    'shape': (height, width)} of the 40x mosaic."""
    from segzoo.datasets.monuseg import discover_samples
    from segzoo.io.images import read_image
    from segzoo.slides.readers.pyramid_writer import downsample, write_aperio_tiff

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    samples = [s for s in discover_samples(test_folder) if s.annotation is not None]
    tiles = [read_image(s.image) for s in samples]
    cell = max(max(t.shape[:2]) for t in tiles)
    places = mosaic_layout(len(samples), columns, cell)
    rows = math.ceil(len(samples) / columns)
    shape = (GAP + rows * (cell + GAP), GAP + columns * (cell + GAP))
    info = {"40x": str(folder / "truth-40x.svs"), "20x": str(folder / "truth-20x.svs"),
            "tiles": [(s.stem, x, y) for s, (x, y) in zip(samples, places)], "shape": list(shape)}
    stamp = folder / "truth-slides.json"
    if stamp.is_file() and json.loads(stamp.read_text()) == info and all(Path(info[k]).is_file() for k in ("40x", "20x")):
        return info
    image = np.full((*shape, 3), 255, np.uint8)
    for tile, (x, y) in zip(tiles, places):
        image[y:y + tile.shape[0], x:x + tile.shape[1]] = tile[..., :3]
    write_aperio_tiff(info["40x"], image, mpp=SLIDE_MPP, levels=3, step=4)
    write_aperio_tiff(info["20x"], downsample(image, 2), mpp=2 * SLIDE_MPP, levels=3, step=4)
    stamp.write_text(json.dumps(info))
    return info


def geojson_labels(path: str | os.PathLike, shape: tuple[int, int], to_grid: float = 1.0) -> np.ndarray:
    """int32 labels on a grid of `shape` from a segzoo GeoJSON's polygons (level-0 points of the
    slide that was read, mapped to the grid by (v + 0.5) * to_grid - 0.5), filled with the ground
    truth's rule in file order (a later nucleus owns shared pixels)."""
    from segzoo.datasets.monuseg import rasterize_regions, scale_polygons

    features = json.loads(Path(path).read_text(encoding="utf-8"))["features"]
    rings = [np.asarray(f["geometry"]["coordinates"][0], dtype=np.float64) for f in features]
    return rasterize_regions(scale_polygons(rings, to_grid), shape)[0]


def score_tiles(labels: np.ndarray, test_folder: str | os.PathLike, tiles: list) -> dict:
    """Mean AJI, PQ and Dice (and per tile) of mosaic `labels` against each tile's XML ground truth."""
    from segzoo.datasets.monuseg import discover_samples, load_sample
    from segzoo.evaluation.metrics import aggregated_jaccard_index, panoptic_quality, pixel_counts

    by_stem = {s.stem: s for s in discover_samples(test_folder)}
    per_tile = []
    for stem, x, y in tiles:
        truth = load_sample(by_stem[stem]).labels
        crop = labels[y:y + truth.shape[0], x:x + truth.shape[1]]
        per_tile.append({"tile": stem, "aji": aggregated_jaccard_index(truth, crop),
                         "pq": panoptic_quality(truth, crop)["pq"],
                         "dice": pixel_counts(crop > 0, truth > 0).metrics()["dice"]})
    mean = {k: float(np.mean([t[k] for t in per_tile])) for k in ("aji", "pq", "dice")}
    return {**mean, "per_tile": per_tile}


def slide_accuracy(model, slide: str | os.PathLike, info: dict, test_folder: str | os.PathLike,
                   out: str | os.PathLike, *, tissue: bool = True) -> dict:
    """Predict `slide` through segzoo.predict_slides and score it per tile at the 40x grid.

    model: a Predictor or what segzoo.load takes.
    slide: one of build_truth_slides' files; info: its return value.
    test_folder: the tiles' folder (their XML ground truth).
    out: the output folder (outputs replaced).
    tissue: use the tissue mask (False: every chunk; for mosaics too small for the mask)."""
    from segzoo.slides.options import SlideOptions
    from segzoo.slides.run.orchestrator import predict_slides

    options = SlideOptions(progress=False, summary=False, overwrite=True, tissue=tissue)
    [summary] = predict_slides(model, [slide], out, options=options)
    if summary.error:
        raise RuntimeError(f"{slide}: {summary.error}")
    to_grid = summary.mpp / SLIDE_MPP  # 40x pixels per level-0 pixel of the slide read
    labels = geojson_labels(summary.outputs["geojson"], tuple(info["shape"]), to_grid)
    return {"slide": Path(slide).name, "nuclei": summary.nuclei, "seconds": summary.seconds,
            **score_tiles(labels, test_folder, info["tiles"])}


def accuracy_markdown(rows: list[dict]) -> str:
    """The table: model, slide, mean AJI / PQ / Dice over the test tiles, nuclei."""
    lines = ["Whole-slide accuracy: the 14 MoNuSeg test tiles as one 40x slide (Aperio TIFF, JPEG q90, MPP 0.25) "
             "and its 2x block-averaged 20x copy (MPP 0.5), predicted through the slide path (int8) and scored "
             "per tile on the 40x pixels under the one ground-truth rule.", "",
             "| model | slide | AJI | PQ | Dice | nuclei |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['slide']} | {r['aji']:.4f} | {r['pq']:.4f} | {r['dice']:.4f} "
                     f"| {r['nuclei']} |")
    return "\n".join(lines) + "\n"
