"""A Prediction as napari layers: the nucleus instances (Labels), optionally the probability (Image)
and the outlines (Shapes of polygons), each a napari LayerDataTuple (data, keyword arguments, type).

The per-nucleus table (segzoo.io.measurements.NucleusTable: area, centroid, bounding box, mean
intensity and probability) is computed in the image layer's pixel frame (a field-of-view crop's
offset added), so its centroids and outlines sit on the image layer; the Labels layer carries it in
its metadata (``metadata["segzoo"]``) with the model's name and config, and as features (hovering a
nucleus shows its row). Outline vertices are (x, y) in segzoo and (row, col) in napari.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from segzoo.io.measurements import NucleusTable
from segzoo.predict.predictor import Prediction

METADATA_KEY = "segzoo"
OUTLINE_COLOUR = "yellow"


@dataclass(frozen=True)
class RunInfo:
    """What produced a prediction: the model as asked (zoo name, folder, hf:// or .onnx), its runtime and
    precision, the settings, the image layer's name and the crop's top-left pixel (row, col) in it."""

    model: str
    runtime: str
    precision: str
    tta: bool
    tile_size: int | None
    config: dict
    image_layer: str
    offset: tuple[int, int] = (0, 0)

    def as_metadata(self) -> dict:
        return {"model": self.model, "runtime": self.runtime, "precision": self.precision, "tta": self.tta,
                "tile_size": self.tile_size, "config": self.config, "image_layer": self.image_layer,
                "offset_xy": [int(self.offset[1]), int(self.offset[0])]}


def table_columns(table: NucleusTable) -> dict[str, np.ndarray]:
    """The table's columns for a napari features table: 'index' (the label value napari looks rows up
    by) first, then every measurement column."""
    return {"index": np.asarray(table.columns["label"]), **{k: np.asarray(v) for k, v in table.columns.items()}}


def outline_polygons(table: NucleusTable) -> list[np.ndarray]:
    """Each nucleus' outline as napari polygon vertices (k, 2) (row, col), the closing vertex dropped."""
    polygons = []
    for i in range(len(table)):
        ring = table.ring(i)
        if len(ring) > 1 and np.array_equal(ring[0], ring[-1]):
            ring = ring[:-1]
        polygons.append(np.ascontiguousarray(ring[:, ::-1]))
    return polygons


def result_layers(prediction: Prediction, table: NucleusTable, info: RunInfo, *, crop_placement: dict,
                  image_placement: dict, probability: bool = False, outlines: bool = False) -> list[tuple]:
    """LayerDataTuples: the Labels layer of instances (placed by `crop_placement`, see
    segzoo.napari.view.placement), the probability Image when `probability`, the outline Shapes (in the
    image layer's frame: `image_placement`) when `outlines`."""
    name = f"{info.image_layer} nuclei"
    metadata = {METADATA_KEY: {**info.as_metadata(), "nuclei": table.rows(),
                               # kept for the writer, so a saved CSV has the mean intensities the CLI writes
                               "image": prediction.image, "prob": prediction.prob}}
    layers = [(prediction.labels, {"name": name, "metadata": metadata, "features": table_columns(table),
                                   "opacity": 0.6, **crop_placement}, "labels")]
    if probability:
        layers.append((prediction.prob, {"name": f"{info.image_layer} probability", "colormap": "magma",
                                         "contrast_limits": (0.0, 1.0), "blending": "additive", "opacity": 0.6,
                                         "metadata": {METADATA_KEY: info.as_metadata()}, **crop_placement},
                       "image"))
    if outlines:
        polygons = outline_polygons(table)
        layers.append((polygons, {"name": f"{info.image_layer} outlines", "shape_type": "polygon",
                                  "edge_color": OUTLINE_COLOUR, "face_color": "transparent", "edge_width": 1.0,
                                  "features": {k: v for k, v in table_columns(table).items() if k != "index"},
                                  "metadata": {METADATA_KEY: info.as_metadata()}, **image_placement}, "shapes"))
    return layers
