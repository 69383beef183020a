"""Per-nucleus measurements (area, centroid, bounding box, mean intensity and probability),
computed once and vectorised over all nuclei, with their outlines (segzoo.io.outlines): the
NucleusTable behind the nuclei CSV and the QuPath GeoJSON. Coordinates as segzoo.io.outlines
describes them (pixel centres at integers; `offset`, `scale` place a crop, e.g. a whole-slide
chunk, in another frame)."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from segzoo.io.outlines import SIMPLIFY_TOLERANCE, nucleus_outlines, output_points

MEASUREMENT_ROUNDING = {"area": 2, "area_um2": 3, "centroid_x": 3, "centroid_y": 3, "mean_r": 3, "mean_g": 3,
                        "mean_b": 3, "mean_prob": 4}
"""Decimals kept in the CSV and GeoJSON (area: only when `scale` != 1; it is an integer otherwise)."""

VERTEX_DECIMALS = 2
"""Polygon vertices are written rounded to 1/100 output pixel."""

CSV_COLUMNS = ("label", "area", "centroid_x", "centroid_y", "bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1",
               "mean_r", "mean_g", "mean_b", "mean_prob")
"""The columns of an image's nuclei CSV (mean_prob only when probabilities are given)."""


def nucleus_measurements(labels: np.ndarray, image: np.ndarray | None = None, prob: np.ndarray | None = None,
                         *, offset: tuple[float, float] = (0, 0), scale: float = 1.0,
                         mpp: float | None = None) -> dict[str, np.ndarray]:
    """Per-nucleus measurements as columns (1-D arrays, one entry per label present, labels ascending).

    label (int64); area: pixel count (int64), in output pixels (count x scale^2, float64)
    when scale != 1; area_um2 when `mpp` (microns per output pixel) is given; centroid_x/y:
    mean pixel centre (output coordinates, segzoo.io.outlines); bbox_x0/y0/x1/y1: output pixel index
    ranges, half-open (floor((c0 + ox) * scale), ceil((c1 + ox) * scale) for crop columns
    c0 <= c < c1); mean_r/g/b: mean of the image's first three channels (in its units, 0-255
    for uint8) when `image` (HxWxC) is given; mean_prob when `prob` (HxW) is given. All
    values are unrounded and equal skimage.measure.regionprops' (area, centroid, bbox,
    intensity_mean), from per-run sums (one pass over the image per quantity), no loop over labels.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.dtype.kind not in "iub":
        raise ValueError(f"labels must be a 2-D integer array, got {labels.shape} {labels.dtype}")
    for name, array, ndim in (("image", image, 3), ("prob", prob, 2)):
        if array is not None and (np.ndim(array) != ndim or np.shape(array)[:2] != labels.shape
                                  or (ndim == 3 and np.shape(array)[2] < 3)):
            raise ValueError(f"{name} of shape {np.shape(array)} does not fit labels of shape {labels.shape}"
                             f" (expected {'HxWxC, C >= 3' if ndim == 3 else 'HxW'})")
    if labels.dtype.kind == "b":
        labels = labels.view(np.uint8)
    height, width = labels.shape
    n = height * width
    flat = labels.ravel()
    # Runs: maximal horizontal stretches of one label within a row. Every sum is taken per
    # run (np.add.reduceat streams through the image once) and then per label over its runs.
    change = np.ones(n, bool)
    np.not_equal(flat[1:], flat[:-1], out=change[1:])
    change[::max(width, 1)] = True
    starts = np.flatnonzero(change)
    fg = np.flatnonzero(flat[starts])  # runs inside nuclei
    ids = flat[starts[fg]].astype(np.intp, copy=False)
    if ids.size and ids.min() < 0:
        raise ValueError("labels must be >= 0 (0 is background)")
    size = int(ids.max()) + 1 if ids.size else 1
    run_start = starts[fg]
    run_length = np.r_[starts[1:], n][fg] - run_start
    run_row, run_col = np.divmod(run_start, max(width, 1))
    count = np.bincount(ids, weights=run_length, minlength=size)
    present = np.flatnonzero(count)
    area = count[present]

    def mean(run_sums: np.ndarray) -> np.ndarray:
        return np.bincount(ids, weights=run_sums, minlength=size)[present] / area

    ox, oy = (float(v) for v in offset)
    scale = float(scale)
    columns: dict[str, np.ndarray] = {"label": present.astype(np.int64)}
    columns["area"] = area.astype(np.int64) if scale == 1.0 else area * scale * scale
    if mpp is not None:
        columns["area_um2"] = area * (scale * float(mpp)) ** 2
    columns["centroid_x"] = output_points(mean(run_length * (run_col + (run_length - 1) / 2)), ox, scale)
    columns["centroid_y"] = output_points(mean(run_length * run_row.astype(np.float64)), oy, scale)
    boxes = (np.zeros(0, np.int64),) * 4
    if ids.size:
        order = np.argsort(ids, kind="stable")  # by label, then in raster order
        first = np.flatnonzero(np.r_[True, ids[order][1:] != ids[order][:-1]])
        last = np.r_[first[1:], len(order)] - 1
        boxes = (np.minimum.reduceat(run_col[order], first), run_row[order][first],
                 np.maximum.reduceat((run_col + run_length)[order], first), run_row[order][last] + 1)
    for k, (name, origin) in enumerate((("bbox_x0", ox), ("bbox_y0", oy), ("bbox_x1", ox), ("bbox_y1", oy))):
        edge = boxes[k] + origin
        edge = edge * scale if scale != 1.0 else edge
        columns[name] = (np.floor(edge) if k < 2 else np.ceil(edge)).astype(np.int64)
    if image is not None:
        image = np.asarray(image)
        pixels = image.reshape(n, image.shape[2])[:, :3]
        # uint8 sums of a run (<= width pixels) fit uint32 for any width below 16 million
        dtype = np.uint32 if image.dtype == np.uint8 else (np.float64 if image.dtype.kind == "f" else np.int64)
        sums = np.add.reduceat(pixels, starts, axis=0, dtype=dtype)[fg] if n else np.zeros((0, 3))
        for k, name in enumerate(("mean_r", "mean_g", "mean_b")):
            columns[name] = mean(sums[:, k].astype(np.float64))
    if prob is not None:
        sums = np.add.reduceat(np.asarray(prob).ravel(), starts, dtype=np.float64)[fg] if n else np.zeros(0)
        columns["mean_prob"] = mean(sums)
    return columns


def _rounded_columns(columns: dict[str, np.ndarray]) -> dict[str, list]:
    """Columns as lists of Python numbers, rounded as written (MEASUREMENT_ROUNDING; integer
    columns stay integers)."""
    values = {}
    for name, column in columns.items():
        if column.dtype.kind == "f" and name in MEASUREMENT_ROUNDING:
            column = np.round(column, MEASUREMENT_ROUNDING[name])
        values[name] = column.tolist()
    return values


def measurement_rows(columns: dict[str, np.ndarray]) -> list[dict]:
    """nucleus_measurements() columns as one dict per nucleus, rounded as written."""
    values = _rounded_columns(columns)
    return [dict(zip(values, row)) for row in zip(*values.values())]


@dataclass(frozen=True)
class NucleusTable:
    """One image's (or one chunk's) nuclei: measurements and simplified outlines, computed once.

    columns: nucleus_measurements() columns (label first), one entry per nucleus;
    ring_offsets int64 (n+1,) and vertices float64 (V, 2) (x, y): nucleus i's closed outline
    is vertices[ring_offsets[i]:ring_offsets[i+1]] (see nucleus_outlines). Coordinates and
    units as nucleus_measurements/nucleus_outlines with the table's offset and scale."""

    columns: dict[str, np.ndarray]
    ring_offsets: np.ndarray
    vertices: np.ndarray

    def __len__(self) -> int:
        return len(self.columns["label"])

    def ring(self, i: int) -> np.ndarray:
        """Nucleus i's closed outline, (k, 2) float64 (x, y)."""
        return self.vertices[self.ring_offsets[i]:self.ring_offsets[i + 1]]

    def rows(self) -> list[dict]:
        """One dict per nucleus, rounded as written (measurement_rows), for the CSV and GeoJSON."""
        return measurement_rows(self.columns)

    def polygons(self) -> dict[int, list[list[float]]]:
        """{label: closed ring as [[x, y], ...]}, vertices rounded to VERTEX_DECIMALS."""
        coords = np.round(self.vertices, VERTEX_DECIMALS).tolist()
        offsets = self.ring_offsets.tolist()
        return {label: coords[offsets[i]:offsets[i + 1]] for i, label in enumerate(self.columns["label"].tolist())}

    def csv_bytes(self) -> bytes:
        """The nuclei as UTF-8 CSV with a header (see csv_bytes)."""
        return csv_bytes(self.rows(), header=list(self.columns))

    def to_geojson(self, *, object_type: str = "detection", classification: str = "Nucleus") -> dict:
        """A QuPath GeoJSON FeatureCollection: one geojson_feature per nucleus, in label order,
        vertices rounded to VERTEX_DECIMALS and measurements as measurement_rows."""
        if object_type not in GEOJSON_OBJECT_TYPES:
            raise ValueError(f"object_type must be 'detection' or 'annotation', got {object_type!r}")
        coords = np.round(self.vertices, VERTEX_DECIMALS).tolist()
        offsets = self.ring_offsets.tolist()
        values = _rounded_columns(self.columns)
        labels = values.pop("label")
        names = list(values)
        features = [{"type": "Feature", "id": f"nucleus-{label}",
                     "geometry": {"type": "Polygon", "coordinates": [coords[start:stop]]},
                     "properties": {"objectType": object_type,
                                    "classification": {"name": classification, "color": [255, 200, 0]},
                                    "name": f"nucleus {label}", "measurements": dict(zip(names, row))}}
                    for label, start, stop, row in zip(labels, offsets[:-1], offsets[1:], zip(*values.values()))]
        return {"type": "FeatureCollection", "features": features}


