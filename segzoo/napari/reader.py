"""Reader: a segzoo (or QuPath) GeoJSON of nuclei, or a segzoo ``<stem>_nuclei.csv``, as a Shapes layer.

GeoJSON: a FeatureCollection (QuPath also writes a bare list of features, or one Feature) whose Polygon
and MultiPolygon features become polygons (each polygon's outer ring, (x, y) in image pixels, as
(row, col) vertices without the closing one); their properties become the layer's features: 'label'
(from segzoo's id 'nucleus-<label>', else the feature's number), 'name', 'objectType', 'classification'
and every measurement (a dict, or QuPath's older list of {name, value}). Other geometries are skipped.

CSV: the nuclei of the GeoJSON beside it (``<stem>.geojson``) with the CSV's columns as features; without
one, each nucleus' bounding box as a rectangle.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np

from segzoo.errors import DataError

CSV_SUFFIX = "_nuclei.csv"
GEOJSON_SUFFIXES = (".geojson",)
SHAPES_STYLE = {"shape_type": "polygon", "edge_color": "yellow", "face_color": "transparent", "edge_width": 1.0}


def get_reader(path):
    """The reader for `path` (napari's reader hook), or None when it is not a GeoJSON or nuclei CSV."""
    if isinstance(path, (list, tuple)):
        if len(path) != 1:
            return None
        path = path[0]
    name = Path(str(path)).name.lower()
    if name.endswith(CSV_SUFFIX):
        return read_nuclei_csv
    if name.endswith(GEOJSON_SUFFIXES):
        return read_geojson
    return None


def _features_of(document) -> list[dict]:
    if isinstance(document, list):
        return [f for f in document if isinstance(f, dict)]
    if isinstance(document, dict) and document.get("type") == "FeatureCollection":
        return [f for f in document.get("features") or [] if isinstance(f, dict)]
    if isinstance(document, dict) and document.get("type") == "Feature":
        return [document]
    raise DataError("not a GeoJSON FeatureCollection, Feature or list of features")


def _outer_rings(geometry) -> list[list]:
    kind = (geometry or {}).get("type")
    coordinates = (geometry or {}).get("coordinates") or []
    if kind == "Polygon":
        return coordinates[:1]
    if kind == "MultiPolygon":
        return [polygon[0] for polygon in coordinates if polygon]
    return []


def _label(feature: dict, number: int) -> int:
    ident = str(feature.get("id", ""))
    tail = ident.rsplit("-", 1)[-1]
    return int(tail) if ident.startswith("nucleus-") and tail.isdigit() else number


def _properties(feature: dict, number: int) -> dict:
    props = feature.get("properties") or {}
    row: dict = {"label": _label(feature, number)}
    for key in ("name", "objectType"):
        if key in props:
            row[key] = props[key]
    classification = props.get("classification")
    if isinstance(classification, dict) and "name" in classification:
        row["classification"] = classification["name"]
    measurements = props.get("measurements") or {}
    if isinstance(measurements, list):  # QuPath before 0.4: [{"name": ..., "value": ...}, ...]
        measurements = {m.get("name"): m.get("value") for m in measurements if isinstance(m, dict)}
    row.update({k: v for k, v in measurements.items() if k is not None and k != "label"})
    return row


def _vertices(ring) -> np.ndarray:
    """A GeoJSON ring [[x, y], ...] as napari polygon vertices (k, 2) (row, col), the closing vertex dropped."""
    points = np.asarray(ring, dtype=float).reshape(-1, 2)
    if len(points) > 1 and np.array_equal(points[0], points[-1]):
        points = points[:-1]
    return np.ascontiguousarray(points[:, ::-1])


def _columns(rows: list[dict]) -> dict[str, list]:
    names: dict[str, None] = {}
    for row in rows:
        names.update(dict.fromkeys(row))
    return {name: [row.get(name, math.nan) for row in rows] for name in names}


def geojson_shapes(path: Path) -> tuple[list[np.ndarray], list[dict]]:
    """(polygons as (row, col) vertices, one properties row per polygon) of a GeoJSON file."""
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
        features = _features_of(document)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, DataError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else err
        raise DataError(f"{path}: cannot read as GeoJSON ({reason})") from None
    polygons, rows = [], []
    for number, feature in enumerate(features, start=1):
        for ring in _outer_rings(feature.get("geometry")):
            vertices = _vertices(ring)
            if len(vertices) >= 3:
                polygons.append(vertices)
                rows.append(_properties(feature, number))
    return polygons, rows


def _layer(polygons, rows, path: Path, shape_type="polygon") -> list[tuple]:
    kwargs = {**SHAPES_STYLE, "shape_type": shape_type, "name": Path(path).stem, "features": _columns(rows),
              "metadata": {"segzoo": {"source": str(path)}}}
    return [(polygons, kwargs, "shapes")]


def read_geojson(path) -> list[tuple]:
    """A GeoJSON file as one Shapes layer of polygons (see the module docstring)."""
    path = Path(path[0] if isinstance(path, (list, tuple)) else path)
    polygons, rows = geojson_shapes(path)
    return _layer(polygons, rows, path)


def _number(text: str):
    try:
        value = float(text)
    except ValueError:
        return text
    return int(value) if value.is_integer() and "." not in text and "e" not in text.lower() else value


def read_nuclei_csv(path) -> list[tuple]:
    """A segzoo nuclei CSV as one Shapes layer: the polygons of its GeoJSON when it lies beside it,
    else the bounding boxes (bbox_x0..bbox_y1, half-open pixel ranges) as rectangles."""
    path = Path(path[0] if isinstance(path, (list, tuple)) else path)
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(handle)]
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"{path}: cannot read the nuclei CSV ({getattr(err, 'strerror', None) or err})") from None
    geojson = path.with_name(path.name[:-len(CSV_SUFFIX)] + ".geojson")
    if geojson.is_file():
        polygons, props = geojson_shapes(geojson)
        by_label = {row.get("label"): row for row in rows}
        merged = [{**prop, **by_label.get(prop["label"], {})} for prop in props]
        return _layer(polygons, merged, path)
    boxes = ("bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1")
    if rows and not all(k in rows[0] for k in boxes):
        raise DataError(f"{path}: no {geojson.name} beside it and no bounding box columns ({', '.join(boxes)})")
    rectangles = [np.array([[row["bbox_y0"] - 0.5, row["bbox_x0"] - 0.5], [row["bbox_y1"] - 0.5, row["bbox_x1"] - 0.5]],
                           dtype=float) for row in rows]
    return _layer(rectangles, rows, path, shape_type="rectangle")
