"""Writers for prediction outputs. Every file is written atomically (temporary
file in the target folder, then rename), so a crash never leaves a partial file."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np

from segzoo.config import atomic_write_bytes, atomic_write_text

FORMATS = ("mask", "labels", "geojson", "overlay", "csv")
SUFFIXES = {"mask": "_mask.png", "labels": "_labels.tif", "geojson": ".geojson",
            "overlay": "_overlay.png", "csv": "_nuclei.csv"}


def _png_bytes(array: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def write_mask_png(mask: np.ndarray, path: Path) -> None:
    """Binary mask as an 8-bit PNG: 0 background, 255 nucleus."""
    atomic_write_bytes(path, _png_bytes(np.where(mask, 255, 0).astype(np.uint8)))


def write_labels_tiff(labels: np.ndarray, path: Path) -> None:
    """Instance labels as a single-page int32 TIFF (0 background, 1..N nuclei), zlib-compressed."""
    import tifffile

    buffer = io.BytesIO()
    tifffile.imwrite(buffer, labels.astype(np.int32), compression="zlib")
    atomic_write_bytes(path, buffer.getvalue())


def overlay_image(image: np.ndarray, labels: np.ndarray, colour=(255, 255, 0)) -> np.ndarray:
    """The image with every nucleus outline drawn in `colour`."""
    from skimage.segmentation import find_boundaries

    out = image.copy()
    out[find_boundaries(labels, mode="inner")] = colour
    return out


def write_overlay_png(image: np.ndarray, labels: np.ndarray, path: Path) -> None:
    atomic_write_bytes(path, _png_bytes(overlay_image(image, labels)))


def measure_nuclei(labels: np.ndarray, image: np.ndarray, prob: np.ndarray | None = None) -> list[dict]:
    """Per nucleus: label, area (px), centroid (x, y), bounding box (x0, y0, x1, y1;
    x1/y1 exclusive), mean R/G/B intensity and mean probability."""
    from skimage.measure import regionprops

    rows = []
    for region in regionprops(labels, intensity_image=image):
        y0, x0, y1, x1 = region.bbox
        cy, cx = region.centroid
        mean_rgb = np.asarray(region.intensity_mean, dtype=float).reshape(-1)
        row = {"label": int(region.label), "area": int(region.area),
               "centroid_x": round(float(cx), 3), "centroid_y": round(float(cy), 3),
               "bbox_x0": int(x0), "bbox_y0": int(y0), "bbox_x1": int(x1), "bbox_y1": int(y1),
               "mean_r": round(float(mean_rgb[0]), 3), "mean_g": round(float(mean_rgb[1]), 3),
               "mean_b": round(float(mean_rgb[2]), 3)}
        if prob is not None:
            row["mean_prob"] = round(float(prob[region.slice][region.image].mean()), 4)
        rows.append(row)
    return rows


def write_csv(rows: list[dict], path: Path) -> None:
    buffer = io.StringIO()
    fields = list(rows[0]) if rows else ["label", "area", "centroid_x", "centroid_y", "bbox_x0", "bbox_y0",
                                         "bbox_x1", "bbox_y1", "mean_r", "mean_g", "mean_b", "mean_prob"]
    writer = csv.DictWriter(buffer, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def nucleus_polygons(labels: np.ndarray) -> dict[int, list[list[float]]]:
    """Outer outline of each nucleus as a closed ring of [x, y] image pixel coordinates.

    Traced with marching squares at level 0.5 around the pixel centres of the
    nucleus (its largest outline when a label has several parts).
    """
    from skimage.measure import find_contours, regionprops

    polygons = {}
    for region in regionprops(labels):
        y0, x0, _, _ = region.bbox
        padded = np.pad(region.image.astype(np.uint8), 1)
        contours = find_contours(padded, 0.5)
        if not contours:
            continue
        ring = max(contours, key=len)
        coords = [[round(float(c) + x0 - 1, 2), round(float(r) + y0 - 1, 2)] for r, c in ring]
        if coords[0] != coords[-1]:
            coords.append(coords[0])
        if len(coords) >= 4:
            polygons[int(region.label)] = coords
    return polygons


def geojson_collection(labels: np.ndarray, measurements: list[dict] | None = None, *,
                       object_type: str = "detection", classification: str = "Nucleus") -> dict:
    """A GeoJSON FeatureCollection QuPath imports: one Polygon per nucleus in image
    pixel coordinates, properties.objectType 'detection' (or 'annotation') and a
    classification; measurements go to properties.measurements."""
    if object_type not in ("detection", "annotation"):
        raise ValueError(f"object_type must be 'detection' or 'annotation', got {object_type!r}")
    by_label = {m["label"]: m for m in measurements or []}
    features = []
    for label, ring in nucleus_polygons(labels).items():
        props = {"objectType": object_type, "classification": {"name": classification, "color": [255, 200, 0]},
                 "name": f"nucleus {label}"}
        if label in by_label:
            props["measurements"] = {k: v for k, v in by_label[label].items() if k != "label"}
        features.append({"type": "Feature", "id": f"nucleus-{label}",
                         "geometry": {"type": "Polygon", "coordinates": [ring]}, "properties": props})
    return {"type": "FeatureCollection", "features": features}


def write_geojson(collection: dict, path: Path) -> None:
    atomic_write_text(path, json.dumps(collection, separators=(",", ":")))