def nucleus_table(labels: np.ndarray, image: np.ndarray | None = None, prob: np.ndarray | None = None, *,
                  offset: tuple[float, float] = (0, 0), scale: float = 1.0, mpp: float | None = None,
                  tolerance: float = SIMPLIFY_TOLERANCE,
                  keep: Callable[[dict[str, np.ndarray]], np.ndarray] | None = None) -> NucleusTable:
    """Measurements (nucleus_measurements) and simplified outlines (nucleus_outlines) of the
    nuclei of `labels`, with the same offset/scale (coordinates: segzoo.io.outlines).

    `keep`, given the measurement columns, returns a bool array choosing the nuclei to keep
    before any outline is traced (a whole-slide chunk keeps those whose centroid lies in
    its core)."""
    columns = nucleus_measurements(labels, image, prob, offset=offset, scale=scale, mpp=mpp)
    if keep is not None:
        chosen = np.asarray(keep(columns), dtype=bool)
        if chosen.shape != columns["label"].shape:
            raise ValueError(f"keep must return one bool per nucleus ({len(columns['label'])}), got {chosen.shape}")
        columns = {name: values[chosen] for name, values in columns.items()}
    ids = columns["label"] if keep is not None else None
    ring_labels, offsets, vertices = nucleus_outlines(labels, tolerance=tolerance, offset=offset, scale=scale,
                                                      ids=ids)
    if not np.array_equal(ring_labels, columns["label"]):  # cannot happen: every present label has a ring
        raise AssertionError("outlines and measurements disagree on the nuclei")
    return NucleusTable(columns, offsets, vertices)


def measure_nuclei(labels: np.ndarray, image: np.ndarray, prob: np.ndarray | None = None) -> list[dict]:
    """Per nucleus (ascending label): label, area (px), centroid (x, y), bounding box (x0, y0,
    x1, y1; x1/y1 exclusive), mean R/G/B intensity and mean probability, rounded as written
    (see nucleus_measurements for the definitions)."""
    return measurement_rows(nucleus_measurements(labels, image, prob))


def csv_bytes(rows: list[dict], header: list[str] | None = None) -> bytes:
    """Rows (measure_nuclei / NucleusTable.rows) as UTF-8 CSV with a header; with no rows the
    header is `header` or CSV_COLUMNS."""
    buffer = io.StringIO()
    fields = list(rows[0]) if rows else list(header or CSV_COLUMNS)
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(fields)
    writer.writerows([row[name] for name in fields] for row in rows)
    return buffer.getvalue().encode("utf-8")


def nucleus_polygons(labels: np.ndarray, tolerance: float = SIMPLIFY_TOLERANCE) -> dict[int, list[list[float]]]:
    """{label: outer outline as a closed ring of [x, y] image pixel coordinates}: the
    marching-squares contour at 0.5 around the nucleus' pixel centres (see
    nucleus_outlines), simplified to within `tolerance` pixels (0: not simplified)."""
    ring_labels, offsets, vertices = nucleus_outlines(labels, tolerance=tolerance)
    return NucleusTable({"label": ring_labels}, offsets, vertices).polygons()


GEOJSON_OBJECT_TYPES = ("detection", "annotation")


def geojson_feature(label: int, ring: list[list[float]], measurements: dict | None = None, *,
                    object_type: str = "detection", classification: str = "Nucleus") -> dict:
    """One nucleus as a QuPath GeoJSON Feature: id 'nucleus-<label>', a Polygon with the closed
    `ring` of [x, y] pixel coordinates, properties objectType, classification (name and
    colour), name and `measurements` (without 'label')."""
    if object_type not in GEOJSON_OBJECT_TYPES:
        raise ValueError(f"object_type must be 'detection' or 'annotation', got {object_type!r}")
    props = {"objectType": object_type, "classification": {"name": classification, "color": [255, 200, 0]},
             "name": f"nucleus {label}"}
    if measurements:
        props["measurements"] = {k: v for k, v in measurements.items() if k != "label"}
    return {"type": "Feature", "id": f"nucleus-{label}", "geometry": {"type": "Polygon", "coordinates": [ring]},
            "properties": props}


def geojson_collection(labels: np.ndarray, measurements: list[dict] | None = None, *,
                       object_type: str = "detection", classification: str = "Nucleus") -> dict:
    """A GeoJSON FeatureCollection QuPath imports: one Polygon per nucleus (nucleus_polygons:
    image pixel coordinates, simplified to within SIMPLIFY_TOLERANCE px), properties.objectType
    'detection' (or 'annotation') and a classification; `measurements` rows (by label) go
    to properties.measurements. NucleusTable.to_geojson does the same from a table."""
    if object_type not in GEOJSON_OBJECT_TYPES:
        raise ValueError(f"object_type must be 'detection' or 'annotation', got {object_type!r}")
    by_label = {m["label"]: m for m in measurements or []}
    features = [geojson_feature(label, ring, by_label.get(label), object_type=object_type,
                                classification=classification)
                for label, ring in nucleus_polygons(labels).items()]
    return {"type": "FeatureCollection", "features": features}


